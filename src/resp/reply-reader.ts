/**
 * Incremental decoder of RESP2 replies into light values (pure: no I/O), for the snapshot key
 * reader, which needs the values of a few reply shapes (status, integer, bulk, arrays of them) at
 * a high rate. Bulk values are views into the received bytes (no copy).
 *
 * Why not redis-parser: it copies every bulk and runs through callbacks per reply; why not
 * ReplyFramer + decodeReply: that scans every reply twice. A reply that is still incomplete is
 * parsed again from its start when more bytes come, except while a bulk's announced length is
 * missing (`needed`), so a large value arriving in many chunks is not rescanned per chunk.
 */
import { SyncProxyError } from '../errors';

/** An error reply from the node ('-' line), kept as a value so the caller decides what it means. */
export class NodeErrorReply {
  constructor(readonly message: string) {}
}

/**
 * An array reply whose elements are all bulk strings, kept as its bytes: `data[start, end)` holds
 * `count` encoded bulks (`$<len>\r\n<bytes>\r\n` each), exactly how they are written in a
 * command, so a record can copy them in one piece. `items()` takes them apart when needed.
 */
export class BulkArray {
  constructor(readonly data: Buffer, readonly start: number, readonly end: number, readonly count: number) {}

  /** The bytes of the encoded bulks. */
  get raw(): Buffer {
    return this.data.subarray(this.start, this.end);
  }

  items(): Buffer[] {
    const out: Buffer[] = new Array(this.count);
    const buf = this.data;
    let pos = this.start;
    for (let i = 0; i < this.count; i++) {
      let len = 0;
      let j = pos + 1;
      for (; buf[j] !== CR; j++) len = len * 10 + buf[j] - 48;
      out[i] = buf.subarray(j + 2, j + 2 + len);
      pos = j + 2 + len + 2;
    }
    return out;
  }
}

export type Reply = Buffer | number | string | null | NodeErrorReply | BulkArray | Reply[];

/** The elements of an array of bulks (either form), or undefined for any other reply. */
export function bulkItems(reply: Reply): Buffer[] | undefined {
  if (reply instanceof BulkArray) return reply.items();
  if (Array.isArray(reply) && reply.every((r) => Buffer.isBuffer(r))) return reply as Buffer[];
  return undefined;
}

const CR = 13;
/** Not a reply value (an integer reply may be any number). */
const INCOMPLETE: unique symbol = Symbol('incomplete');

export class ReplyReader {
  private buffer: Buffer = Buffer.alloc(0);
  private offset = 0;
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private needed = 0;
  /** Bytes of all replies returned so far. */
  consumed = 0;
  /** Position after the value parsed by `parse` (valid when it did not return INCOMPLETE). */
  private pos = 0;

  feed(chunk: Buffer): void {
    this.pending.push(chunk);
    this.pendingLength += chunk.length;
  }

  /** Bytes received and not yet returned as replies. */
  get bufferedBytes(): number {
    return this.buffer.length - this.offset + this.pendingLength;
  }

  /** The next complete reply, or undefined. Throws MALFORMED_RESPONSE on bytes that are not RESP2. */
  next(): Reply | undefined {
    if (this.buffer.length - this.offset + this.pendingLength < this.needed) return undefined;
    if (this.pendingLength > 0) {
      const rest = this.offset < this.buffer.length ? [this.buffer.subarray(this.offset), ...this.pending] : this.pending;
      this.buffer = rest.length === 1 ? rest[0] : Buffer.concat(rest);
      this.offset = 0;
      this.pending = [];
      this.pendingLength = 0;
    }
    if (this.offset >= this.buffer.length) return undefined;
    this.needed = 0;
    const start = this.offset;
    const value = this.parse(start, start);
    if (value === INCOMPLETE) return undefined;
    this.consumed += this.pos - this.offset;
    this.offset = this.pos;
    return value as Reply;
  }

  /**
   * `count` elements from `at` when every one is a non-null bulk: a BulkArray (no Buffer per
   * element), INCOMPLETE, or undefined when some element is of another type (parsed generally).
   */
  private bulkArray(at: number, count: number, start: number): BulkArray | typeof INCOMPLETE | undefined {
    if (count === 0) return undefined;
    const buf = this.buffer;
    let pos = at;
    for (let i = 0; i < count; i++) {
      if (pos >= buf.length) return INCOMPLETE;
      if (buf[pos] !== 36 || buf[pos + 1] === 45) return undefined;
      const cr = buf.indexOf(CR, pos + 1);
      if (cr === -1 || cr + 1 >= buf.length) return INCOMPLETE;
      const end = cr + 2 + parseInteger(buf, pos + 1, cr);
      if (end + 2 > buf.length) {
        this.needed = end + 2 - start;
        return INCOMPLETE;
      }
      // Copied into snapshot files as they are: only well-formed bulks.
      if (buf[end] !== CR || buf[end + 1] !== 10) throw new SyncProxyError('MALFORMED_RESPONSE', 'a bulk in a reply from the node does not end with CRLF');
      pos = end + 2;
    }
    this.pos = pos;
    return new BulkArray(buf, at, pos, count);
  }

  /** Parses the value at `at`; `start` is where the whole reply began (for `needed`). */
  private parse(at: number, start: number): Reply | typeof INCOMPLETE {
    const buf = this.buffer;
    if (at >= buf.length) return INCOMPLETE;
    const type = buf[at];
    const cr = buf.indexOf(CR, at + 1);
    if (cr === -1 || cr + 1 >= buf.length) return INCOMPLETE;
    switch (type) {
      case 36: {
        // '$' bulk
        const len = parseInteger(buf, at + 1, cr);
        if (len < 0) {
          this.pos = cr + 2;
          return null;
        }
        const end = cr + 2 + len;
        if (end + 2 > buf.length) {
          this.needed = end + 2 - start;
          return INCOMPLETE;
        }
        this.pos = end + 2;
        return buf.subarray(cr + 2, end);
      }
      case 42: {
        // '*' array
        const count = parseInteger(buf, at + 1, cr);
        this.pos = cr + 2;
        if (count < 0) return null;
        const packed = this.bulkArray(cr + 2, count, start);
        if (packed !== undefined) return packed;
        this.pos = cr + 2;
        const items: Reply[] = new Array(count);
        for (let i = 0; i < count; i++) {
          const item = this.parse(this.pos, start);
          if (item === INCOMPLETE) return INCOMPLETE;
          items[i] = item;
        }
        return items;
      }
      case 58: // ':' integer
        this.pos = cr + 2;
        return parseInteger(buf, at + 1, cr);
      case 43: // '+' status
        this.pos = cr + 2;
        return buf.toString('latin1', at + 1, cr);
      case 45: // '-' error
        this.pos = cr + 2;
        return new NodeErrorReply(buf.toString('utf8', at + 1, cr));
      default:
        throw new SyncProxyError('MALFORMED_RESPONSE', `unexpected byte 0x${type.toString(16)} in a reply from the node`);
    }
  }
}

function parseInteger(buf: Buffer, from: number, to: number): number {
  let n = 0;
  let i = from;
  const negative = buf[i] === 45;
  if (negative) i++;
  if (i >= to || to - i > 20) throw new SyncProxyError('MALFORMED_RESPONSE', 'bad length or integer in a reply from the node');
  for (; i < to; i++) {
    const c = buf[i] - 48;
    if (c < 0 || c > 9) throw new SyncProxyError('MALFORMED_RESPONSE', 'bad length or integer in a reply from the node');
    n = n * 10 + c;
  }
  return negative ? -n : n;
}

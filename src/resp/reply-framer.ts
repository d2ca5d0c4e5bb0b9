/**
 * Finds where each reply ends in a stream of RESP replies from a node, without decoding it
 * (pure: no I/O). The data path forwards the reply bytes to the client as they came; only the
 * few replies the proxy must understand are decoded (./decode.ts).
 *
 * Why hand-written: redis-parser decodes into JS values and does not report byte spans; decoding
 * and re-encoding every reply would cost throughput and could alter bytes.
 */
import { SyncProxyError } from '../errors';
import { findCR } from './request-parser';

export interface FramedReply {
  raw: Buffer;
  /** First byte: '+', '-', ':', '$', '*' (RESP2) or a RESP3 type byte. */
  type: number;
}

/** What a reply's first byte says about where it ends (a table: read for every reply). */
const enum Kind {
  Unknown = 0,
  /** '+', '-', ':', RESP3 '_' ',' '#' '(': one line. */
  Line = 1,
  /** '$', RESP3 '!' '=': a header with a byte length. */
  Blob = 2,
  /** RESP2 '*', RESP3 '%' '~' '>' '|': a header counting nested replies. */
  Aggregate = 3,
}
const KINDS = new Uint8Array(256);
for (const t of [43, 45, 58, 95, 44, 35, 40]) KINDS[t] = Kind.Line;
for (const t of [36, 33, 61]) KINDS[t] = Kind.Blob;
for (const t of [42, 37, 126, 62, 124]) KINDS[t] = Kind.Aggregate;

export class ReplyFramer {
  private buffer: Buffer = Buffer.alloc(0);
  private offset = 0;
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private needed = 0;

  feed(chunk: Buffer): void {
    // The common case: everything before was framed, the chunk becomes the buffer (no arrays).
    if (this.offset >= this.buffer.length && this.pendingLength === 0) {
      this.buffer = chunk;
      this.offset = 0;
      return;
    }
    this.pending.push(chunk);
    this.pendingLength += chunk.length;
    if (this.buffer.length - this.offset + this.pendingLength < this.needed) return;
    const rest = this.offset < this.buffer.length ? [this.buffer.subarray(this.offset)] : [];
    this.buffer = rest.length === 0 && this.pending.length === 1 ? this.pending[0] : Buffer.concat([...rest, ...this.pending]);
    this.offset = 0;
    this.pending = [];
    this.pendingLength = 0;
  }

  reset(): void {
    this.buffer = Buffer.alloc(0);
    this.offset = 0;
    this.pending = [];
    this.pendingLength = 0;
    this.needed = 0;
  }

  /** The next complete reply or null. Throws MALFORMED_RESPONSE on bytes that are not RESP. */
  next(): FramedReply | null {
    if (!this.advance()) return null;
    return { raw: this.buffer.subarray(this.lastStart, this.lastEnd), type: this.buffer[this.lastStart] };
  }

  /** Start and end of the reply found by the last `advance()` in `current`. */
  lastStart = 0;
  lastEnd = 0;

  /** The buffer `lastStart`/`lastEnd` refer to; valid until the next `advance`, `next` or `feed`. */
  get current(): Buffer {
    return this.buffer;
  }

  /**
   * Like `next` without making an object: true when a complete reply was found (see `lastStart`,
   * `lastEnd`, `current`). For consumers that look at most replies' first bytes only.
   */
  advance(): boolean {
    if (this.pendingLength > 0 || this.buffer.length - this.offset < this.needed) {
      if (this.buffer.length - this.offset + this.pendingLength < this.needed) return false;
      this.feed(Buffer.alloc(0));
    }
    this.needed = 0;
    const start = this.offset;
    const end = this.scan(start);
    if (end < 0) return false;
    this.offset = end;
    this.lastStart = start;
    this.lastEnd = end;
    return true;
  }

  /** End offset of the reply starting at `start`, or -1 when incomplete. */
  private scan(start: number): number {
    const buf = this.buffer;
    let pos = start;
    let remaining = 1; // replies still to skip at the current nesting, flattened into one counter
    while (remaining > 0) {
      if (pos >= buf.length) return -1;
      const type = buf[pos];
      const cr = findCR(buf, pos + 1);
      if (cr === -1 || cr + 1 >= buf.length) return -1;
      remaining--;
      const kind = KINDS[type];
      if (kind === Kind.Line) {
        pos = cr + 2;
      } else if (kind === Kind.Blob) {
        const len = headerNumber(buf, pos + 1, cr);
        if (Number.isNaN(len)) throw malformed(buf, pos);
        if (len < 0) {
          pos = cr + 2;
        } else {
          const end = cr + 2 + len + 2;
          if (end > buf.length) {
            this.needed = end - start;
            return -1;
          }
          pos = end;
        }
      } else if (kind === Kind.Aggregate) {
        const count = headerNumber(buf, pos + 1, cr);
        if (Number.isNaN(count)) throw malformed(buf, pos);
        pos = cr + 2;
        // maps and attributes hold key/value pairs
        if (count > 0) remaining += type === 37 || type === 124 ? count * 2 : count;
      } else {
        throw malformed(buf, pos);
      }
    }
    return pos;
  }
}

/**
 * `parseInt(buf.toString('latin1', from, to), 10)`: plain digits (optionally negative) are read
 * in place; anything else goes through parseInt as before.
 */
function headerNumber(buf: Buffer, from: number, to: number): number {
  let i = from;
  const negative = i < to && buf[i] === 45;
  if (negative) i++;
  if (i === to || to - i > 15) return parseInt(buf.toString('latin1', from, to), 10);
  let n = 0;
  for (; i < to; i++) {
    const c = buf[i] - 48;
    if (c < 0 || c > 9) return parseInt(buf.toString('latin1', from, to), 10);
    n = n * 10 + c;
  }
  return negative ? -n : n;
}

function malformed(buf: Buffer, pos: number): SyncProxyError {
  return new SyncProxyError('MALFORMED_RESPONSE', `unexpected byte 0x${buf[pos].toString(16)} in a reply from the node`);
}

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
  /** Unframed bytes from `offset`: a chunk as it came, or a view of `store` while a reply spans chunks. */
  private buffer: Buffer = Buffer.alloc(0);
  private offset = 0;
  /**
   * Where bytes of a reply that spans chunks accumulate, with room to spare: appending is a copy
   * of the new chunk only (capacity doubles), so a reply of n bytes in k chunks costs O(n), not
   * the O(n·k) of concatenating everything again for every chunk (a 1.4 MB LRANGE reply comes in
   * ~20 chunks).
   */
  private store: Buffer | undefined;
  /**
   * How far the scan of the reply at `offset` got before its bytes ran out: the element to start
   * again from (relative to `offset`) and the replies still to skip then. Scanning resumes there
   * instead of from the reply's first byte (a 100,000-element reply was rescanned per chunk).
   */
  private resumeAt = 0;
  private resumeRemaining = 1;

  feed(chunk: Buffer): void {
    // The common case: everything before was framed, the chunk becomes the buffer (no copy).
    if (this.offset >= this.buffer.length) {
      this.buffer = chunk;
      this.offset = 0;
      this.store = undefined;
      return;
    }
    const tail = this.buffer.length - this.offset;
    const length = tail + chunk.length;
    const inStore = this.store !== undefined && this.buffer.buffer === this.store.buffer && this.buffer.byteOffset === this.store.byteOffset;
    if (!inStore || this.store!.length < this.offset + length) {
      // A new store, the unframed tail moved to its start (views handed out keep the old bytes).
      // Exactly the bytes the first time (most replies that span chunks span two); room to
      // double once a reply keeps coming.
      const store = Buffer.allocUnsafe(inStore ? 2 * length : length);
      this.buffer.copy(store, 0, this.offset);
      this.store = store;
      this.offset = 0;
    }
    const used = this.offset + tail;
    chunk.copy(this.store!, used);
    this.buffer = this.store!.subarray(0, used + chunk.length);
  }

  reset(): void {
    this.buffer = Buffer.alloc(0);
    this.offset = 0;
    this.store = undefined;
    this.resumeAt = 0;
    this.resumeRemaining = 1;
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
    const start = this.offset;
    const end = this.scan(start);
    if (end < 0) return false;
    this.offset = end;
    this.lastStart = start;
    this.lastEnd = end;
    return true;
  }

  /** End offset of the reply starting at `start`, or -1 when incomplete (the scan state is kept). */
  private scan(start: number): number {
    const buf = this.buffer;
    let pos = start + this.resumeAt;
    let remaining = this.resumeRemaining; // replies still to skip at the current nesting, flattened into one counter
    while (remaining > 0) {
      if (pos >= buf.length) return this.suspend(start, pos, remaining);
      const type = buf[pos];
      const cr = findCR(buf, pos + 1);
      if (cr === -1 || cr + 1 >= buf.length) return this.suspend(start, pos, remaining);
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
          if (end > buf.length) return this.suspend(start, pos, remaining);
          pos = end;
        }
      } else if (kind === Kind.Aggregate) {
        const count = headerNumber(buf, pos + 1, cr);
        if (Number.isNaN(count)) throw malformed(buf, pos);
        pos = cr + 2;
        // Maps hold key/value pairs; an attribute (key/value pairs too) is followed by the value
        // it describes, which belongs to the same reply.
        if (type === 124) remaining += Math.max(count, 0) * 2 + 1;
        else if (count > 0) remaining += type === 37 ? count * 2 : count;
      } else {
        throw malformed(buf, pos);
      }
      remaining--;
    }
    this.resumeAt = 0;
    this.resumeRemaining = 1;
    return pos;
  }

  /** Keeps where the scan of the reply at `start` stopped (the element at `pos`, not yet counted). */
  private suspend(start: number, pos: number, remaining: number): number {
    this.resumeAt = pos - start;
    this.resumeRemaining = remaining;
    return -1;
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

/** The raw bytes of each element of an array reply already framed whole (an EXEC reply). */
export function arrayElements(raw: Buffer): Buffer[] {
  const headerEnd = raw.indexOf('\r\n') + 2;
  const count = Number(raw.toString('latin1', 1, headerEnd - 2));
  const framer = new ReplyFramer();
  framer.feed(raw.subarray(headerEnd));
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const element = framer.next();
    if (!element) break;
    out.push(Buffer.from(element.raw));
  }
  return out;
}

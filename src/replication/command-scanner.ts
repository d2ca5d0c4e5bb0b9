/**
 * Finds the commands in a snapshot file's byte stream without taking them apart (pure: no I/O):
 * for each command its byte range, argument count and the range of its name, in fields of the
 * scanner, so the loader forwards the bytes as they are with no allocation per command.
 *
 * Why not RequestParser: it makes an object, an argument array and a Buffer view per argument for
 * every command, which dominated the load's CPU time. Snapshot files hold only multibulk commands
 * (written by SnapshotWriter); anything else is refused. Limits as Redis's for client requests.
 */
import { SyncProxyError } from '../errors';
import { REDIS_LIMITS } from '../resp/request-parser';

const CR = 13;
const STAR = 42;
const DOLLAR = 36;
/** Longest header line (`*<count>` or `$<length>`) accepted. */
const MAX_HEADER = 24;

export class CommandScanner {
  private buffer: Buffer = Buffer.alloc(0);
  private offset = 0;
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private needed = 0;

  /** Of the command found by the last `next()` that returned true: */
  start = 0;
  end = 0;
  argc = 0;
  nameStart = 0;
  nameEnd = 0;

  /** The buffer `start`, `end`, `nameStart` and `nameEnd` refer to (changes only in `next`). */
  get data(): Buffer {
    return this.buffer;
  }

  get bufferedBytes(): number {
    return this.buffer.length - this.offset + this.pendingLength;
  }

  feed(chunk: Buffer): void {
    this.pending.push(chunk);
    this.pendingLength += chunk.length;
  }

  /** Finds the next complete command; false when more bytes are needed. Throws LOAD_FAILED. */
  next(): boolean {
    if (this.buffer.length - this.offset + this.pendingLength < this.needed) return false;
    if (this.pendingLength > 0) {
      const parts = this.offset < this.buffer.length ? [this.buffer.subarray(this.offset), ...this.pending] : this.pending;
      this.buffer = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      this.offset = 0;
      this.pending = [];
      this.pendingLength = 0;
    }
    this.needed = 0;
    const buf = this.buffer;
    const start = this.offset;
    if (start >= buf.length) return false;
    if (buf[start] !== STAR) throw malformed(`expected '*', got byte 0x${buf[start].toString(16)}`);
    let pos = start + 1;
    const count = this.header(buf, pos);
    if (count < 0) return this.incomplete(start);
    if (count < 1 || count > REDIS_LIMITS.maxMultibulkLength) throw malformed('invalid multibulk length');
    pos = this.headerEnd;
    for (let i = 0; i < count; i++) {
      if (pos >= buf.length) return this.incomplete(start);
      if (buf[pos] !== DOLLAR) throw malformed(`expected '$', got byte 0x${buf[pos].toString(16)}`);
      const len = this.header(buf, pos + 1);
      if (len < 0) return this.incomplete(start);
      if (len > REDIS_LIMITS.maxBulkLength) throw malformed('invalid bulk length');
      const dataStart = this.headerEnd;
      const dataEnd = dataStart + len;
      if (dataEnd + 2 > buf.length) {
        this.needed = dataEnd + 2 - start;
        return this.incomplete(start);
      }
      if (buf[dataEnd] !== CR || buf[dataEnd + 1] !== 10) throw malformed('bulk not followed by CRLF');
      if (i === 0) {
        this.nameStart = dataStart;
        this.nameEnd = dataEnd;
      }
      pos = dataEnd + 2;
    }
    this.start = start;
    this.end = pos;
    this.argc = count;
    this.offset = pos;
    return true;
  }

  private headerEnd = 0;

  /** The non-negative integer of a header line starting at `from`; -1 when the line is incomplete. */
  private header(buf: Buffer, from: number): number {
    let n = 0;
    let i = from;
    const limit = Math.min(buf.length, from + MAX_HEADER);
    for (; i < limit; i++) {
      const c = buf[i];
      if (c === CR) break;
      if (c < 48 || c > 57) throw malformed('invalid length in a header line');
      n = n * 10 + (c - 48);
    }
    if (i >= buf.length - 1) return -1;
    if (i === limit) throw malformed('header line too long');
    if (i === from || buf[i + 1] !== 10) throw malformed('invalid header line');
    this.headerEnd = i + 2;
    return n;
  }

  private incomplete(start: number): false {
    this.offset = start;
    return false;
  }
}

function malformed(why: string): SyncProxyError {
  return new SyncProxyError('LOAD_FAILED', `malformed snapshot file: ${why}`);
}

/**
 * Incremental parser for client requests (pure: no I/O). It yields each command's arguments and
 * its exact bytes, so the data path forwards what the client sent without re-encoding.
 *
 * Why not redis-parser here: redis-parser decodes *replies*; requests need limits checked from
 * the headers before any payload is buffered (bulk <= 512 MB, bounded multibulk counts, as
 * Redis's processMultibulkBuffer does), inline commands (`PING\r\n` from telnet), and the raw byte
 * span of each command. redis-parser is used for replies (./decode.ts).
 *
 * Errors use Redis 7's texts (networking.c) so a client sees what the node would have said; the
 * session answers them and closes the connection, as Redis does.
 */
import { SyncProxyError } from '../errors';
import { Request } from './request';

export interface RequestLimits {
  maxBulkLength: number;
  maxMultibulkLength: number;
  maxInlineLength: number;
}

export const REDIS_LIMITS: Readonly<RequestLimits> = Object.freeze({
  maxBulkLength: 512 * 1024 * 1024,
  maxMultibulkLength: 1024 * 1024,
  maxInlineLength: 64 * 1024,
});

const CR = 13;
const LF = 10;
const STAR = 42;
const DOLLAR = 36;

function protocolError(message: string): SyncProxyError {
  return new SyncProxyError('PROTOCOL_ERROR', `Protocol error: ${message}`);
}

export class RequestParser {
  private buffer: Buffer = Buffer.alloc(0);
  private offset = 0;
  /** Chunks received while waiting for `needed` bytes, concatenated once (no quadratic copies). */
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private needed = 0;

  constructor(private readonly limits: RequestLimits = REDIS_LIMITS) {}

  /** Bytes received but not yet returned as a request. */
  get bufferedBytes(): number {
    return this.buffer.length - this.offset + this.pendingLength;
  }

  feed(chunk: Buffer): void {
    // The common case: everything before was parsed, the chunk becomes the buffer (no arrays).
    if (this.offset >= this.buffer.length && this.pendingLength === 0) {
      this.buffer = chunk;
      this.offset = 0;
      return;
    }
    this.pending.push(chunk);
    this.pendingLength += chunk.length;
    if (this.buffer.length - this.offset + this.pendingLength < this.needed) return;
    this.absorbPending();
  }

  private absorbPending(): void {
    if (this.pending.length === 0) return;
    const rest = this.offset < this.buffer.length ? [this.buffer.subarray(this.offset)] : [];
    this.buffer = rest.length === 0 && this.pending.length === 1 ? this.pending[0] : Buffer.concat([...rest, ...this.pending]);
    this.offset = 0;
    this.pending = [];
    this.pendingLength = 0;
  }

  /** The next complete request, or null when more bytes are needed. Throws PROTOCOL_ERROR. */
  next(): Request | null {
    if (this.buffer.length - this.offset + this.pendingLength < this.needed) return null;
    this.absorbPending();
    this.needed = 0;
    // Redis skips empty lines between commands.
    while (this.offset < this.buffer.length && (this.buffer[this.offset] === CR || this.buffer[this.offset] === 10)) this.offset++;
    if (this.offset >= this.buffer.length) return null;
    return this.buffer[this.offset] === STAR ? this.parseMultibulk() : this.parseInline();
  }

  private parseInline(): Request | null {
    const end = this.buffer.indexOf('\n', this.offset);
    if (end === -1) {
      if (this.buffer.length - this.offset > this.limits.maxInlineLength) throw protocolError('too big inline request');
      return null;
    }
    const line = this.buffer.toString('latin1', this.offset, end).replace(/\r$/, '');
    this.offset = end + 1;
    const args = splitInline(line).map((a) => Buffer.from(a, 'latin1'));
    if (args.length === 0) return this.next();
    return requestOf(args);
  }

  /** Checks the request's headers and finds its end; no view of the bytes is made (see Request). */
  private parseMultibulk(): Request | null {
    const buf = this.buffer;
    const start = this.offset;
    let pos = start;
    const headerEnd = lineEnd(buf, pos + 1);
    if (headerEnd < 0) return this.incomplete(start, pos);
    const count = parseLength(buf, pos + 1, headerEnd, 'invalid multibulk length');
    if (count > this.limits.maxMultibulkLength) throw protocolError('invalid multibulk length');
    pos = headerEnd + 2;
    let nameStart = 0;
    let nameEnd = 0;
    // Redis skips the byte after each CR and the two after each bulk without looking at them; such
    // a request is re-encoded below, so the node never has to agree with Redis on that leniency.
    let loose = buf[headerEnd + 1] !== LF;
    for (let i = 0; i < count; i++) {
      if (pos >= buf.length) return this.incomplete(start, pos);
      if (buf[pos] !== DOLLAR) throw protocolError(`expected '$', got '${String.fromCharCode(buf[pos])}'`);
      const end = lineEnd(buf, pos + 1);
      if (end < 0) return this.incomplete(start, pos);
      const len = parseLength(buf, pos + 1, end, 'invalid bulk length');
      if (len < 0 || len > this.limits.maxBulkLength) throw protocolError('invalid bulk length');
      const dataEnd = end + 2 + len;
      if (dataEnd + 2 > buf.length) {
        this.needed = dataEnd + 2 - start;
        return this.incomplete(start, dataEnd);
      }
      if (i === 0) {
        nameStart = end + 2;
        nameEnd = dataEnd;
      }
      if (buf[end + 1] !== LF || buf[dataEnd] !== CR || buf[dataEnd + 1] !== LF) loose = true;
      pos = dataEnd + 2;
    }
    this.offset = pos;
    if (count <= 0) return this.next();
    const req = new Request(buf, start, pos, count, nameStart, nameEnd);
    return loose ? requestOf(req.args.map((a) => Buffer.from(a))) : req;
  }

  /** Rewinds to the request's start; `lineStart` is where the unfinished header line begins. */
  private incomplete(start: number, lineStart: number): null {
    this.offset = start;
    // A header line that never ends is refused instead of buffered without bound.
    if (this.needed === 0 && this.buffer.length - lineStart > this.limits.maxInlineLength) {
      throw protocolError(lineStart === start ? 'too big mbulk count string' : 'too big bulk count string');
    }
    return null;
  }
}

/** Index of the CR ending the line that starts at `from` (the next line starts 2 later, as in Redis); -1 when incomplete. */
function lineEnd(buf: Buffer, from: number): number {
  const cr = findCR(buf, from);
  if (cr === -1 || cr + 1 >= buf.length) return -1;
  return cr;
}

/** `buf.indexOf(CR, from)`: a plain loop over the first bytes (header lines are short), then the native search. */
export function findCR(buf: Buffer, from: number): number {
  const stop = Math.min(buf.length, from + 32);
  for (let i = from; i < stop; i++) if (buf[i] === CR) return i;
  return stop < buf.length ? buf.indexOf(CR, stop) : -1;
}

/** Redis's string2ll: `0`, or an optional `-` then digits without a leading zero (`01`, `-0`, `+1` are refused). */
function parseLength(buf: Buffer, from: number, to: number, what: string): number {
  if (to - from === 1 && buf[from] === 48) return 0;
  const negative = buf[from] === 45;
  const digits = negative ? from + 1 : from;
  // 12 digits are past every limit already; longer ones need no exact value.
  if (digits === to || to - digits > 12 || buf[digits] === 48) throw protocolError(what);
  let n = 0;
  for (let i = digits; i < to; i++) {
    const c = buf[i];
    if (c < 48 || c > 57) throw protocolError(what);
    n = n * 10 + (c - 48);
  }
  return negative ? -n : n;
}

/** C isspace(), as sdssplitargs uses (JS's \s would also split at 0xA0). */
function isSpace(c: string): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\v' || c === '\f';
}

/** Splits an inline command line like Redis's sdssplitargs (quotes and escapes). */
export function splitInline(line: string): string[] {
  const args: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && isSpace(line[i])) i++;
    if (i >= line.length) break;
    let current = '';
    if (line[i] === '"' || line[i] === "'") {
      const quote = line[i++];
      let closed = false;
      while (i < line.length) {
        const c = line[i];
        if (quote === '"' && c === '\\' && i + 1 < line.length) {
          const n = line[i + 1];
          const hex = /^x([0-9a-fA-F]{2})/.exec(line.slice(i + 1));
          if (hex) {
            current += String.fromCharCode(parseInt(hex[1], 16));
            i += 4;
            continue;
          }
          current += ({ n: '\n', r: '\r', t: '\t', b: '\b', a: '\x07' } as Record<string, string>)[n] ?? n;
          i += 2;
          continue;
        }
        if (quote === "'" && c === '\\' && line[i + 1] === "'") {
          current += "'";
          i += 2;
          continue;
        }
        if (c === quote) {
          closed = true;
          i++;
          break;
        }
        current += c;
        i++;
      }
      if (!closed || (i < line.length && !isSpace(line[i]))) throw protocolError('unbalanced quotes in request');
    } else {
      while (i < line.length && !isSpace(line[i])) current += line[i++];
    }
    args.push(current);
  }
  return args;
}

/** A Request for arguments made by the proxy (or an inline command): encoded as a multibulk. */
export function requestOf(args: Buffer[]): Request {
  const raw = encodeArgs(args);
  const nameStart = raw.indexOf(10, raw.indexOf(10) + 1) + 1;
  return new Request(raw, 0, raw.length, args.length, nameStart, nameStart + args[0].length, args);
}

/** RESP multibulk encoding of a command. */
export function encodeArgs(args: readonly (Buffer | string)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a) : a;
    parts.push(Buffer.from(`$${b.length}\r\n`), b, CRLF);
  }
  return Buffer.concat(parts);
}

const CRLF = Buffer.from('\r\n');

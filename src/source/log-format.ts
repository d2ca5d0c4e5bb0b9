/**
 * On-disk framing of write-log entries (pure, no I/O).
 *
 *   u32 payloadLength | u32 crc32c(payload) | payload
 *   payload = u32 offsetHigh | u32 offsetLow | u32 db | u32 commandCount
 *             then per command: u32 argCount, then per argument: u32 length | bytes
 *
 * Why a CRC per entry: a torn write (crash mid-append) or a flipped bit must surface as
 * LOG_CORRUPT, never as a different command replayed on a replica.
 */
import { crc32c } from '@node-rs/crc32';
import { SyncProxyError } from '../errors';
import type { LogEntry } from './types';

export const ENTRY_HEADER_BYTES = 8;
/** Refuse absurd lengths instead of allocating them: a corrupt header must not exhaust memory. */
export const MAX_ENTRY_PAYLOAD = 1024 * 1024 * 1024;

/** Bytes of an entry's encoding, header included. */
export function encodedEntryLength(commands: readonly (readonly Buffer[])[]): number {
  let size = ENTRY_HEADER_BYTES + 16;
  for (let c = 0; c < commands.length; c++) {
    const cmd = commands[c];
    size += 4 + 4 * cmd.length;
    for (let a = 0; a < cmd.length; a++) size += cmd[a].length;
  }
  return size;
}

export function encodeEntry(offset: number, db: number, commands: readonly (readonly Buffer[])[]): Buffer {
  const buf = Buffer.allocUnsafe(encodedEntryLength(commands));
  encodeEntryInto(buf, 0, offset, db, commands);
  return buf;
}

/**
 * Encodes an entry into `buf` at `pos` (the caller made room: `encodedEntryLength`); returns the
 * end position. Lets a batch of entries be encoded into one buffer without a Buffer per entry.
 */
export function encodeEntryInto(buf: Buffer, pos: number, offset: number, db: number, commands: readonly (readonly Buffer[])[]): number {
  const start = pos;
  pos += ENTRY_HEADER_BYTES;
  writeU32(buf, pos, Math.floor(offset / 0x1_0000_0000));
  writeU32(buf, pos + 4, offset % 0x1_0000_0000);
  writeU32(buf, pos + 8, db);
  writeU32(buf, pos + 12, commands.length);
  pos += 16;
  for (let c = 0; c < commands.length; c++) {
    const cmd = commands[c];
    writeU32(buf, pos, cmd.length);
    pos += 4;
    for (let a = 0; a < cmd.length; a++) {
      const arg = cmd[a];
      const len = arg.length;
      writeU32(buf, pos, len);
      pos += 4;
      if (len <= 32) {
        for (let i = 0; i < len; i++) buf[pos + i] = arg[i];
      } else {
        buf.set(arg, pos);
      }
      pos += len;
    }
  }
  writeU32(buf, start, pos - start - ENTRY_HEADER_BYTES);
  writeU32(buf, start + 4, crc32cRange(buf, start + ENTRY_HEADER_BYTES, pos));
  return pos;
}

/** An upper bound of the entry bytes `encodeRequestInto` writes for a request of `requestBytes`. */
export function requestEntryBound(requestBytes: number): number {
  // Per argument, `$<len>\r\n...\r\n` is at least 6 bytes where the log uses 4; `*<n>\r\n` at
  // least 4 where the log uses 4 (the argument count): the payload never exceeds 16 + the request.
  return ENTRY_HEADER_BYTES + 16 + requestBytes;
}

/**
 * Encodes one command given as its RESP multibulk request `src[start, end)` (`*<n>\r\n` then
 * `$<len>\r\n<bytes>\r\n` per argument, as the request parser validated it) into `buf` at `pos`;
 * the bytes are those `encodeEntryInto` writes for the parsed arguments. Why: a plain write is
 * logged from the bytes the client sent, without a Buffer view per argument. The caller made
 * room: `requestEntryBound`. Returns the end position.
 */
export function encodeRequestInto(buf: Buffer, pos: number, offset: number, db: number, src: Buffer, start: number, end: number): number {
  const entryStart = pos;
  pos += ENTRY_HEADER_BYTES;
  writeU32(buf, pos, Math.floor(offset / 0x1_0000_0000));
  writeU32(buf, pos + 4, offset % 0x1_0000_0000);
  writeU32(buf, pos + 8, db);
  writeU32(buf, pos + 12, 1);
  pos += 16;
  if (src[start] !== 42) throw new RangeError('write log: a request must be a RESP multibulk');
  let r = start + 1;
  let argc = 0;
  for (let c = src[r]; c !== 13; c = src[++r]) argc = argc * 10 + digit(c);
  r += 2;
  writeU32(buf, pos, argc);
  pos += 4;
  for (let a = 0; a < argc; a++) {
    if (src[r] !== 36) throw new RangeError('write log: a request argument must be a RESP bulk string');
    let len = 0;
    for (let c = src[++r]; c !== 13; c = src[++r]) len = len * 10 + digit(c);
    r += 2;
    if (r + len + 2 > end) throw new RangeError('write log: a request argument overruns the request');
    writeU32(buf, pos, len);
    pos += 4;
    if (len <= 32) {
      for (let i = 0; i < len; i++) buf[pos + i] = src[r + i];
    } else {
      src.copy(buf, pos, r, r + len);
    }
    pos += len;
    r += len + 2;
  }
  writeU32(buf, entryStart, pos - entryStart - ENTRY_HEADER_BYTES);
  writeU32(buf, entryStart + 4, crc32cRange(buf, entryStart + ENTRY_HEADER_BYTES, pos));
  return pos;
}

/** A header digit's value (a byte past the end is undefined: refused like any non-digit). */
function digit(c: number | undefined): number {
  if (c === undefined || c < 48 || c > 57) throw new RangeError('write log: malformed length in a request');
  return c - 48;
}

/** Big-endian u32; `value` must be a non-negative integer below 2^32. */
function writeU32(buf: Buffer, pos: number, value: number): void {
  if (!(value >= 0 && value <= 0xffff_ffff)) throw new RangeError(`write log: value ${value} does not fit a u32`);
  buf[pos] = value >>> 24;
  buf[pos + 1] = value >>> 16;
  buf[pos + 2] = value >>> 8;
  buf[pos + 3] = value;
}

/** Below this many bytes the table-driven CRC in JS beats the native call (and its subarray). */
const JS_CRC_MAX_BYTES = 192;

/** Slice-by-8 tables for CRC32C (Castagnoli, reflected polynomial 0x82f63b78). */
const CRC_TABLE = ((): Int32Array => {
  const t = new Int32Array(256 * 8);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff] ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
})();

/** CRC32C of `buf[start, end)`: the same value as `crc32c(buf.subarray(start, end))`. */
export function crc32cRange(buf: Buffer, start: number, end: number): number {
  if (end - start > JS_CRC_MAX_BYTES) return crc32c(buf.subarray(start, end));
  const t = CRC_TABLE;
  let crc = -1;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const a = (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24)) ^ crc;
    crc =
      t[1792 + (a & 0xff)] ^
      t[1536 + ((a >>> 8) & 0xff)] ^
      t[1280 + ((a >>> 16) & 0xff)] ^
      t[1024 + (a >>> 24)] ^
      t[768 + buf[i + 4]] ^
      t[512 + buf[i + 5]] ^
      t[256 + buf[i + 6]] ^
      t[buf[i + 7]];
  }
  for (; i < end; i++) crc = t[(crc ^ buf[i]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}

/** The CRC32C an entry carries on disk and on the wire (over its payload encoding). */
export function entryChecksum(entry: LogEntry): number {
  return encodeEntry(entry.offset, entry.db, entry.commands).readUInt32BE(4);
}

function corrupt(where: string, message: string): SyncProxyError {
  return new SyncProxyError('LOG_CORRUPT', `${where}: ${message}`);
}

/**
 * The payload length of the entry whose header starts at `pos`, validated; undefined when fewer
 * than 8 bytes are available.
 */
export function entryPayloadLength(buf: Buffer, pos: number, where: string): number | undefined {
  if (buf.length - pos < ENTRY_HEADER_BYTES) return undefined;
  const len = buf.readUInt32BE(pos);
  if (len < 16 || len > MAX_ENTRY_PAYLOAD) throw corrupt(where, `implausible entry length ${len}`);
  return len;
}

/** Decodes the complete entry at `pos` (header included); checks the CRC and the structure. */
export function decodeEntry(buf: Buffer, pos: number, where: string): LogEntry {
  const len = buf.readUInt32BE(pos);
  const payload = buf.subarray(pos + ENTRY_HEADER_BYTES, pos + ENTRY_HEADER_BYTES + len);
  if (payload.length !== len) throw corrupt(where, 'truncated entry');
  if (crc32cRange(buf, pos + ENTRY_HEADER_BYTES, pos + ENTRY_HEADER_BYTES + len) !== buf.readUInt32BE(pos + 4)) throw corrupt(where, 'entry checksum mismatch');
  const offset = payload.readUInt32BE(0) * 0x1_0000_0000 + payload.readUInt32BE(4);
  const db = payload.readUInt32BE(8);
  const count = payload.readUInt32BE(12);
  let p = 16;
  const need = (n: number): void => {
    if (p + n > payload.length) throw corrupt(where, 'entry structure overruns its length');
  };
  const commands: Buffer[][] = [];
  for (let c = 0; c < count; c++) {
    need(4);
    const argc = payload.readUInt32BE(p);
    p += 4;
    const args: Buffer[] = [];
    for (let a = 0; a < argc; a++) {
      need(4);
      const argLen = payload.readUInt32BE(p);
      p += 4;
      need(argLen);
      // Copy: the caller's read buffer is reused for the next chunk.
      args.push(Buffer.from(payload.subarray(p, p + argLen)));
      p += argLen;
    }
    commands.push(args);
  }
  if (p !== payload.length) throw corrupt(where, 'trailing bytes in entry');
  return { offset, db, commands };
}

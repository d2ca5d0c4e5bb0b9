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

export function encodeEntry(offset: number, db: number, commands: readonly (readonly Buffer[])[]): Buffer {
  let size = 16;
  for (const cmd of commands) {
    size += 4;
    for (const arg of cmd) size += 4 + arg.length;
  }
  const buf = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + size);
  let pos = ENTRY_HEADER_BYTES;
  buf.writeUInt32BE(Math.floor(offset / 0x1_0000_0000), pos);
  buf.writeUInt32BE(offset % 0x1_0000_0000, pos + 4);
  buf.writeUInt32BE(db, pos + 8);
  buf.writeUInt32BE(commands.length, pos + 12);
  pos += 16;
  for (const cmd of commands) {
    buf.writeUInt32BE(cmd.length, pos);
    pos += 4;
    for (const arg of cmd) {
      buf.writeUInt32BE(arg.length, pos);
      arg.copy(buf, pos + 4);
      pos += 4 + arg.length;
    }
  }
  buf.writeUInt32BE(size, 0);
  buf.writeUInt32BE(crc32c(buf.subarray(ENTRY_HEADER_BYTES)), 4);
  return buf;
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
  if (crc32c(payload) !== buf.readUInt32BE(pos + 4)) throw corrupt(where, 'entry checksum mismatch');
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

/**
 * Reads write-log entries from one segment file between two byte positions with positioned
 * reads of a bounded buffer: a follower never loads a whole segment into memory.
 */
import { promises as fsp } from 'node:fs';
import { SyncProxyError, toSyncProxyError } from '../errors';
import { ENTRY_HEADER_BYTES, decodeEntry, entryPayloadLength } from './log-format';
import type { LogEntry } from './types';

const READ_CHUNK = 256 * 1024;

export interface PositionedEntry {
  entry: LogEntry;
  /** Byte position right after the entry (where the next one starts). */
  end: number;
}

/**
 * Entries from byte `start` up to byte `end` (exclusive: the segment's flushed length when the
 * read began). Throws LOG_CORRUPT on a checksum or framing error, or when `end` cuts an entry.
 */
export async function* readSegment(file: string, start: number, end: number): AsyncGenerator<PositionedEntry> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new SyncProxyError('LOG_OFFSET_GONE', `write log segment ${file} was removed`, { cause: err });
    }
    throw toSyncProxyError(err, 'IO_ERROR', `opening write log segment ${file}`);
  }
  try {
    let buf = Buffer.alloc(0);
    let bufPos = start; // file position of buf[0]
    let filePos = start;
    let cursor = 0;
    for (;;) {
      const entryStart = bufPos + cursor;
      if (entryStart >= end) return;
      const len = entryPayloadLength(buf, cursor, file);
      const needed = len === undefined ? ENTRY_HEADER_BYTES : ENTRY_HEADER_BYTES + len;
      if (buf.length - cursor < needed) {
        if (entryStart + needed > end) {
          throw new SyncProxyError('LOG_CORRUPT', `${file}: entry at byte ${entryStart} is cut by the end of the segment`);
        }
        // Keep the unread tail, then read at least what the entry needs (bounded by `end`).
        const tail = buf.subarray(cursor);
        const want = Math.min(end - filePos, Math.max(READ_CHUNK, needed - tail.length));
        const next = Buffer.allocUnsafe(tail.length + want);
        tail.copy(next, 0);
        const { bytesRead } = await handle.read(next, tail.length, want, filePos);
        if (bytesRead < want) {
          throw new SyncProxyError('LOG_CORRUPT', `${file}: segment is shorter than its recorded length`);
        }
        filePos += bytesRead;
        bufPos = entryStart;
        buf = next;
        cursor = 0;
        continue;
      }
      const entry = decodeEntry(buf, cursor, file);
      cursor += needed;
      yield { entry, end: bufPos + cursor };
    }
  } finally {
    await handle.close();
  }
}

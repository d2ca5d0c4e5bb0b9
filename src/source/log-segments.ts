/**
 * The write log's segment files `<logId>-<firstOffset padded>.seg` in one directory: which offsets
 * each holds, rolling to a new file at segmentBytes, trimming the oldest past maxBytes, and the
 * fdatasync schedule (at most once per second, off the event loop; a rolled segment gets a last
 * fdatasync before its fd is closed). An fdatasync or close that fails for the current log
 * generation is reported to `onSyncFailure` (the log then resets: a segment it still serves may
 * not be on disk).
 */
import { readdirSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { describeError } from '../errors';
import { ENTRY_HEADER_BYTES } from './log-format';
import { SegmentFile } from './segment-file';

export interface Segment {
  file: string;
  firstOffset: number;
  lastOffset: number;
  /** Bytes written so far. */
  bytes: number;
}

export interface LogSegmentsOptions {
  dir: string;
  maxBytes: number;
  segmentBytes: number;
  logger: Logger;
  onSyncFailure: (reason: string) => void;
}

const FSYNC_INTERVAL_MS = 1000;
const SEGMENT_SUFFIX = '.seg';

export class LogSegments {
  private segments: Segment[] = [];
  /** The last segment's file while it is open. */
  private file: SegmentFile | undefined;
  /** Bumped when the files are removed: a late sync failure of older files is only logged. */
  private generation = 0;
  private logId = '';
  private fsyncTimer: NodeJS.Timeout | undefined;
  private lastFsyncAt = 0;
  /** Closes and fdatasyncs in flight (close() waits for them). */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly options: LogSegmentsOptions) {}

  /** Bytes of the segment files. */
  get count(): number {
    return this.segments.length;
  }

  get bytes(): number {
    return this.segments.reduce((sum, s) => sum + s.bytes, 0);
  }

  /** The segment holding `offset`, if any. */
  segmentFor(offset: number): Segment | undefined {
    for (let i = this.segments.length - 1; i >= 0; i--) {
      const s = this.segments[i];
      if (s.firstOffset <= offset) return offset <= s.lastOffset ? s : undefined;
    }
    return undefined;
  }

  /** Closes the open file (no last fdatasync) and removes every segment file; new files use `logId`. */
  removeAll(logId: string): void {
    this.closeFile(false);
    this.generation++;
    this.segments = [];
    this.logId = logId;
    let names: string[] = [];
    try {
      names = readdirSync(this.options.dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!name.endsWith(SEGMENT_SUFFIX)) continue;
      try {
        unlinkQuiet(path.join(this.options.dir, name));
      } catch (err) {
        this.options.logger.error({ err: describeError(err), file: name }, 'could not remove an old write log segment');
      }
    }
  }

  /**
   * Writes the entries `firstOffset..lastOffset` encoded back to back in `buf[0, end)`: whole
   * entries, a new segment when the next entry would pass segmentBytes (an entry bigger than that
   * gets a segment of its own). Throws on an I/O error.
   */
  write(buf: Buffer, end: number, firstOffset: number, lastOffset: number): void {
    const limit = this.options.segmentBytes;
    let pos = 0;
    let offset = firstOffset;
    while (pos < end) {
      if (!this.file) this.open(offset);
      const seg = this.segments[this.segments.length - 1];
      // Usually all of it fits: no need to look at the entries one by one.
      const fits = seg.bytes + (end - pos) <= limit;
      let stop = fits ? end : pos;
      let count = fits ? lastOffset - offset + 1 : 0;
      while (stop < end) {
        const size = ENTRY_HEADER_BYTES + buf.readUInt32BE(stop);
        if (seg.bytes + (stop - pos) + size > limit && seg.bytes + (stop - pos) > 0) break;
        stop += size;
        count++;
      }
      this.file!.write(buf, pos, stop);
      seg.bytes += stop - pos;
      if (count > 0) seg.lastOffset = offset + count - 1;
      offset += count;
      pos = stop;
      if (pos < end) this.closeFile(true);
    }
    this.scheduleFsync();
  }

  /**
   * Removes the oldest segments while the files exceed maxBytes (the current one always stays);
   * returns the first offset still held when some were removed.
   */
  trim(): number | undefined {
    let total = this.bytes;
    let first: number | undefined;
    while (this.segments.length > 1 && total > this.options.maxBytes) {
      const oldest = this.segments.shift() as Segment;
      total -= oldest.bytes;
      first = oldest.lastOffset + 1;
      unlinkQuiet(oldest.file);
      this.options.logger.info({ file: path.basename(oldest.file), firstOffset: first }, 'write log segment trimmed');
    }
    return first;
  }

  /** Closes the open file after a last fdatasync; resolves once every close and sync ended. */
  async close(): Promise<void> {
    if (this.fsyncTimer) clearTimeout(this.fsyncTimer);
    this.fsyncTimer = undefined;
    this.closeFile(true);
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  private open(firstOffset: number): void {
    const file = path.join(this.options.dir, `${this.logId}-${String(firstOffset).padStart(20, '0')}${SEGMENT_SUFFIX}`);
    this.file = new SegmentFile(file);
    this.segments.push({ file, firstOffset, lastOffset: firstOffset - 1, bytes: 0 });
  }

  /** Closes the open file (after a last fdatasync when `sync`), in the background. */
  private closeFile(sync: boolean): void {
    const file = this.file;
    if (!file) return;
    this.file = undefined;
    this.track(file.close(sync), 'closing a write log segment failed');
  }

  private scheduleFsync(): void {
    if (this.fsyncTimer || !this.file?.needsSync) return;
    const delay = Math.max(0, FSYNC_INTERVAL_MS - (Date.now() - this.lastFsyncAt));
    this.fsyncTimer = setTimeout(() => {
      this.fsyncTimer = undefined;
      this.lastFsyncAt = Date.now();
      if (this.file?.needsSync) this.track(this.file.sync(), 'write log fsync failed');
    }, delay);
    this.fsyncTimer.unref();
  }

  /** Keeps `close()` waiting for `op`; reports its failure when it concerns the current files. */
  private track(op: Promise<void>, what: string): void {
    const generation = this.generation;
    const p = op.catch((err: unknown) => {
      if (generation !== this.generation) return void this.options.logger.error({ err: describeError(err) }, what);
      this.options.onSyncFailure(`${what}: ${describeError(err)}`);
    });
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }
}

function unlinkQuiet(file: string): void {
  try {
    unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

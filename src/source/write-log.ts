/**
 * The master's write log: every write the node accepted, with offsets 1, 2, 3, ... under a log
 * id, persisted in size-bounded segment files `<logId>-<firstOffset padded>.seg`.
 *
 * Why a fresh log id on every open (and old segments removed): a restarted proxy cannot prove the
 * node was not written while it was down, so a replica holding an old log id must full-sync.
 *
 * `append` is synchronous (the data path calls it in reply order); entries are buffered and
 * written once per event-loop tick with one synchronous write (page cache: cheap, and it keeps
 * file order = offset order without an async queue), fdatasync at most once per second.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fdatasyncSync, mkdirSync, openSync, readdirSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { SyncProxyError, describeError } from '../errors';
import { encodeEntryInto, encodedEntryLength } from './log-format';
import { readSegment } from './log-segment-reader';
import type { LogEntry, WriteLogView } from './types';

export interface WriteLogOptions {
  dir: string;
  maxBytes: number;
  segmentBytes: number;
  logger: Logger;
}

interface Segment {
  file: string;
  firstOffset: number;
  lastOffset: number;
  /** Bytes written (flushed) so far. */
  bytes: number;
}

const FSYNC_INTERVAL_MS = 1000;
/** A turn's entries are encoded into one reused buffer up to this size (bigger turns allocate). */
const SCRATCH_MAX_BYTES = 1024 * 1024;
const SEGMENT_SUFFIX = '.seg';

export class WriteLog implements WriteLogView {
  private id = '';
  private first = 1;
  private last = 0;
  private segments: Segment[] = [];
  private fd: number | undefined;
  /** Appended, not yet written: encoded at flush time, all of a turn into one buffer. */
  private pending: LogEntry[] = [];
  private scratch: Buffer | undefined;
  private flushScheduled = false;
  private fsyncTimer: NodeJS.Timeout | undefined;
  private lastFsyncAt = 0;
  private dirty = false;
  private opened = false;
  private closed = false;
  private waiters = new Set<() => void>();
  private readonly logger: Logger;

  constructor(private readonly options: WriteLogOptions) {
    if (options.segmentBytes <= 0 || options.maxBytes < options.segmentBytes) {
      throw new SyncProxyError('CONFIG_INVALID', 'write log: maxBytes must be at least segmentBytes > 0');
    }
    this.logger = options.logger.child({ component: 'write-log' });
  }

  get logId(): string {
    return this.id;
  }
  get firstOffset(): number {
    return this.first;
  }
  get lastOffset(): number {
    return this.last;
  }
  /** Bytes of the segment files on disk (entries not yet flushed are not counted). */
  get bytes(): number {
    return this.segments.reduce((sum, s) => sum + s.bytes, 0);
  }

  async open(): Promise<void> {
    mkdirSync(this.options.dir, { recursive: true });
    this.removeAllSegmentFiles();
    this.id = newLogId();
    this.opened = true;
    this.logger.info({ logId: this.id }, 'write log opened with a new log id');
  }

  append(db: number, commands: Buffer[][]): number {
    if (!this.opened || this.closed) throw new SyncProxyError('INTERNAL', 'write log is not open');
    const offset = this.last + 1;
    if (!Number.isInteger(db) || db < 0 || db > 0xffff_ffff) throw new SyncProxyError('INTERNAL', `write log: invalid db ${db}`);
    this.pending.push({ offset, db, commands });
    this.last = offset;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    this.wakeFollowers();
    return offset;
  }

  /** Starts a new log id: offsets restart at 1, segments are removed, followers get LOG_OFFSET_GONE. */
  reset(reason: string): void {
    const old = this.id;
    try {
      this.closeSegment();
    } catch (err) {
      this.logger.error({ err: describeError(err) }, 'closing the write log segment failed during reset');
    }
    this.pending = [];
    this.removeAllSegmentFiles();
    this.segments = [];
    this.id = newLogId();
    this.first = 1;
    this.last = 0;
    this.logger.warn({ oldLogId: old, logId: this.id, reason }, 'write log reset');
    this.wakeFollowers();
  }

  async *follow(fromOffset: number, signal: AbortSignal): AsyncGenerator<LogEntry> {
    const logId = this.id;
    let next = fromOffset;
    // Where `next` starts on disk, when known (avoids rescanning a segment from its start).
    let position: { file: string; pos: number } | undefined;
    this.checkHeld(logId, next, true);
    while (!signal.aborted) {
      this.checkHeld(logId, next, false);
      if (next > this.last) {
        await this.waitForAppend(signal);
        continue;
      }
      const firstPending = this.pending.length > 0 ? this.pending[0].offset : Infinity;
      if (next >= firstPending) {
        for (const p of this.pending.slice(next - firstPending)) {
          yield p;
          next = p.offset + 1;
          position = undefined;
          if (signal.aborted) return;
          this.checkHeld(logId, next, false);
        }
        continue;
      }
      const seg = this.segmentFor(next);
      if (!seg) throw gone(`offset ${next} is not held by the write log`);
      const start = position && position.file === seg.file ? position.pos : 0;
      for await (const { entry, end } of readSegment(seg.file, start, seg.bytes)) {
        if (entry.offset < next) continue;
        if (entry.offset !== next) {
          throw new SyncProxyError('LOG_CORRUPT', `${seg.file}: expected offset ${next}, found ${entry.offset}`);
        }
        position = { file: seg.file, pos: end };
        yield entry;
        next++;
        if (signal.aborted) return;
        this.checkHeld(logId, next, false);
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    if (this.fsyncTimer) clearTimeout(this.fsyncTimer);
    this.fsyncTimer = undefined;
    this.closeSegment();
    this.closed = true;
    this.wakeFollowers();
  }

  private checkHeld(logId: string, next: number, atStart: boolean): void {
    if (this.closed) throw gone('write log closed');
    if (this.id !== logId) throw gone(`write log was reset (log id ${logId} is gone)`);
    if (next < this.first) throw gone(`offset ${next} was trimmed; the log starts at ${this.first}`);
    if (atStart && (!Number.isSafeInteger(next) || next > this.last + 1)) {
      throw gone(`offset ${next} is beyond the log's end ${this.last}`);
    }
  }

  private segmentFor(offset: number): Segment | undefined {
    for (let i = this.segments.length - 1; i >= 0; i--) {
      const s = this.segments[i];
      if (s.firstOffset <= offset) return offset <= s.lastOffset ? s : undefined;
    }
    return undefined;
  }

  private waitForAppend(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  private wakeFollowers(): void {
    if (this.waiters.size === 0) return; // the common case: called on every append
    for (const w of [...this.waiters]) w();
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0 || this.closed) return;
    const batch = this.pending;
    try {
      let total = 0;
      for (let i = 0; i < batch.length; i++) total += encodedEntryLength(batch[i].commands);
      let buf: Buffer;
      if (total <= SCRATCH_MAX_BYTES) {
        if (!this.scratch || this.scratch.length < total) this.scratch = Buffer.allocUnsafeSlow(Math.min(SCRATCH_MAX_BYTES, Math.max(total, 64 * 1024)));
        buf = this.scratch;
      } else {
        buf = Buffer.allocUnsafeSlow(total);
      }
      let chunkStart = 0;
      let pos = 0;
      for (let i = 0; i < batch.length; i++) {
        const e = batch[i];
        const end = encodeEntryInto(buf, pos, e.offset, e.db, e.commands);
        let seg = this.segments[this.segments.length - 1];
        const chunkBytes = pos - chunkStart;
        if (this.fd !== undefined && seg.bytes + chunkBytes > 0 && seg.bytes + chunkBytes + (end - pos) > this.options.segmentBytes) {
          this.writeChunk(buf, chunkStart, pos);
          chunkStart = pos;
          this.closeSegment();
        }
        if (this.fd === undefined) seg = this.openSegment(e.offset);
        seg.lastOffset = e.offset;
        pos = end;
      }
      this.writeChunk(buf, chunkStart, pos);
      this.pending = [];
    } catch (err) {
      // Entries the node already executed cannot be persisted: followers must not miss them
      // silently, so the log starts over and replicas full-sync.
      this.logger.error({ err: describeError(err) }, 'write log append failed; resetting the log');
      this.reset(`write failed: ${describeError(err)}`);
      return;
    }
    this.trim();
    this.scheduleFsync();
  }

  /** Writes `data[start, end)` to the current segment. */
  private writeChunk(data: Buffer, start: number, end: number): void {
    if (end === start || this.fd === undefined) return;
    let written = start;
    while (written < end) written += writeSync(this.fd, data, written, end - written);
    this.segments[this.segments.length - 1].bytes += end - start;
    this.dirty = true;
  }

  private openSegment(firstOffset: number): Segment {
    const file = path.join(this.options.dir, `${this.id}-${String(firstOffset).padStart(20, '0')}${SEGMENT_SUFFIX}`);
    this.fd = openSync(file, 'wx');
    const seg: Segment = { file, firstOffset, lastOffset: firstOffset - 1, bytes: 0 };
    this.segments.push(seg);
    return seg;
  }

  private closeSegment(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    try {
      if (this.dirty) fdatasyncSync(fd);
    } finally {
      this.dirty = false;
      closeSync(fd);
    }
  }

  /** Removes the oldest segments while the log exceeds maxBytes; the current one always stays. */
  private trim(): void {
    let total = this.bytes;
    while (this.segments.length > 1 && total > this.options.maxBytes) {
      const oldest = this.segments.shift() as Segment;
      total -= oldest.bytes;
      this.first = oldest.lastOffset + 1;
      unlinkQuiet(oldest.file);
      this.logger.info({ file: path.basename(oldest.file), firstOffset: this.first }, 'write log segment trimmed');
    }
  }

  private scheduleFsync(): void {
    if (this.fsyncTimer || !this.dirty) return;
    const delay = Math.max(0, FSYNC_INTERVAL_MS - (Date.now() - this.lastFsyncAt));
    this.fsyncTimer = setTimeout(() => {
      this.fsyncTimer = undefined;
      this.lastFsyncAt = Date.now();
      if (this.fd === undefined || !this.dirty) return;
      try {
        fdatasyncSync(this.fd);
        this.dirty = false;
      } catch (err) {
        this.logger.error({ err: describeError(err) }, 'write log fsync failed; resetting the log');
        this.reset(`fsync failed: ${describeError(err)}`);
      }
    }, delay);
    this.fsyncTimer.unref();
  }

  private removeAllSegmentFiles(): void {
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
        this.logger.error({ err: describeError(err), file: name }, 'could not remove an old write log segment');
      }
    }
  }
}

function newLogId(): string {
  return randomBytes(20).toString('hex');
}

function gone(message: string): SyncProxyError {
  return new SyncProxyError('LOG_OFFSET_GONE', message);
}

function unlinkQuiet(file: string): void {
  try {
    unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * The master's write log: every write the node accepted, with offsets 1, 2, 3, ... under a log
 * id, persisted in size-bounded segment files `<logId>-<firstOffset padded>.seg`.
 *
 * Why a fresh log id on every open (and old segments removed): a restarted proxy cannot prove the
 * node was not written while it was down, so a replica holding an old log id must full-sync.
 *
 * `append` is synchronous (the data path calls it in reply order) and encodes the entry at once
 * into a buffer (no object per entry). The buffer goes to the segment file with one synchronous
 * write (./segment-file.ts) every WRITE_INTERVAL_MS, or at the end of the turn that fills it past
 * WRITE_BATCH_BYTES, and is fdatasynced at most once per second off the event loop.
 *
 * Why not one write per event-loop turn: at redis-benchmark -P 1 a turn holds a few dozen writes,
 * and each write() to an ext4 file pays a fixed cost (journal handle, time stamps) that made the
 * log's writes about 4% of the proxy's CPU per SET (perf). Holding entries for a few milliseconds loses
 * nothing: followers read entries not yet written from this buffer, and a restarted proxy never
 * reads an old log (it starts a new log id, see below).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import { SyncProxyError, describeError } from '../errors';
import { TurnWriter, writeFileAtTurnEnd } from '../turn-end';
import { ENTRY_HEADER_BYTES, decodeEntry, encodeEntryInto, encodeRequestInto, encodedEntryLength, requestEntryBound } from './log-format';
import { readSegment } from './log-segment-reader';
import { LogSegments } from './log-segments';
import type { LogEntry, WriteLogView } from './types';

export interface WriteLogOptions {
  dir: string;
  maxBytes: number;
  segmentBytes: number;
  logger: Logger;
}

/** The buffer starts at this size and grows for big bursts... */
const BATCH_INITIAL_BYTES = 64 * 1024;
/** ...and is replaced by a small one after a burst that made it grow past this. */
const BATCH_KEEP_BYTES = 1024 * 1024;
/** Entries wait at most this long in memory before their write... */
const WRITE_INTERVAL_MS = 10;
/** ...or until the end of the turn that brings the buffer past this size. */
const WRITE_BATCH_BYTES = 512 * 1024;

export class WriteLog implements WriteLogView, TurnWriter {
  private id = '';
  private first = 1;
  private last = 0;
  private readonly segments: LogSegments;
  /** Entries appended and not yet written, encoded back to back: offsets `written + 1 .. last`. */
  private batch = Buffer.allocUnsafeSlow(BATCH_INITIAL_BYTES);
  private batchEnd = 0;
  private written = 0;
  /** The end-of-turn write is scheduled (the buffer passed WRITE_BATCH_BYTES). */
  private flushScheduled = false;
  private flushTimer?: NodeJS.Timeout;
  /**
   * Where an unwritten offset starts in the buffer, learnt by the last `unwritten` call, so a
   * follower catching up appends does not rescan the buffer from its start each time. Cleared
   * whenever the buffer is emptied.
   */
  private knownPosition?: { offset: number; pos: number };
  private opened = false;
  private closed = false;
  private waiters = new Set<() => void>();
  private readonly logger: Logger;

  constructor(private readonly options: WriteLogOptions) {
    if (options.segmentBytes <= 0 || options.maxBytes < options.segmentBytes) {
      throw new SyncProxyError('CONFIG_INVALID', 'write log: maxBytes must be at least segmentBytes > 0');
    }
    this.logger = options.logger.child({ component: 'write-log' });
    this.segments = new LogSegments({ ...options, logger: this.logger, onSyncFailure: (reason) => this.syncFailed(reason) });
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
  /** Segment files on disk (the oldest is removed past maxBytes). */
  get segmentCount(): number {
    return this.segments.count;
  }

  get bytes(): number {
    return this.segments.bytes;
  }

  async open(): Promise<void> {
    mkdirSync(this.options.dir, { recursive: true });
    this.id = newLogId();
    this.segments.removeAll(this.id);
    this.opened = true;
    this.logger.info({ logId: this.id }, 'write log opened with a new log id');
  }

  append(db: number, commands: Buffer[][]): number {
    const offset = this.nextOffset(db);
    const pos = this.reserve(encodedEntryLength(commands));
    this.batchEnd = encodeEntryInto(this.batch, pos, offset, db, commands);
    return this.appended(offset);
  }

  /**
   * Appends one command given as the RESP multibulk request `buf[start, end)` the client sent (the
   * entry is the one `append(db, [args])` makes): a plain write is logged without a view per
   * argument.
   */
  appendRequest(db: number, buf: Buffer, start: number, end: number): number {
    const offset = this.nextOffset(db);
    const pos = this.reserve(requestEntryBound(end - start));
    this.batchEnd = encodeRequestInto(this.batch, pos, offset, db, buf, start, end);
    return this.appended(offset);
  }

  private nextOffset(db: number): number {
    if (!this.opened || this.closed) throw new SyncProxyError('INTERNAL', 'write log is not open');
    if (!Number.isInteger(db) || db < 0 || db > 0xffff_ffff) throw new SyncProxyError('INTERNAL', `write log: invalid db ${db}`);
    return this.last + 1;
  }

  /** Makes room for `bytes` more in the turn buffer; returns where they go. */
  private reserve(bytes: number): number {
    const pos = this.batchEnd;
    if (pos + bytes > this.batch.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(2 * this.batch.length, pos + bytes));
      this.batch.copy(grown, 0, 0, pos);
      this.batch = grown;
    }
    return pos;
  }

  private appended(offset: number): number {
    this.last = offset;
    if (this.batchEnd >= WRITE_BATCH_BYTES) {
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        writeFileAtTurnEnd(this);
      }
    } else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), WRITE_INTERVAL_MS);
    }
    this.wakeFollowers();
    return offset;
  }

  /** Starts a new log id: offsets restart at 1, segments are removed, followers get LOG_OFFSET_GONE. */
  reset(reason: string): void {
    const old = this.id;
    this.batchEnd = 0;
    this.knownPosition = undefined;
    this.id = newLogId();
    this.segments.removeAll(this.id);
    this.first = 1;
    this.last = 0;
    this.written = 0;
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
      if (next > this.written) {
        // Decoded now: the turn buffer is reused once written, while this generator is suspended.
        for (const p of this.unwritten(next)) {
          yield p;
          next = p.offset + 1;
          position = undefined;
          if (signal.aborted) return;
          this.checkHeld(logId, next, false);
        }
        continue;
      }
      const seg = this.segments.segmentFor(next);
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
    this.closed = true;
    this.wakeFollowers();
    await this.segments.close();
  }

  /** The entries from `from` (> written) to the last, decoded from the buffer not yet written. */
  private unwritten(from: number): LogEntry[] {
    const out: LogEntry[] = [];
    let offset = this.written + 1;
    let pos = 0;
    const known = this.knownPosition;
    if (known && known.offset <= from) ({ offset, pos } = known);
    for (; offset <= this.last; offset++) {
      const end = pos + ENTRY_HEADER_BYTES + this.batch.readUInt32BE(pos);
      if (offset >= from) out.push(decodeEntry(this.batch, pos, 'write log buffer'));
      pos = end;
    }
    this.knownPosition = { offset, pos };
    return out;
  }

  private checkHeld(logId: string, next: number, atStart: boolean): void {
    if (this.closed) throw gone('write log closed');
    if (this.id !== logId) throw gone(`write log was reset (log id ${logId} is gone)`);
    if (next < this.first) throw gone(`offset ${next} was trimmed; the log starts at ${this.first}`);
    if (atStart && (!Number.isSafeInteger(next) || next > this.last + 1)) {
      throw gone(`offset ${next} is beyond the log's end ${this.last}`);
    }
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

  /** A full buffer goes to the file after the turn's network writes (TurnWriter). */
  writeTurn(): void {
    this.flush();
  }

  private flush(): void {
    this.flushScheduled = false;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.batchEnd === 0 || this.closed) return;
    try {
      this.segments.write(this.batch, this.batchEnd, this.written + 1, this.last);
    } catch (err) {
      // Entries the node already executed cannot be persisted: followers must not miss them
      // silently, so the log starts over and replicas full-sync.
      this.logger.error({ err: describeError(err) }, 'write log append failed; resetting the log');
      this.reset(`write failed: ${describeError(err)}`);
      return;
    }
    this.written = this.last;
    this.batchEnd = 0;
    this.knownPosition = undefined;
    if (this.batch.length > BATCH_KEEP_BYTES) this.batch = Buffer.allocUnsafeSlow(BATCH_INITIAL_BYTES);
    this.first = this.segments.trim() ?? this.first;
  }

  private syncFailed(reason: string): void {
    if (this.closed) return void this.logger.error({ reason }, 'write log fsync failed after close');
    this.logger.error({ reason }, 'write log fsync failed; resetting the log');
    this.reset(reason);
  }
}

function newLogId(): string {
  return randomBytes(20).toString('hex');
}

function gone(message: string): SyncProxyError {
  return new SyncProxyError('LOG_OFFSET_GONE', message);
}

/**
 * The workers of one copy (./copier.ts): chunk jobs of every file the manifest lists so far (more
 * are added while the master still builds), positioned writes, each chunk's CRC32C and snapshot id
 * checked, refetches within the chunk retry policy, then per file fsync, whole-file CRC32C from
 * disk and atomic rename; progress persisted (only fsynced bytes are claimed).
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import type { Logger } from 'pino';
import { fsyncDir } from '../durable-fs';
import { SyncProxyError, toSyncProxyError } from '../errors';
import { AttemptHistory, sleep } from '../retry';
import type { Manifest, ManifestFile } from '../source/types';
import type { CopierOptions } from './copier';
import type { ProgressRecord, ProgressStore } from './staging';
import { crcOfFile, raceAbort } from './util';

/** Progress is persisted at most this often, and at every file end. */
const PROGRESS_SAVE_INTERVAL_MS = 500;

export interface FileState {
  meta: ManifestFile;
  finalPath: string;
  partialPath: string;
  handle?: FileHandle;
  /** Set while the .partial file is being opened, so concurrent workers share one handle. */
  opening?: Promise<FileHandle>;
  /** Bytes from 0 written and chunk-verified (in memory). */
  contiguous: number;
  /** What progress.json claims (fsynced). */
  persisted: number;
  /** Completed ranges past `contiguous`: start -> end. */
  ranges: Map<number, number>;
  chunksLeft: number;
}

interface ChunkJob {
  file: FileState;
  start: number;
  end: number;
}

export type AddFiles = (states: FileState[]) => Promise<void>;

export class CopyRun<M extends Manifest = Manifest> {
  readonly states: FileState[] = [];
  private readonly jobs: ChunkJob[] = [];
  private nextJob = 0;
  private failure?: unknown;
  private readonly abort = new AbortController();
  private lastSave = 0;
  private saving: Promise<void> = Promise.resolve();
  /** The manifest may still grow: idle workers wait for `wakeWorkers`. */
  private growing = true;
  private wakeWorkers: Array<() => void> = [];

  constructor(
    private readonly options: CopierOptions<M>,
    private readonly record: ProgressRecord,
    private readonly store: ProgressStore,
    private readonly logger: Logger,
  ) {}

  /** Copies `initial` and every file `feed` adds, until `feed` resolves and all are copied. */
  async run(initial: FileState[], feed: (add: AddFiles) => Promise<void>): Promise<void> {
    const onAbort = (): void => {
      this.abort.abort(this.options.signal.reason);
      this.wake();
    };
    this.options.signal.addEventListener('abort', onAbort, { once: true });
    try {
      await this.add(initial);
      const workers = Array.from({ length: Math.max(1, this.options.workers) }, () => this.worker());
      const feeding = feed((states) => this.add(states)).then(
        () => undefined,
        (err: unknown) => this.fail(err),
      ).finally(() => {
        this.growing = false;
        this.wake();
      });
      await Promise.all([...workers, feeding]);
      if (this.failure !== undefined) throw this.failure;
      if (this.abort.signal.aborted) throw this.abort.signal.reason;
    } catch (err) {
      this.failure ??= err;
      throw this.failure;
    } finally {
      this.options.signal.removeEventListener('abort', onAbort);
      // Keep what was proven so a retry or a restarted process resumes from it.
      await this.persist(true).catch((err) => this.logger.warn({ err: String(err) }, 'could not persist copy progress after a failure'));
      for (const state of this.states) await state.handle?.close().catch(() => undefined);
    }
  }

  /** Queues the chunks of files new to the run; files with nothing left to fetch are finished now. */
  private async add(states: FileState[]): Promise<void> {
    // Decided before any await: once the workers see the new jobs they finish those files
    // themselves, and a file must never be finished twice (the second open would truncate it).
    const complete: FileState[] = [];
    const nothingToFetch: FileState[] = [];
    for (const state of states) {
      this.states.push(state);
      if (this.record.files[state.meta.name].complete) {
        complete.push(state);
        continue;
      }
      for (let start = state.contiguous; start < state.meta.size; start += this.options.chunkSize) {
        this.jobs.push({ file: state, start, end: Math.min(state.meta.size, start + this.options.chunkSize) });
        state.chunksLeft++;
      }
      if (state.chunksLeft === 0) nothingToFetch.push(state);
    }
    // Through persist(): one save of progress.json at a time.
    await this.persist(true);
    this.wake();
    for (const state of complete) this.verified(state);
    // Files with no chunk to fetch (empty, or fully written before a crash) are finished here.
    for (const state of nothingToFetch) await this.finishFile(state);
  }

  private async worker(): Promise<void> {
    while (this.failure === undefined && !this.abort.signal.aborted) {
      if (this.nextJob >= this.jobs.length) {
        if (!this.growing) return;
        await new Promise<void>((resolve) => this.wakeWorkers.push(resolve));
        continue;
      }
      const job = this.jobs[this.nextJob++];
      try {
        await this.copyChunk(job);
      } catch (err) {
        this.fail(err);
        return;
      }
    }
  }

  private fail(err: unknown): void {
    if (this.failure === undefined) {
      this.failure = err;
      this.abort.abort(err);
    }
    this.wake();
  }

  private wake(): void {
    const waiting = this.wakeWorkers;
    this.wakeWorkers = [];
    for (const resolve of waiting) resolve();
  }

  private async copyChunk(job: ChunkJob): Promise<void> {
    const { file } = job;
    const signal = this.abort.signal;
    await this.options.throttle.take(job.end - job.start, signal);
    let pos = job.start;
    while (pos < job.end) {
      const data = await this.fetchVerified(file.meta, pos, job.end - pos);
      const handle = await this.handleOf(file);
      await writeAll(handle, data, pos, file.meta.name);
      pos += data.length;
      this.options.stats.bytesDone += data.length;
    }
    file.ranges.set(job.start, job.end);
    while (file.ranges.has(file.contiguous)) {
      const end = file.ranges.get(file.contiguous)!;
      file.ranges.delete(file.contiguous);
      file.contiguous = end;
    }
    file.chunksLeft--;
    if (file.chunksLeft === 0) await this.finishFile(file);
    else if (Date.now() - this.lastSave >= PROGRESS_SAVE_INTERVAL_MS) await this.persist(false);
  }

  private handleOf(file: FileState): Promise<FileHandle> {
    if (file.handle) return Promise.resolve(file.handle);
    file.opening ??= fsp.open(file.partialPath, 'w+').then(
      (handle) => (file.handle = handle),
      (err) => {
        throw toSyncProxyError(err, 'IO_ERROR', `opening ${file.partialPath}`);
      },
    );
    return file.opening;
  }

  /** One chunk (or the part of it the master returns), refetched within the chunk retry bounds. */
  private async fetchVerified(meta: ManifestFile, offset: number, length: number): Promise<Buffer> {
    const history = new AttemptHistory();
    const { client, manifest, replica, chunkRetry, stats } = this.options;
    const signal = this.abort.signal;
    for (;;) {
      try {
        const answer = await raceAbort(client.getChunk({ snapshotId: manifest.snapshotId, file: meta.name, offset, length, replica }), signal);
        checkChunk(answer, manifest.snapshotId, meta, offset, length);
        return answer.data;
      } catch (error) {
        if (signal.aborted) throw signal.reason ?? error;
        let err = history.record(error);
        if (err.code === 'SNAPSHOT_NOT_FOUND') err = new SyncProxyError('SNAPSHOT_CHANGED', `snapshot ${manifest.snapshotId} is gone on the master`, { cause: err });
        if (err.code === 'SNAPSHOT_CHANGED' || !chunkRetry.shouldRetry(history)) {
          if (err.code === 'SNAPSHOT_CHANGED' || history.attempts === 1) throw err;
          throw new SyncProxyError(err.code, `chunk ${meta.name}@${offset} failed after ${history.attempts} fetches: ${history.summary()}`, { cause: err, retryable: err.retryable });
        }
        stats.chunkRetries++;
        this.logger.warn({ file: meta.name, offset, attempt: history.attempts, code: err.code }, `chunk fetch failed, fetching again: ${err.message}`);
        await sleep(chunkRetry.delayFor(history.attempts + 1), signal);
      }
    }
  }

  /** fsync, whole-file CRC32C from disk, atomic rename, progress persisted. */
  private async finishFile(file: FileState): Promise<void> {
    const { meta } = file;
    try {
      const handle = await this.handleOf(file);
      await handle.sync();
      file.handle = undefined;
      file.opening = undefined;
      await handle.close();
      const stat = await fsp.stat(file.partialPath);
      if (stat.size !== meta.size) throw new SyncProxyError('SIZE_MISMATCH', `${meta.name} is ${stat.size} bytes after the copy, the manifest says ${meta.size}`);
      const crc = await crcOfFile(file.partialPath);
      if (crc !== meta.crc32c) {
        this.record.files[meta.name].verifiedBytes = 0;
        file.contiguous = file.persisted = 0;
        await fsp.rm(file.partialPath, { force: true });
        throw new SyncProxyError('CHECKSUM_MISMATCH', `${meta.name}: whole-file CRC32C ${crc} differs from the manifest's ${meta.crc32c}`);
      }
      await fsp.rename(file.partialPath, file.finalPath);
      await fsyncDir(path.dirname(file.finalPath));
    } catch (err) {
      throw toSyncProxyError(err, 'IO_ERROR', `finishing ${meta.name}`);
    }
    file.contiguous = file.persisted = meta.size;
    this.record.files[meta.name] = { size: meta.size, crc32c: meta.crc32c, verifiedBytes: meta.size, complete: true };
    this.logger.debug({ file: meta.name, bytes: meta.size }, 'file copied and verified');
    await this.persist(true);
    // Counted once progress.json says so: a status never claims more than a restart would keep.
    this.options.stats.filesDone++;
    this.verified(file);
  }

  private verified(file: FileState): void {
    this.options.onFileVerified?.(this.states.indexOf(file), file.finalPath);
  }

  /** Claims only bytes that were fsynced first; one save at a time. */
  private persist(force: boolean): Promise<void> {
    if (!force && Date.now() - this.lastSave < PROGRESS_SAVE_INTERVAL_MS) return this.saving;
    this.lastSave = Date.now();
    this.saving = this.saving.catch(() => undefined).then(async () => {
      for (const file of this.states) {
        const claim = file.contiguous;
        if (!file.handle || claim <= file.persisted) continue;
        try {
          await file.handle.datasync();
        } catch (err) {
          throw toSyncProxyError(err, 'IO_ERROR', `fsync of ${file.meta.name}`);
        }
        file.persisted = claim;
        this.record.files[file.meta.name].verifiedBytes = claim;
      }
      await this.store.save(this.record);
    });
    return this.saving;
  }
}

function checkChunk(answer: { snapshotId: string; file: string; offset: number; data: Buffer; crc32c: number; eof: boolean }, snapshotId: string, meta: ManifestFile, offset: number, length: number): void {
  const where = `${meta.name}@${offset}`;
  if (answer.snapshotId !== snapshotId) throw new SyncProxyError('SNAPSHOT_CHANGED', `chunk ${where} came from snapshot ${answer.snapshotId}, copying ${snapshotId}`, { details: { newSnapshotId: answer.snapshotId } });
  if (answer.file !== meta.name || answer.offset !== offset) throw new SyncProxyError('MALFORMED_RESPONSE', `asked for ${where}, got ${answer.file}@${answer.offset}`);
  const actual = crc32c(answer.data);
  if (actual !== answer.crc32c >>> 0) throw new SyncProxyError('CHECKSUM_MISMATCH', `chunk ${where}: CRC32C of the data is ${actual}, the master sent ${answer.crc32c}`);
  const end = offset + answer.data.length;
  if (end > meta.size) throw new SyncProxyError('SIZE_MISMATCH', `chunk ${where} ends at ${end}, past the manifest size ${meta.size}`);
  if (answer.data.length > length) throw new SyncProxyError('MALFORMED_RESPONSE', `chunk ${where}: asked for ${length} bytes, got ${answer.data.length}`);
  if (answer.eof && end < meta.size) throw new SyncProxyError('SIZE_MISMATCH', `chunk ${where}: end of file at ${end}, the manifest size is ${meta.size}`);
  if (!answer.eof && end === meta.size) throw new SyncProxyError('SIZE_MISMATCH', `chunk ${where}: the master's file goes on past the manifest size ${meta.size}`);
  if (answer.data.length === 0) throw new SyncProxyError('MALFORMED_RESPONSE', `chunk ${where}: empty chunk before the end of the file`);
}

async function writeAll(handle: FileHandle, data: Buffer, position: number, name: string): Promise<void> {
  let done = 0;
  try {
    while (done < data.length) {
      const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
      done += bytesWritten;
    }
  } catch (err) {
    throw toSyncProxyError(err, 'IO_ERROR', `writing ${name} at ${position}`);
  }
}

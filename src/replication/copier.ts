/**
 * Copies one snapshot's files from the master into the staging directory: parallel workers,
 * positioned writes, the CRC32C and snapshot id of every chunk checked, a throttle shared by the
 * workers, per-file CRC32C from disk, fsync and atomic rename, and progress persisted so a
 * restarted process resumes (DESIGN.md §5, invariants 3, 6, 7, 8). Memory: at most one chunk per
 * worker; a file is never held whole.
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import type { Logger } from 'pino';
import { SyncProxyError, toSyncProxyError } from '../errors';
import { AttemptHistory, RetryPolicy, sleep } from '../retry';
import type { Manifest, ManifestFile } from '../source/types';
import { FileProgress, ProgressRecord, ProgressStore, progressPath, resolvePlainName, stagingRoot, validateManifest } from './staging';
import type { ReplicaIdentity, SyncClientLike } from './sync-api';
import { Throttle } from './throttle';
import { crcOfFile, raceAbort } from './util';

/** Progress is persisted at most this often, and at every file end. */
const PROGRESS_SAVE_INTERVAL_MS = 500;

export interface CopyStats {
  bytesTotal: number;
  /** Bytes verified chunk by chunk (including bytes kept from a previous run). */
  bytesDone: number;
  filesTotal: number;
  filesDone: number;
  chunkRetries: number;
  /** Bytes not fetched again because a previous run had verified them. */
  resumedBytes: number;
}

export function emptyCopyStats(): CopyStats {
  return { bytesTotal: 0, bytesDone: 0, filesTotal: 0, filesDone: 0, chunkRetries: 0, resumedBytes: 0 };
}

export interface CopierOptions {
  client: SyncClientLike;
  /** Possibly partial (the master still building): then `nextManifest` brings the rest. */
  manifest: Manifest;
  /**
   * The master's next manifest of the same snapshot with more than `knownFiles` files, partial or
   * complete (GetMeta with known_files). Needed when `manifest` is partial.
   */
  nextManifest?: (knownFiles: number) => Promise<Manifest>;
  /** Each manifest that added files, after it was checked to extend the previous one. */
  onManifest?: (manifest: Manifest) => void;
  masterRunId: string;
  dataDir: string;
  workers: number;
  chunkSize: number;
  throttle: Throttle;
  /** Bounds the refetches of one chunk (CHECKSUM_MISMATCH, timeouts, ...). */
  chunkRetry: RetryPolicy;
  replica: ReplicaIdentity;
  logger: Logger;
  signal: AbortSignal;
  stats: CopyStats;
  /**
   * Called once per file, with its manifest index and final path, as soon as the file is in place
   * and verified (size and whole-file CRC32C from disk, fsynced, renamed): files already complete
   * from a previous run first, the others as they finish (in any order). Lets the sync load file
   * i while later files are still being copied.
   */
  onFileVerified?: (index: number, path: string) => void;
}

export interface CopiedSnapshot {
  snapshotId: string;
  /** The complete manifest (the last one received). */
  manifest: Manifest;
  dir: string;
  /** Final paths in manifest order, each verified by size and whole-file CRC32C. */
  files: Array<ManifestFile & { path: string }>;
}

interface FileState {
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

export async function copySnapshot(options: CopierOptions): Promise<CopiedSnapshot> {
  const { manifest, stats } = options;
  const root = stagingRoot(options.dataDir);
  // Untrusted names are checked before anything touches the disk.
  validateManifest(manifest, root);
  const logger = options.logger.child({ component: 'copier', snapshotId: manifest.snapshotId });
  const store = new ProgressStore(progressPath(options.dataDir));
  const dir = resolvePlainName(root, manifest.snapshotId, 'snapshot id');
  const record = await prepareStaging(store, root, dir, manifest, options.masterRunId, logger);

  stats.bytesTotal = 0;
  stats.filesTotal = 0;
  stats.bytesDone = 0;
  stats.filesDone = 0;
  stats.resumedBytes = 0;
  /** File states for `files` (the ones not seen yet), restored from a previous run's progress. */
  const statesOf = async (files: readonly ManifestFile[]): Promise<FileState[]> => {
    const added: FileState[] = [];
    for (const meta of files) {
      const finalPath = resolvePlainName(dir, meta.name);
      const state: FileState = { meta, finalPath, partialPath: `${finalPath}.partial`, contiguous: 0, persisted: 0, ranges: new Map(), chunksLeft: 0 };
      await restoreFile(state, record.files[meta.name], logger);
      record.files[meta.name] = { size: meta.size, crc32c: meta.crc32c, verifiedBytes: state.contiguous, complete: state.contiguous === meta.size && state.chunksLeft === 0 && !state.handle && (await exists(finalPath)) };
      if (record.files[meta.name].complete) stats.filesDone++;
      stats.bytesTotal += meta.size;
      stats.filesTotal++;
      stats.bytesDone += state.contiguous;
      stats.resumedBytes += state.contiguous;
      added.push(state);
    }
    return added;
  };

  const copy = new CopyRun(options, record, store, logger);
  let current = manifest;
  await copy.run(await statesOf(manifest.files), async (add) => {
    // The master is still building: copy what it has finished while asking for the rest.
    while (current.partial) {
      if (!options.nextManifest) throw new SyncProxyError('INTERNAL', 'a partial manifest without a way to ask for the rest');
      const next = await raceAbort(options.nextManifest(current.files.length), options.signal).catch((err: unknown) => {
        if (err instanceof SyncProxyError && err.code === 'SNAPSHOT_NOT_FOUND') throw new SyncProxyError('SNAPSHOT_CHANGED', `snapshot ${current.snapshotId} is gone on the master`, { cause: err });
        throw err;
      });
      checkExtends(current, next);
      validateManifest(next, root);
      const fresh = next.files.slice(current.files.length);
      current = next;
      options.onManifest?.(next);
      if (fresh.length > 0) await add(await statesOf(fresh));
    }
  });
  return { snapshotId: manifest.snapshotId, manifest: current, dir, files: copy.states.map((s) => ({ ...s.meta, path: s.finalPath })) };
}

/**
 * A later manifest must be the same snapshot with the same files first: a file the master
 * announced as finished never changes. Another snapshot id means the build was replaced.
 */
function checkExtends(previous: Manifest, next: Manifest): void {
  if (next.snapshotId !== previous.snapshotId) {
    throw new SyncProxyError('SNAPSHOT_CHANGED', `the master now builds snapshot ${next.snapshotId}, copying ${previous.snapshotId}`, { details: { newSnapshotId: next.snapshotId } });
  }
  const same = next.logId === previous.logId && next.logOffset === previous.logOffset && next.formatVersion === previous.formatVersion && next.files.length >= previous.files.length;
  const changed = previous.files.find((f, i) => next.files[i]?.name !== f.name || next.files[i].size !== f.size || next.files[i].crc32c !== f.crc32c);
  if (!same || changed) {
    throw new SyncProxyError('MALFORMED_RESPONSE', `the master's manifest of snapshot ${next.snapshotId} does not extend the one it sent before${changed ? ` (${changed.name} differs)` : ''}`);
  }
}

/** Keeps the staging dir only for the same master and snapshot; anything else is wiped. */
async function prepareStaging(store: ProgressStore, root: string, dir: string, manifest: Manifest, masterRunId: string, logger: Logger): Promise<ProgressRecord> {
  const previous = await store.load();
  const same = previous !== undefined && previous.snapshotId === manifest.snapshotId && previous.masterRunId === masterRunId;
  try {
    if (!same) {
      if (previous) logger.info({ previousSnapshot: previous.snapshotId }, 'different snapshot than the persisted progress: wiping the staging directory');
      await fsp.rm(root, { recursive: true, force: true });
    } else {
      // Other snapshots' leftovers only take disk space.
      for (const entry of await fsp.readdir(root).catch(() => [] as string[])) {
        if (entry !== manifest.snapshotId) await fsp.rm(path.join(root, entry), { recursive: true, force: true });
      }
    }
    await fsp.mkdir(dir, { recursive: true });
  } catch (err) {
    throw toSyncProxyError(err, 'IO_ERROR', `preparing ${dir}`);
  }
  return same ? { ...previous, files: { ...previous.files } } : { version: 1, masterRunId, snapshotId: manifest.snapshotId, files: {} };
}

/** Decides where a file's copy starts: complete (re-verified from disk), resumed, or from 0. */
async function restoreFile(state: FileState, saved: FileProgress | undefined, logger: Logger): Promise<void> {
  const { meta } = state;
  const matches = saved !== undefined && saved.size === meta.size && saved.crc32c === meta.crc32c;
  try {
    if (matches && saved.complete) {
      const stat = await fsp.stat(state.finalPath).catch(() => undefined);
      if (stat && stat.size === meta.size && (await crcOfFile(state.finalPath)) === meta.crc32c) {
        state.contiguous = state.persisted = meta.size;
        logger.info({ file: meta.name, bytes: meta.size }, 'file already complete: re-verified from disk, not fetched again');
        return;
      }
      logger.warn({ file: meta.name }, 'file marked complete failed its re-verification: fetching it again');
    } else if (matches && saved.verifiedBytes > 0) {
      const stat = await fsp.stat(state.partialPath).catch(() => undefined);
      if (stat && stat.size >= saved.verifiedBytes && saved.verifiedBytes <= meta.size) {
        state.handle = await fsp.open(state.partialPath, 'r+');
        // Bytes past the verified offset were never proven: drop them.
        await state.handle.truncate(saved.verifiedBytes);
        state.contiguous = state.persisted = saved.verifiedBytes;
        logger.info({ file: meta.name, from: saved.verifiedBytes, size: meta.size }, 'resuming file from its verified offset');
        return;
      }
    }
    await fsp.rm(state.finalPath, { force: true });
    await fsp.rm(state.partialPath, { force: true });
  } catch (err) {
    throw toSyncProxyError(err, 'IO_ERROR', `restoring ${meta.name}`);
  }
}

async function exists(file: string): Promise<boolean> {
  return fsp.stat(file).then(() => true, () => false);
}

type AddFiles = (states: FileState[]) => Promise<void>;

class CopyRun {
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
    private readonly options: CopierOptions,
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
    for (const state of states) {
      this.states.push(state);
      if (this.record.files[state.meta.name].complete) continue;
      for (let start = state.contiguous; start < state.meta.size; start += this.options.chunkSize) {
        this.jobs.push({ file: state, start, end: Math.min(state.meta.size, start + this.options.chunkSize) });
        state.chunksLeft++;
      }
    }
    // Through persist(): one save of progress.json at a time.
    await this.persist(true);
    this.wake();
    // Files with no chunk left (empty, or fully written before a crash) are finished first.
    for (const state of states) {
      if (!this.record.files[state.meta.name].complete && state.chunksLeft === 0) await this.finishFile(state);
      else if (this.record.files[state.meta.name].complete) this.verified(state);
    }
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
      await syncDir(path.dirname(file.finalPath));
    } catch (err) {
      throw toSyncProxyError(err, 'IO_ERROR', `finishing ${meta.name}`);
    }
    file.contiguous = file.persisted = meta.size;
    this.record.files[meta.name] = { size: meta.size, crc32c: meta.crc32c, verifiedBytes: meta.size, complete: true };
    this.options.stats.filesDone++;
    this.logger.debug({ file: meta.name, bytes: meta.size }, 'file copied and verified');
    await this.persist(true);
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

async function syncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

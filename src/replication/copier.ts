/**
 * Copies one snapshot's files from the master into the staging directory: parallel workers,
 * positioned writes, the CRC32C and snapshot id of every chunk checked, a throttle shared by the
 * workers, per-file CRC32C from disk, fsync and atomic rename, and progress persisted so a
 * restarted process resumes (DESIGN.md §5, invariants 3, 6, 7, 8). Memory: at most one chunk per
 * worker; a file is never held whole. The manifest may be partial (the master still building): the
 * copy starts with the files it lists and asks for the rest while it runs (the workers are in
 * ./copy-run.ts).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { SyncProxyError, toSyncProxyError } from '../errors';
import type { RetryPolicy } from '../retry';
import type { Manifest, ManifestFile } from '../source/types';
import { CopyRun, FileState } from './copy-run';
import { FileProgress, ProgressRecord, ProgressStore, progressPath, resolvePlainName, stagingRoot, validateManifest } from './staging';
import type { ReplicaIdentity, SyncClientLike } from './sync-api';
import { Throttle } from './throttle';
import { crcOfFile, raceAbort } from './util';

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

/** `M`: the manifest as the caller has it (the sync passes the master's answer with its offsets). */
export interface CopierOptions<M extends Manifest = Manifest> {
  client: SyncClientLike;
  /** Possibly partial (the master still building): then `nextManifest` brings the rest. */
  manifest: M;
  /**
   * The master's next manifest of the same snapshot with more than `knownFiles` files, partial or
   * complete (GetMeta with known_files). Needed when `manifest` is partial.
   */
  nextManifest?: (knownFiles: number) => Promise<M>;
  /** Each manifest that added files, after it was checked to extend the previous one. */
  onManifest?: (manifest: M) => void;
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

export interface CopiedSnapshot<M extends Manifest = Manifest> {
  snapshotId: string;
  /** The complete manifest (the last one received). */
  manifest: M;
  dir: string;
  /** Final paths in manifest order, each verified by size and whole-file CRC32C. */
  files: Array<ManifestFile & { path: string }>;
}

export async function copySnapshot<M extends Manifest>(options: CopierOptions<M>): Promise<CopiedSnapshot<M>> {
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

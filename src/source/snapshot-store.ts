/**
 * The snapshots of this proxy: one shared build at a time, the current snapshot while it is
 * fresh, validated chunk reads for the sync service, and the write gate the data path calls.
 *
 * At start every snapshot on disk is removed: the write log got a new id, so none of them can be
 * continued by a replica; `*.tmp` directories are unfinished builds and are never served.
 */
import type { NodeProfile } from '../backend/node-profile';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { SyncProxyError, describeError, toSyncProxyError } from '../errors';
import type { NodeAddress } from './key-reader';
import { BuildStatus, SnapshotBuilder } from './snapshot-builder';
import type { Manifest, ManifestFile, OrderedPath, SnapshotStoreView, WriteGate, WriteLogView, WriteScope } from './types';

export interface SnapshotStoreOptions {
  /** `<dataDir>/snapshots` */
  dir: string;
  node: NodeAddress;
  fileSize: number;
  maxAgeMs: number;
  maxTrackedKeys: number;
  log: WriteLogView;
  ordered: OrderedPath;
  logger: Logger;
  /** The node's probed profile (undefined until the link is up): whether streams can be copied. */
  nodeProfile?: () => NodeProfile | undefined;
}

export const MAX_CHUNK_LENGTH = 64 * 1024 * 1024;
/**
 * Chunk reads served at once; more wait their turn (reading the next one overlaps sending this
 * one). Each holds a chunk buffer and, until it is sent, its serialized copy: with a build running
 * in the same process (a replica copying while the master still builds), this keeps the proxy's
 * memory bounded whatever the replicas' worker counts.
 */
export const MAX_CONCURRENT_CHUNK_READS = 1;
/** A snapshot that is not current and was not read for this long is removed. */
export const UNUSED_SNAPSHOT_TTL_MS = 60_000;
const SWEEP_INTERVAL_MS = 10_000;

interface Held {
  manifest: Manifest;
  dir: string;
  lastReadAt: number;
}

export type StoreBuildStatus = BuildStatus | { state: 'idle'; lastError?: string };

/** Builds since the proxy started (INFO's snapshot_builds, /metrics). */
export interface BuildTotals {
  /** Builds finished with a snapshot. */
  builds: number;
  /** Builds that ended with an error (aborted at stop included). */
  failures: number;
  /** The last successful build: wall time, bytes of its files, keys (records) in it. */
  last?: { durationMs: number; bytes: number; keys: number; finishedAtMs: number };
}

export class SnapshotStore implements SnapshotStoreView, WriteGate {
  private readonly held = new Map<string, Held>();
  private current: Held | undefined;
  private builder: SnapshotBuilder | undefined;
  private building: Promise<Manifest> | undefined;
  private lastError: string | undefined;
  private readonly totals: BuildTotals = { builds: 0, failures: 0 };
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Callers waiting for the running build to finish one more file (partial manifests). */
  private readonly fileWaiters = new Set<() => void>();
  private chunkReads = 0;
  private readonly chunkQueue: Array<() => void> = [];
  private closed = false;
  private readonly logger: Logger;

  constructor(private readonly options: SnapshotStoreOptions) {
    this.logger = options.logger.child({ component: 'snapshot-store' });
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.options.dir, { recursive: true });
    for (const name of await fsp.readdir(this.options.dir)) {
      await fsp.rm(path.join(this.options.dir, name), { recursive: true, force: true });
      this.logger.info({ name }, 'removed a snapshot of a previous run');
    }
    this.sweepTimer = setInterval(() => void this.sweep(), SWEEP_INTERVAL_MS);
    this.sweepTimer.unref();
  }

  currentSnapshotId(): string | undefined {
    return this.current?.manifest.snapshotId;
  }

  /** A build is running: writes must pass beforeWrite. */
  get isBuilding(): boolean {
    return this.builder !== undefined;
  }

  beforeWrite(scope: WriteScope): Promise<void> | null {
    return this.builder ? this.builder.beforeWrite(scope) : null;
  }

  buildStatus(): StoreBuildStatus {
    return this.builder ? this.builder.status() : { state: 'idle', lastError: this.lastError };
  }

  buildTotals(): Readonly<BuildTotals> {
    return this.totals;
  }

  async ensureSnapshot(waitMs: number, knownFiles?: number, snapshotId?: string): Promise<Manifest> {
    if (this.closed) throw new SyncProxyError('SNAPSHOT_BUILD_FAILED', 'snapshot store closed');
    if (snapshotId !== undefined) {
      // A replica continuing a snapshot it copies: that one, however old, never a newer one.
      const held = this.held.get(snapshotId);
      if (held) {
        held.lastReadAt = Date.now();
        return held.manifest;
      }
      if (!this.building || this.builder?.snapshotId !== snapshotId) {
        throw new SyncProxyError('SNAPSHOT_NOT_FOUND', `snapshot '${snapshotId.slice(0, 80)}' is neither held nor building (current: ${this.currentSnapshotId() ?? 'none'})`, { details: { current: this.currentSnapshotId() } });
      }
    } else if (this.current && this.isFresh(this.current.manifest)) {
      this.current.lastReadAt = Date.now();
      return this.current.manifest;
    }
    const build = this.building ?? this.startBuild();
    const builder = this.builder;
    let timer: NodeJS.Timeout | undefined;
    let onFile: (() => void) | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), Math.max(0, waitMs))));
    // Only a caller that accepts a partial manifest waits for files.
    const moreFiles = new Promise<Manifest>((resolve) => {
      if (knownFiles === undefined) return;
      onFile = () => {
        const partial = this.builder === builder ? builder?.partialManifest() : undefined;
        if (partial && partial.files.length > knownFiles) resolve(partial);
      };
      this.fileWaiters.add(onFile);
      onFile();
    });
    try {
      const result = await Promise.race([build, moreFiles, timeout]);
      if (result === 'timeout') {
        const status = this.buildStatus();
        throw new SyncProxyError('SNAPSHOT_BUILDING', `snapshot build still running: ${JSON.stringify(status)}`, { details: { ...status } });
      }
      if (result.partial) this.logger.debug({ snapshotId: result.snapshotId, files: result.files.length, knownFiles }, 'answered a partial manifest');
      return result;
    } finally {
      clearTimeout(timer);
      if (onFile) this.fileWaiters.delete(onFile);
    }
  }

  async readChunk(snapshotId: string, file: string, offset: number, length: number): Promise<{ data: Buffer; eof: boolean }> {
    // A waiting read inherits the slot of the one that ends, so a newcomer cannot slip in between.
    if (this.chunkReads >= MAX_CONCURRENT_CHUNK_READS) await new Promise<void>((resolve) => this.chunkQueue.push(resolve));
    else this.chunkReads++;
    try {
      return await this.readChunkNow(snapshotId, file, offset, length);
    } finally {
      const next = this.chunkQueue.shift();
      if (next) next();
      else this.chunkReads--;
    }
  }

  private async readChunkNow(snapshotId: string, file: string, offset: number, length: number): Promise<{ data: Buffer; eof: boolean }> {
    const found = this.locate(snapshotId);
    const building = this.building;
    try {
      return await this.readFrom(found, snapshotId, file, offset, length);
    } catch (err) {
      if (!(err instanceof SyncProxyError && err.code === 'SNAPSHOT_NOT_FOUND' && found.building)) throw err;
      // The build is finishing: its directory is renamed into place before the snapshot is held.
      // Once the build has settled the snapshot is held (read it there) or the build failed.
      await building?.catch(() => undefined);
      const again = this.locate(snapshotId);
      if (again.dir === found.dir) throw err;
      return this.readFrom(again, snapshotId, file, offset, length);
    }
  }

  /** A held snapshot, or the running build (its finished files only). */
  private locate(snapshotId: string): { dir: string; files: readonly ManifestFile[]; building: boolean; held?: Held } {
    const held = typeof snapshotId === 'string' ? this.held.get(snapshotId) : undefined;
    if (held) return { dir: held.dir, files: held.manifest.files, building: false, held };
    const builder = this.builder;
    const partial = builder?.snapshotId === snapshotId ? builder.partialManifest() : undefined;
    if (builder && partial) return { dir: builder.buildDir, files: partial.files, building: true };
    throw new SyncProxyError('SNAPSHOT_NOT_FOUND', `snapshot '${String(snapshotId).slice(0, 80)}' is not held (current: ${this.currentSnapshotId() ?? 'none'})`, { details: { current: this.currentSnapshotId() } });
  }

  private async readFrom(found: { dir: string; files: readonly ManifestFile[]; held?: Held }, snapshotId: string, file: string, offset: number, length: number): Promise<{ data: Buffer; eof: boolean }> {
    if (typeof file !== 'string' || file === '' || /[/\\\0]/.test(file) || file.includes('..')) {
      throw new SyncProxyError('HOSTILE_FILE_NAME', `refused file name ${JSON.stringify(String(file).slice(0, 200))}`);
    }
    const entry = found.files.find((f) => f.name === file);
    if (!entry) throw new SyncProxyError('FILE_NOT_IN_MANIFEST', `${file} is not a file of snapshot ${snapshotId}`);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > entry.size) {
      throw new SyncProxyError('INVALID_REQUEST', `offset ${offset} outside 0..${entry.size} of ${file}`);
    }
    if (!Number.isSafeInteger(length) || length <= 0 || length > MAX_CHUNK_LENGTH) {
      throw new SyncProxyError('INVALID_REQUEST', `length ${length} outside 1..${MAX_CHUNK_LENGTH}`);
    }
    const full = path.join(found.dir, file);
    if (path.dirname(full) !== found.dir) throw new SyncProxyError('HOSTILE_FILE_NAME', `refused file name ${JSON.stringify(file)}`);
    if (found.held) found.held.lastReadAt = Date.now();
    const want = Math.min(length, entry.size - offset);
    const data = Buffer.allocUnsafe(want);
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(full, 'r');
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(data, got, want - got, offset + got);
        if (bytesRead === 0) throw new SyncProxyError('SIZE_MISMATCH', `${file} is shorter than its manifest size ${entry.size}`);
        got += bytesRead;
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new SyncProxyError('SNAPSHOT_NOT_FOUND', `snapshot ${snapshotId} was removed`, { cause: err });
      }
      throw toSyncProxyError(err, 'IO_ERROR', `reading ${file}`);
    } finally {
      await fh?.close();
    }
    return { data, eof: offset + want >= entry.size };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.builder?.abort('snapshot store closed');
    await this.building?.catch(() => undefined);
  }

  /**
   * A complete snapshot of log `logId` at offset `minOffset` or later, for online verification:
   * the current one when it is recent enough, else a new build (SNAPSHOT_BUILDING past `waitMs`).
   * LOG_OFFSET_GONE when `logId` is not this log.
   */
  async snapshotAtLeast(logId: string, minOffset: number, waitMs: number): Promise<Manifest> {
    const log = this.options.log;
    if (logId !== log.logId) throw new SyncProxyError('LOG_OFFSET_GONE', `log ${logId.slice(0, 80)} is not this master's current log ${log.logId}`);
    if (minOffset > log.lastOffset) throw new SyncProxyError('INVALID_REQUEST', `offset ${minOffset} is past this master's last offset ${log.lastOffset}`);
    const current = this.current?.manifest;
    if (current && current.logId === logId && current.logOffset >= minOffset) {
      this.current!.lastReadAt = Date.now();
      return current;
    }
    // A running build began at an offset we cannot see yet: wait for it, then judge its manifest.
    if (this.building) await this.ensureSnapshot(waitMs);
    const built = this.current?.manifest;
    if (built && built.logId === logId && built.logOffset >= minOffset) return built;
    this.current = undefined; // too old for this caller: the next ensureSnapshot builds anew
    return this.ensureSnapshot(waitMs);
  }

  /** The files of a held snapshot, in manifest order (SNAPSHOT_NOT_FOUND when not held). */
  snapshotFiles(snapshotId: string): Array<{ name: string; path: string }> {
    const held = this.held.get(snapshotId);
    if (!held) throw new SyncProxyError('SNAPSHOT_NOT_FOUND', `snapshot '${snapshotId.slice(0, 80)}' is not held (current: ${this.currentSnapshotId() ?? 'none'})`);
    held.lastReadAt = Date.now();
    return held.manifest.files.map((f) => ({ name: f.name, path: path.join(held.dir, f.name) }));
  }

  private isFresh(m: Manifest): boolean {
    const log = this.options.log;
    return m.logId === log.logId && m.logOffset >= log.firstOffset - 1 && Date.now() - m.createdAtMs < this.options.maxAgeMs;
  }

  private startBuild(): Promise<Manifest> {
    const snapshotId = `${Date.now()}-${randomBytes(6).toString('hex')}`;
    const builder = new SnapshotBuilder({
      dir: this.options.dir,
      snapshotId,
      node: this.options.node,
      fileSize: this.options.fileSize,
      maxTrackedKeys: this.options.maxTrackedKeys,
      streamsCopyable: this.options.nodeProfile?.()?.streamsExact ?? true,
      log: this.options.log,
      ordered: this.options.ordered,
      logger: this.logger,
      onFileDone: () => {
        for (const wake of [...this.fileWaiters]) wake();
      },
    });
    // The gate is live from here on: builder.run() takes its barrier after this assignment.
    this.builder = builder;
    const startedAt = Date.now();
    const build = builder.run().then(
      (manifest) => {
        this.totals.builds++;
        this.totals.last = { durationMs: Date.now() - startedAt, bytes: manifest.totalBytes, keys: manifest.dbs.reduce((n, d) => n + d.records, 0), finishedAtMs: Date.now() };
        const held: Held = { manifest, dir: path.join(this.options.dir, snapshotId), lastReadAt: Date.now() };
        this.held.set(snapshotId, held);
        this.current = held;
        this.lastError = undefined;
        return manifest;
      },
      (err: unknown) => {
        this.totals.failures++;
        this.lastError = describeError(err);
        throw err;
      },
    );
    this.building = build.finally(() => {
      if (this.builder === builder) this.builder = undefined;
      this.building = undefined;
    });
    this.building.catch(() => undefined); // callers observe the failure through ensureSnapshot
    return this.building;
  }

  /** Removes snapshots that are not current and were not read for UNUSED_SNAPSHOT_TTL_MS. */
  async sweep(now = Date.now()): Promise<void> {
    for (const [id, held] of [...this.held]) {
      if (held === this.current || now - held.lastReadAt < UNUSED_SNAPSHOT_TTL_MS) continue;
      this.held.delete(id);
      await fsp.rm(held.dir, { recursive: true, force: true }).catch((err) => this.logger.error({ err: describeError(err), id }, 'removing an old snapshot failed'));
      this.logger.info({ snapshotId: id }, 'removed an unused snapshot');
    }
  }
}

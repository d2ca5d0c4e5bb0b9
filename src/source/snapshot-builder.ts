/**
 * One snapshot build and its copy-on-write gate.
 *
 * Exactness: the build starts at `logOffset = await ordered.barrier()` (the gate is installed
 * before, and writes arriving before the barrier resolves are held until it has). From then on
 * every write calls `beforeWrite` before it is dispatched. W is the set of keys written since the
 * start. A key's first write waits until its pre-write state is in the snapshot: either the
 * scanner is reading it right now (wait for that read), or it is read at once on a priority
 * connection. The scanner skips keys already in W. FLUSHDB waits for the scanner to finish that
 * db, FLUSHALL/SWAPDB for every db. So every record holds the key's state at `logOffset`, and
 * replaying the log from `logOffset + 1` on top of the snapshot reproduces the node.
 *
 * A failed build never blocks writes: every waiting write is released (the snapshot is dropped).
 */
import type { Logger } from 'pino';
import { SyncProxyError, describeError, toSyncProxyError } from '../errors';
import { NodeErrorReply, Reply, bulkItems } from '../resp/reply-reader';
import { PROBE_KEY_PREFIX } from '../backend/node-profile';
import { dbsWithoutExpiries } from './expiry-census';
import { readFunctionLibraries } from './function-libraries';
import { KeyReader, NodeAddress, WithSink } from './key-reader';
import { InFlightReads, WrittenKeys, keyHash } from './read-groups';
import { SnapshotWriter } from './snapshot-writer';
import { Manifest, OrderedPath, SNAPSHOT_FORMAT_VERSION, WriteGate, WriteLogView, WriteScope } from './types';

export interface SnapshotBuilderOptions {
  /** `<dataDir>/snapshots` */
  dir: string;
  snapshotId: string;
  node: NodeAddress;
  fileSize: number;
  maxTrackedKeys: number;
  log: WriteLogView;
  ordered: OrderedPath;
  logger: Logger;
  /** One more file is finished on disk: a partial manifest grew. */
  onFileDone?: () => void;
  /** False where the node cannot give streams back as written (see KeyReader.streamsCopyable). */
  streamsCopyable?: boolean;
}

export type BuildState = 'starting' | 'scanning' | 'finishing' | 'done' | 'failed';

export interface BuildStatus {
  snapshotId: string;
  state: BuildState;
  keysRead: number;
  bytes: number;
  elapsedMs: number;
  /** The db the scanner is in. */
  db?: number;
  logOffset?: number;
  error?: string;
}

const PROBE_PREFIX = Buffer.from(PROBE_KEY_PREFIX);
const SCAN_COUNT = 1000;
/** Keys per batch at most, and the first-page bytes a batch aims at (memory in flight). */
const BATCH = 1000;
const BATCH_BYTES = 2 * 1024 * 1024;
const MIN_BATCH = 16;
const PIPELINE_DEPTH = 6;

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
}
function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

export class SnapshotBuilder implements WriteGate {
  private state: BuildState = 'starting';
  private readonly startedAt = Date.now();
  private readonly writer: SnapshotWriter;
  private readonly scanner: KeyReader;
  private readonly priority: KeyReader;
  private readonly logger: Logger;
  private readonly started = deferred();
  private readonly allScanned = deferred();
  private readonly dbScanned = new Map<number, Deferred>();
  private readonly written = new WrittenKeys();
  private readonly reading = new InFlightReads();
  private readingFinished = false;
  private dbCount = Infinity;
  private currentDb: number | undefined;
  private logOffset: number | undefined;
  private logId = '';
  private createdAtMs = 0;
  private failure: SyncProxyError | undefined;
  private lock: Promise<void> = Promise.resolve();
  /** First-page bytes per key, averaged over recent batches (starts at "small keys"). */
  private bytesPerKey = 256;

  constructor(private readonly options: SnapshotBuilderOptions) {
    this.logger = options.logger.child({ component: 'snapshot-builder', snapshotId: options.snapshotId });
    this.writer = new SnapshotWriter({ dir: options.dir, snapshotId: options.snapshotId, fileSize: options.fileSize, logger: this.logger, onFileDone: options.onFileDone });
    this.scanner = new KeyReader(options.node, this.logger);
    this.priority = new KeyReader(options.node, this.logger);
    this.scanner.streamsCopyable = this.priority.streamsCopyable = options.streamsCopyable ?? true;
  }

  status(): BuildStatus {
    return {
      snapshotId: this.options.snapshotId,
      state: this.state,
      keysRead: this.scanner.keysRead + this.priority.keysRead,
      bytes: this.writer.bytes,
      elapsedMs: Date.now() - this.startedAt,
      db: this.currentDb,
      logOffset: this.logOffset,
      error: this.failure ? describeError(this.failure) : undefined,
    };
  }

  get snapshotId(): string {
    return this.options.snapshotId;
  }

  /** Where the running build's finished files are (they move to their final place at the end). */
  get buildDir(): string {
    return this.writer.buildDir;
  }

  /**
   * The files finished so far, once the snapshot's log offset is known (types.ts `partial`);
   * undefined before that and after a failure.
   */
  partialManifest(): Manifest | undefined {
    if (this.logOffset === undefined || this.failure || (this.state !== 'scanning' && this.state !== 'finishing')) return undefined;
    const files = this.writer.finishedFiles;
    return {
      formatVersion: SNAPSHOT_FORMAT_VERSION,
      snapshotId: this.options.snapshotId,
      logId: this.logId,
      logOffset: this.logOffset,
      createdAtMs: this.createdAtMs,
      files,
      dbs: [],
      totalBytes: files.reduce((sum, f) => sum + f.size, 0),
      partial: true,
    };
  }

  /** Builds the snapshot; the gate must already be installed in the data path. */
  async run(): Promise<Manifest> {
    try {
      await this.writer.open();
      const logOffset = await this.options.ordered.barrier();
      const logId = this.options.log.logId;
      const createdAtMs = Date.now();
      this.logId = logId;
      this.createdAtMs = createdAtMs;
      // Writes wait for `started`: the node is exactly at logOffset while this census runs.
      const dbs = await this.discoverDbs();
      const withoutExpiries = await dbsWithoutExpiries(await this.scanner.connection(0), dbs.length);
      // Function libraries are node state outside every db: read at logOffset, loaded first.
      const functions = await readFunctionLibraries(await this.scanner.connection(0));
      if (functions) this.writer.functions(functions);
      this.scanner.dbsWithoutExpiries = withoutExpiries;
      this.priority.dbsWithoutExpiries = withoutExpiries;
      this.logOffset = logOffset;
      this.state = 'scanning';
      this.started.resolve();
      this.logger.info({ logOffset, logId, dbsWithoutExpiries: withoutExpiries.size }, 'snapshot build started');
      for (const db of dbs) {
        this.currentDb = db;
        await this.scanDb(db);
        this.dbDeferred(db).resolve();
      }
      this.readingFinished = true;
      this.allScanned.resolve();
      await this.reading.settled();
      await this.lock;
      if (this.failure) throw this.failure;
      if (this.options.log.logId !== logId) throw new SyncProxyError('SNAPSHOT_BUILD_FAILED', 'the write log was reset during the build');
      this.state = 'finishing';
      const manifest = await this.writer.finish({ logId, logOffset, createdAtMs });
      this.state = 'done';
      this.logger.info({ files: manifest.files.length, bytes: manifest.totalBytes, dbs: manifest.dbs, elapsedMs: Date.now() - this.startedAt }, 'snapshot build complete');
      return manifest;
    } catch (err) {
      this.fail(err);
      await this.scanner.close();
      await this.priority.close();
      await this.lock;
      await this.writer.abort().catch((e) => this.logger.error({ err: describeError(e) }, 'removing the failed build failed'));
      this.logger.error({ err: describeError(this.failure) }, 'snapshot build failed');
      throw this.failure;
    } finally {
      await this.scanner.close();
      await this.priority.close();
      this.releaseAll();
    }
  }

  /** Stops the build (e.g. the proxy shuts down); `run` rejects with SNAPSHOT_BUILD_FAILED. */
  abort(reason: string): void {
    this.fail(new SyncProxyError('SNAPSHOT_BUILD_FAILED', reason));
    void this.scanner.close();
    void this.priority.close();
  }

  beforeWrite(scope: WriteScope): Promise<void> | null {
    if (this.state === 'starting') return this.started.promise.then(() => this.gate(scope) ?? undefined);
    return this.gate(scope);
  }

  private gate(scope: WriteScope): Promise<void> | null {
    if (this.failure || this.state !== 'scanning') return null;
    if (scope.kind !== 'all' && scope.db >= this.dbCount) {
      // The node refused CONFIG GET databases and the scanner covers fewer dbs than are in use.
      this.fail(new SyncProxyError('SNAPSHOT_BUILD_FAILED', `a write to db ${scope.db} but the snapshot covers ${this.dbCount} db(s)`));
      return null;
    }
    if (scope.kind === 'all') return this.allScanned.promise.then(() => this.readsSettled());
    if (scope.kind === 'db') return this.dbDeferred(scope.db).promise.then(() => this.readsSettled(scope.db));
    const waits: Promise<void>[] = [];
    for (const key of scope.keys) {
      const hash = keyHash(key);
      const inFlight = this.reading.holding(scope.db, key, hash);
      if (inFlight.length > 0) {
        if (!this.track(scope.db, key, hash)) return null;
        for (const group of inFlight) waits.push(group.promise);
      } else if (!this.readingFinished && !this.dbDeferredDone(scope.db) && !this.written.has(scope.db, key, hash)) {
        if (!this.track(scope.db, key, hash)) return null;
        waits.push(this.priorityRead(scope.db, key, hash));
      }
    }
    return waits.length === 0 ? null : Promise.all(waits).then(() => undefined);
  }

  private track(db: number, key: Buffer, hash: number): boolean {
    if (this.written.has(db, key, hash)) return true;
    if (this.written.size >= this.options.maxTrackedKeys) {
      this.fail(new SyncProxyError('SNAPSHOT_BUILD_FAILED', `more than ${this.options.maxTrackedKeys} distinct keys were written during the snapshot build (snapshot.maxTrackedKeys)`));
      return false;
    }
    this.written.add(db, key, hash);
    return true;
  }

  private priorityRead(db: number, key: Buffer, hash: number): Promise<void> {
    const group = this.reading.add(db, [key], [hash]);
    this.priority
      .readKeys(db, [key], this.withSink)
      .catch((err) => this.fail(err))
      .finally(() => this.reading.finish(group));
    return group.promise;
  }

  /**
   * SCAN pages are fetched one ahead, and up to PIPELINE_DEPTH batches are read at once (their
   * round trips to the node overlap the writing of the previous batch's records).
   */
  private async scanDb(db: number): Promise<void> {
    const conn = await this.scanner.connection(db);
    const scanPage = (cursor: string): Promise<[string, Buffer[]]> => conn.call(['SCAN', cursor, 'COUNT', String(SCAN_COUNT)]).then(scanReply);
    const inFlight: Promise<void>[] = [];
    let page = scanPage('0');
    page.catch(() => undefined);
    for (;;) {
      if (this.failure) break;
      const [next, keys] = await page;
      if (next !== '0') {
        page = scanPage(next);
        page.catch(() => undefined);
      }
      for (let i = 0; i < keys.length; ) {
        const size = this.batchSize();
        const batch = this.scanBatch(db, keys.slice(i, i + size));
        i += size;
        batch.catch(() => undefined);
        inFlight.push(batch);
        if (inFlight.length >= PIPELINE_DEPTH) await inFlight.shift();
      }
      if (next === '0') break;
    }
    await Promise.all(inFlight);
    if (this.failure) throw this.failure;
  }

  /**
   * Keys in the next batch: BATCH, fewer when keys are big, so the replies held by the batches in
   * flight stay near PIPELINE_DEPTH * BATCH_BYTES (a batch is sized before its replies are known).
   */
  private batchSize(): number {
    return Math.max(MIN_BATCH, Math.min(BATCH, Math.floor(BATCH_BYTES / Math.max(1, this.bytesPerKey))));
  }

  /**
   * Reads a batch of scanned keys. Keys in W are skipped: their state at the snapshot's offset
   * was captured before their first write. A key SCAN returns twice (while the node rehashes) may
   * be read twice: a duplicate record, which the loader applies idempotently.
   */
  private async scanBatch(db: number, keys: Buffer[]): Promise<void> {
    // Check W and mark in the same tick: a write either sees the mark (and waits) or was first.
    const todo: Buffer[] = [];
    const hashes: number[] = [];
    for (const key of keys) {
      // The node-profile probe's scratch key is never data (node-profile.ts).
      if (key.length > PROBE_PREFIX.length && key.subarray(0, PROBE_PREFIX.length).equals(PROBE_PREFIX)) continue;
      const hash = keyHash(key);
      if (this.written.has(db, key, hash)) continue;
      todo.push(key);
      hashes.push(hash);
    }
    if (todo.length === 0) return;
    const group = this.reading.add(db, todo, hashes);
    try {
      const bytes = await this.scanner.readKeys(db, todo, this.withSink);
      // Moving average of first-page bytes per key: big values make batches smaller.
      this.bytesPerKey = 0.7 * this.bytesPerKey + 0.3 * (bytes / todo.length);
    } finally {
      this.reading.finish(group);
    }
  }

  /**
   * Exclusive use of the writer for one batch of records (a big key's record spans awaits), then
   * waits for the disk when too much is queued.
   */
  private withSink: WithSink = (fn) => {
    const run = this.lock.then(async () => {
      if (this.failure) throw this.failure;
      const result = await fn(this.writer);
      await this.writer.drain();
      return result;
    });
    this.lock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  };

  private readsSettled(db?: number): Promise<void> {
    return this.reading.settled(db);
  }

  private dbDeferred(db: number): Deferred & { done?: boolean } {
    let d = this.dbScanned.get(db) as (Deferred & { done?: boolean }) | undefined;
    if (!d) {
      const inner = deferred();
      const created: Deferred & { done?: boolean } = {
        promise: inner.promise,
        resolve: () => {
          created.done = true;
          inner.resolve();
        },
      };
      d = created;
      this.dbScanned.set(db, d);
    }
    return d;
  }

  private dbDeferredDone(db: number): boolean {
    return (this.dbScanned.get(db) as { done?: boolean } | undefined)?.done === true;
  }

  private async discoverDbs(): Promise<number[]> {
    const conn = await this.scanner.connection(0);
    let count = 1;
    const reply = await conn.call(['CONFIG', 'GET', 'databases']);
    if (reply instanceof NodeErrorReply) {
      this.logger.info({ err: reply.message }, 'CONFIG GET databases refused; assuming one database');
    } else {
      const value = bulkItems(reply)?.[1];
      const n = Buffer.isBuffer(value) ? Number(value.toString('latin1')) : Number.NaN;
      if (Number.isInteger(n) && n >= 1) count = n;
      else this.logger.info('CONFIG GET databases gave no count; assuming one database');
    }
    this.dbCount = count;
    return Array.from({ length: count }, (_, i) => i);
  }

  private fail(err: unknown): void {
    if (!this.failure) {
      const e = toSyncProxyError(err, 'SNAPSHOT_BUILD_FAILED', 'snapshot build');
      // UNSUPPORTED_DATA stays itself: the replica must see that retrying cannot help.
      this.failure = e.code === 'SNAPSHOT_BUILD_FAILED' || e.code === 'UNSUPPORTED_DATA' ? e : new SyncProxyError('SNAPSHOT_BUILD_FAILED', `snapshot build failed: ${e.message}`, { cause: e });
    }
    this.state = 'failed';
    this.releaseAll();
  }

  /** Lets every waiting write go: after a failure or at the end, nothing is left to protect. */
  private releaseAll(): void {
    this.started.resolve();
    this.allScanned.resolve();
    for (const d of this.dbScanned.values()) d.resolve();
    this.reading.releaseAll();
  }
}

function scanReply(reply: Reply): [string, Buffer[]] {
  if (reply instanceof NodeErrorReply) throw new SyncProxyError('BACKEND_ERROR_REPLY', `SCAN failed on the node: ${reply.message}`);
  const [cursor, packedKeys] = Array.isArray(reply) && reply.length === 2 ? reply : [];
  const keys = packedKeys === undefined ? undefined : bulkItems(packedKeys);
  if (!Buffer.isBuffer(cursor) || !keys) throw new SyncProxyError('MALFORMED_RESPONSE', 'SCAN answered an unexpected reply shape');
  return [cursor.toString('latin1'), keys];
}

/**
 * Replaces the replica node's dataset with a copied snapshot: FLUSHALL, then every file in
 * manifest order (./load-file.ts), spread over load lanes by key (./load-lanes.ts), every reply
 * checked. Then counts are proven: records per db against the manifest, and the node's live key
 * count per db against the distinct keys loaded (DBSIZE on Redis; SCAN on Pika, whose DBSIZE is
 * not live).
 */
import type { Logger } from 'pino';
import { SyncProxyError, toSyncProxyError } from '../errors';
import { decodeReply } from '../resp/decode';
import { DbTally, LoadedKeys } from './load-batch';
import { LoadState, loadFile } from './load-file';
import { LoadBounds, LoadLanes, loadLaneCount } from './load-lanes';
import type { Manifest } from '../source/types';
import { ExpiryChoice, NodeProfile, withExpiryOverride } from '../backend/node-profile';
import { NodeAddress, NodePipeline, probeNodeAt } from './node-pipeline';
import { expectOk, errorText, integerOf } from './node-replies';

export interface LoaderOptions {
  node: NodeAddress;
  manifest: Manifest;
  /** Final file paths in manifest order (from the copier). */
  files: Array<{ name: string; path: string }>;
  logger: Logger;
  signal: AbortSignal;
  /** Called with the file bytes read so far (for progress). */
  onProgress?: (bytesRead: number) => void;
  maxInFlight?: number;
  /** Load lanes (--load-connections); 0 or absent = auto, by the node's kind. */
  connections?: number;
}

export interface DbLoadResult {
  db: number;
  records: number;
  distinctKeys: number;
  /** Distinct keys loaded with a TTL: they may have expired since. */
  volatileKeys: number;
  nodeKeys: number;
}

export interface LoadResult {
  dbs: DbLoadResult[];
  commands: number;
  /** What the replica node was found to do (expiries were applied in its form). */
  profile: NodeProfile;
  /** Connections the load went through. */
  connections: number;
}

/** How a SnapshotLoader connects: the node, and how much it may keep in flight there. */
export interface LoaderConnectOptions extends LoadBounds {
  node: NodeAddress;
  logger: Logger;
  signal: AbortSignal;
  /** Bytes per read of a snapshot file (one batch of node commands per lane each). */
  readBytes?: number;
  expiry?: ExpiryChoice;
  /** Load lanes; 0 or absent = auto (loadLaneCount). */
  connections?: number;
}

export async function loadSnapshot(options: LoaderOptions): Promise<LoadResult> {
  const { node, logger, signal, maxInFlight, connections } = options;
  const loader = await SnapshotLoader.connect({ node, logger, signal, maxInFlight, connections });
  try {
    await loader.begin(options.manifest, options.onProgress);
    for (const file of options.files) await loader.loadFile(file, options.signal);
    return await loader.finish();
  } finally {
    loader.close();
  }
}

/**
 * The load as steps, so a sync can load each file as soon as the copier has verified it while
 * later files are still being copied: `begin` (FLUSHALL), `loadFile` in manifest order, `finish`
 * (every reply checked, counts proven). The same lanes for its whole life: a `begin` after a
 * `drain` comes after everything sent before on every lane, so a new snapshot's FLUSHALL also
 * removes what an earlier (changed) snapshot loaded.
 */
export class SnapshotLoader {
  private manifest?: Manifest;
  private logger: Logger;
  private tallies = new Map<number, DbTally>();
  private state: LoadState = { commands: 0, bytes: 0, loaded: new LoadedKeys() };
  private onProgress?: (bytesRead: number) => void;
  private nextFile = 0;

  private constructor(private readonly lanes: LoadLanes, readonly profile: NodeProfile, private readonly baseLogger: Logger, private readonly readBytes?: number) {
    this.logger = baseLogger;
  }

  static async connect(options: LoaderConnectOptions): Promise<SnapshotLoader> {
    const { node, logger, signal } = options;
    try {
      // Probed before the load's FLUSHALL, so the load cannot disturb it; its kind sets the lanes.
      const profile = withExpiryOverride(await probeNodeAt(node, signal), options.expiry ?? 'auto');
      const lanes = await LoadLanes.open(node, loadLaneCount(options.connections ?? 0, profile), signal, options);
      logger.debug({ connections: lanes.count, product: profile.product }, 'loader connected');
      return new SnapshotLoader(lanes, profile, logger, options.readBytes);
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
    }
  }

  /** The snapshot `begin` started, if any. */
  get snapshotId(): string | undefined {
    return this.manifest?.snapshotId;
  }

  /** Load lanes (node connections) of this loader. */
  get connections(): number {
    return this.lanes.count;
  }

  /** FLUSHALL (after every command sent before it), then a load of `manifest` from its first file. */
  async begin(manifest: Manifest, onProgress?: (bytesRead: number) => void): Promise<void> {
    this.manifest = manifest;
    this.logger = this.baseLogger.child({ component: 'loader', snapshotId: manifest.snapshotId });
    this.tallies = new Map();
    this.state = { commands: 0, bytes: 0, loaded: new LoadedKeys() };
    this.onProgress = onProgress;
    this.nextFile = 0;
    try {
      await this.lanes.flushAll();
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
    }
  }

  /** A later manifest of the snapshot being loaded (a partial one grew, or became complete). */
  extend(manifest: Manifest): void {
    const current = this.manifest;
    if (!current || current.snapshotId !== manifest.snapshotId || manifest.files.length < current.files.length) {
      throw new SyncProxyError('INTERNAL', `manifest of ${manifest.snapshotId} does not extend the one being loaded (${current?.snapshotId ?? 'none'})`);
    }
    this.manifest = manifest;
  }

  /** Loads the next file in manifest order; `stop` ends the reading early (the load is then incomplete). */
  async loadFile(file: { name: string; path: string }, stop: AbortSignal): Promise<void> {
    const manifest = this.manifest;
    if (!manifest) throw new SyncProxyError('INTERNAL', `${file.name} loaded before the load began`);
    const expected = manifest.files[this.nextFile];
    if (!expected || expected.name !== file.name) throw new SyncProxyError('INTERNAL', `${file.name} loaded out of manifest order (expected ${expected?.name ?? 'no more files'})`);
    try {
      await loadFile(this.lanes, file, { manifest, signal: stop, onProgress: this.onProgress, readBytes: this.readBytes, profile: this.profile }, this.tallies, this.state);
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
    }
    this.nextFile++;
    this.logger.debug({ file: file.name }, 'file loaded');
  }

  /** Drops the begun load: FLUSHALL after everything sent before on every lane, no snapshot begun. */
  async discard(): Promise<void> {
    try {
      await this.lanes.flushAll();
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'discarding a partial load');
    }
    this.manifest = undefined;
    this.tallies = new Map();
    this.nextFile = 0;
  }

  /** Waits until every command sent so far, on every lane, is answered and checked. */
  async drain(): Promise<void> {
    try {
      await this.lanes.drain();
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
    }
  }

  /** Every file loaded: waits for every reply on every lane, then proves the counts. */
  async finish(): Promise<LoadResult> {
    const { lanes, profile, tallies, state } = this;
    const manifest = this.manifest;
    try {
      if (!manifest) throw new SyncProxyError('INTERNAL', 'load finished before it began');
      if (manifest.partial) throw new SyncProxyError('INTERNAL', 'load finished with a partial manifest');
      if (this.nextFile !== manifest.files.length) throw new SyncProxyError('INTERNAL', `load finished after ${this.nextFile} of ${manifest.files.length} files`);
      await lanes.drain();
      // Counted on the first lane, which then has another db selected.
      lanes.dbs[0] = -1;
      const manifestDbs = new Map(manifest.dbs.map((d) => [d.db, d.records]));
      for (const [db, tally] of tallies) {
        if (!manifestDbs.has(db) && tally.records > 0) throw new SyncProxyError('COUNT_MISMATCH', `db ${db}: ${tally.records} records loaded, the manifest lists none`);
      }
      const results: DbLoadResult[] = [];
      for (const [db, expected] of manifestDbs) {
        const tally = tallies.get(db) ?? { records: 0, distinct: 0, volatile: 0 };
        if (tally.records !== expected) throw new SyncProxyError('COUNT_MISMATCH', `db ${db}: ${tally.records} key records loaded, the manifest says ${expected}`);
        const nodeKeys = await countKeys(lanes.first, db, profile.dbsizeLive);
        const low = tally.distinct - tally.volatile;
        if (nodeKeys < low || nodeKeys > tally.distinct) {
          throw new SyncProxyError('COUNT_MISMATCH', `db ${db}: the node holds ${nodeKeys} keys after the load, expected ${low === tally.distinct ? low : `${low}..${tally.distinct}`} (${tally.distinct} distinct keys loaded, ${tally.volatile} with a TTL)`);
        }
        results.push({ db, records: tally.records, distinctKeys: tally.distinct, volatileKeys: tally.volatile, nodeKeys });
      }
      this.logger.info({ dbs: results, commands: state.commands, connections: lanes.count }, 'snapshot loaded and counts verified');
      return { dbs: results, commands: state.commands, profile, connections: lanes.count };
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
    }
  }

  close(): void {
    this.lanes.close();
  }
}

/** Live key count of one db: DBSIZE where it is live, else a full SCAN (Pika's DBSIZE is not live). */
export async function countKeys(node: NodePipeline, db: number, dbsizeLive: boolean): Promise<number> {
  expectOk(await node.call(['SELECT', String(db)]), `SELECT ${db}`, 'LOAD_FAILED');
  if (dbsizeLive) {
    const reply = await node.call(['DBSIZE']);
    const n = integerOf(reply);
    if (n === undefined) throw new SyncProxyError('LOAD_FAILED', `DBSIZE failed on the node: ${errorText(reply)}`);
    return n;
  }
  let cursor = '0';
  let count = 0;
  do {
    const reply = await node.call(['SCAN', cursor, 'COUNT', '1000']);
    if (reply.type === 45) throw new SyncProxyError('LOAD_FAILED', `SCAN failed on the node: ${errorText(reply)}`);
    const decoded = decodeReply(reply.raw);
    if (!Array.isArray(decoded) || decoded.length !== 2 || !Buffer.isBuffer(decoded[0]) || !Array.isArray(decoded[1])) throw new SyncProxyError('MALFORMED_RESPONSE', 'SCAN answered an unexpected shape');
    cursor = decoded[0].toString('latin1');
    count += decoded[1].length;
  } while (cursor !== '0');
  return count;
}

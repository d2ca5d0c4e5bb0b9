/**
 * Replaces the replica node's dataset with a copied snapshot: FLUSHALL, then every file in
 * manifest order through CommandScanner, markers interpreted (src/source/types.ts format doc),
 * everything else forwarded as raw bytes, every reply checked. Then counts are proven: records per
 * db against the manifest, and the node's live key count per db against the distinct keys loaded
 * (DBSIZE on Redis; SCAN on Pika, whose DBSIZE is not live).
 */
import { createReadStream } from 'node:fs';
import type { Logger } from 'pino';
import { SyncProxyError, toSyncProxyError } from '../errors';
import { decodeReply } from '../resp/decode';
import { CommandScanner } from './command-scanner';
import { functionRestoreCommand } from '../source/function-libraries';
import { DbTally, LoadBatch, LoadedKeys, argsOf, isMarker, markerName } from './load-batch';
import { SNAPSHOT_FORMAT_VERSION, type Manifest } from '../source/types';
import { ExpiryChoice, NodeProfile, isPexpireat, probeNodeProfile, toNodeForm, withExpiryOverride } from '../backend/node-profile';
import { FLUSH_REPLY_TIMEOUT_MS, NodeAddress, NodePipeline, expectOk, errorText, integerOf, probeVia } from './node-pipeline';

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
}


export async function loadSnapshot(options: LoaderOptions): Promise<LoadResult> {
  const loader = await SnapshotLoader.connect(options.node, options.logger, options.signal, options.maxInFlight);
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
 * (every reply checked, counts proven). One connection for its whole life: a `begin` after a
 * `drain` is ordered after everything sent before, so a new snapshot's FLUSHALL also removes what
 * an earlier (changed) snapshot loaded.
 */
export class SnapshotLoader {
  private manifest?: Manifest;
  private logger: Logger;
  private tallies = new Map<number, DbTally>();
  private state: LoadState = { db: -1, commands: 0, bytes: 0, loaded: new LoadedKeys() };
  private onProgress?: (bytesRead: number) => void;
  private nextFile = 0;

  private constructor(private readonly node: NodePipeline, readonly profile: NodeProfile, private readonly baseLogger: Logger, private readonly readBytes?: number) {
    this.logger = baseLogger;
  }

  static async connect(address: NodeAddress, logger: Logger, signal: AbortSignal, maxInFlight?: number, maxInFlightBytes?: number, readBytes?: number, expiry: ExpiryChoice = 'auto'): Promise<SnapshotLoader> {
    try {
      const node = await NodePipeline.connect(address, signal, maxInFlight, maxInFlightBytes);
      try {
        // Probed on the loader's own connection before its FLUSHALL, so the load cannot disturb it.
        return new SnapshotLoader(node, withExpiryOverride(await probeNodeProfile(probeVia(node)), expiry), logger, readBytes);
      } catch (err) {
        node.close();
        throw err;
      }
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
    }
  }

  /** The snapshot `begin` started, if any. */
  get snapshotId(): string | undefined {
    return this.manifest?.snapshotId;
  }

  /** FLUSHALL (after every command sent before it), then a load of `manifest` from its first file. */
  async begin(manifest: Manifest, onProgress?: (bytesRead: number) => void): Promise<void> {
    this.manifest = manifest;
    this.logger = this.baseLogger.child({ component: 'loader', snapshotId: manifest.snapshotId });
    this.tallies = new Map();
    this.state = { db: -1, commands: 0, bytes: 0, loaded: new LoadedKeys() };
    this.onProgress = onProgress;
    this.nextFile = 0;
    try {
      expectOk(await this.node.callWithin(['FLUSHALL'], FLUSH_REPLY_TIMEOUT_MS), 'FLUSHALL', 'LOAD_FAILED');
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
      await loadFile(this.node, file, { manifest, signal: stop, onProgress: this.onProgress, readBytes: this.readBytes, profile: this.profile }, this.tallies, this.state);
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
    }
    this.nextFile++;
    this.logger.debug({ file: file.name }, 'file loaded');
  }

  /** Drops the begun load: FLUSHALL after everything sent before, no snapshot begun. */
  async discard(): Promise<void> {
    await this.drain();
    try {
      expectOk(await this.node.callWithin(['FLUSHALL'], FLUSH_REPLY_TIMEOUT_MS), 'FLUSHALL', 'LOAD_FAILED');
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'discarding a partial load');
    }
    this.manifest = undefined;
    this.tallies = new Map();
    this.nextFile = 0;
  }

  /** Waits until every command sent so far is answered and checked. */
  async drain(): Promise<void> {
    try {
      await this.node.flush();
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
    }
  }

  /** Every file loaded: waits for every reply, then proves the counts. */
  async finish(): Promise<LoadResult> {
    const { node, profile, tallies, state } = this;
    const manifest = this.manifest;
    try {
      if (!manifest) throw new SyncProxyError('INTERNAL', 'load finished before it began');
      if (manifest.partial) throw new SyncProxyError('INTERNAL', 'load finished with a partial manifest');
      if (this.nextFile !== manifest.files.length) throw new SyncProxyError('INTERNAL', `load finished after ${this.nextFile} of ${manifest.files.length} files`);
      await node.flush();
      const manifestDbs = new Map(manifest.dbs.map((d) => [d.db, d.records]));
      for (const [db, tally] of tallies) {
        if (!manifestDbs.has(db) && tally.records > 0) throw new SyncProxyError('COUNT_MISMATCH', `db ${db}: ${tally.records} records loaded, the manifest lists none`);
      }
      const results: DbLoadResult[] = [];
      for (const [db, expected] of manifestDbs) {
        const tally = tallies.get(db) ?? { records: 0, distinct: 0, volatile: 0 };
        if (tally.records !== expected) throw new SyncProxyError('COUNT_MISMATCH', `db ${db}: ${tally.records} key records loaded, the manifest says ${expected}`);
        const nodeKeys = await countKeys(node, db, profile.dbsizeLive);
        const low = tally.distinct - tally.volatile;
        if (nodeKeys < low || nodeKeys > tally.distinct) {
          throw new SyncProxyError('COUNT_MISMATCH', `db ${db}: the node holds ${nodeKeys} keys after the load, expected ${low === tally.distinct ? low : `${low}..${tally.distinct}`} (${tally.distinct} distinct keys loaded, ${tally.volatile} with a TTL)`);
        }
        results.push({ db, records: tally.records, distinctKeys: tally.distinct, volatileKeys: tally.volatile, nodeKeys });
      }
      this.logger.info({ dbs: results, commands: state.commands }, 'snapshot loaded and counts verified');
      return { dbs: results, commands: state.commands, profile };
    } catch (err) {
      throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
    }
  }

  close(): void {
    this.node.close();
  }
}

/** Where the load is, across the chunks and files of one snapshot (reset by `begin`). */
interface LoadState {
  db: number;
  commands: number;
  bytes: number;
  /** Keys that may have a record loaded already (the node was flushed at `begin`). */
  loaded: LoadedKeys;
}

interface FileLoadOptions {
  /** Bytes per read of the file (one batch of node commands each); 1 MiB when not set. */
  readBytes?: number;
  manifest: Manifest;
  signal: AbortSignal;
  onProgress?: (bytesRead: number) => void;
  profile: NodeProfile;
}

async function loadFile(node: NodePipeline, file: { name: string; path: string }, options: FileLoadOptions, tallies: Map<number, DbTally>, state: LoadState): Promise<void> {
  const scanner = new CommandScanner();
  const rewriteExpiry = options.profile.expiry !== 'pexpireat';
  const failLoad = (why: string): SyncProxyError => new SyncProxyError('LOAD_FAILED', `${file.name}: ${why}`);
  let sawHeader = false;
  let sawEof = false;
  let recordsInFile = 0;
  let inRecord = false;
  /** The open record is a string without a TTL: its one SET may join the group's MSET. */
  let plainString = false;
  /** The open record's SET joined the MSET: a further command of it must follow that MSET. */
  let joinedMset = false;

  const parseDb = (arg: Buffer, marker: string): number => {
    const db = arg.length === 1 && arg[0] >= 48 && arg[0] <= 57 ? arg[0] - 48 : Number(arg.toString('latin1'));
    if (!Number.isInteger(db) || db < 0) throw failLoad(`${marker} names db ${arg.toString('latin1')}`);
    return db;
  };
  const nextCommand = (): boolean => {
    try {
      return scanner.next();
    } catch (err) {
      throw failLoad((err as Error).message);
    }
  };

  const stream = createReadStream(file.path, { highWaterMark: options.readBytes ?? 1024 * 1024, signal: options.signal });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      state.bytes += chunk.length;
      options.onProgress?.(state.bytes);
      scanner.feed(chunk);
      const batch = new LoadBatch(file.name, state.loaded);
      const select = (db: number): void => {
        if (db === state.db) return;
        batch.select(db);
        state.db = db;
      };
      // Only markers are taken apart; a forwarded command stays the bytes it was.
      while (nextCommand()) {
        const data = scanner.data;
        const argc = scanner.argc;
        if (sawEof) throw failLoad('commands after PSP.EOF');
        if (!isMarker(data, scanner.nameStart, scanner.nameEnd)) {
          if (!sawHeader) throw failLoad('does not begin with PSP.FILE');
          if (!inRecord) throw failLoad(`${data.toString('latin1', scanner.nameStart, scanner.nameEnd).toUpperCase()} outside a key record`);
          state.commands++;
          if (plainString && argc === 3 && batch.set(data, scanner.start, scanner.end)) {
            joinedMset = true;
          } else if (rewriteExpiry && argc === 3 && scanner.nameEnd - scanner.nameStart === 9 && isPexpireat(data.subarray(scanner.nameStart, scanner.nameEnd))) {
            // The record's absolute expiry, in the form this node honours (node-profile.ts).
            if (joinedMset) batch.closeGroup();
            joinedMset = false;
            batch.made(toNodeForm(argsOf(data.subarray(scanner.start, scanner.end)), options.profile), 'the expiry of a key record');
          } else {
            // Only a malformed record has more after its SET; its order on the key is kept.
            if (joinedMset) batch.closeGroup();
            joinedMset = false;
            batch.forward(data, scanner.start, scanner.end);
          }
          plainString = false;
          continue;
        }
        if (sawHeader && argc === 5 && isKeyMarker(data, scanner.nameStart, scanner.nameEnd)) {
          // PSP.KEY <db> <key> <type> <expire-at-ms | -1>, read in place (the common marker).
          const dbStart = bulkData(data, scanner.nameEnd + 2);
          const dbEnd = bulkEnd;
          const keyBulk = dbEnd + 2;
          const keyStart = bulkData(data, keyBulk);
          const keyBulkEnd = bulkEnd + 2;
          const typeStart = bulkData(data, keyBulkEnd);
          const isString = bulkEnd - typeStart === 6 && data.toString('latin1', typeStart, bulkEnd) === 'string';
          const ttlStart = bulkData(data, bulkEnd + 2);
          const volatile = !(bulkEnd - ttlStart === 2 && data[ttlStart] === 45 && data[ttlStart + 1] === 49);
          const db = dbEnd - dbStart === 1 && data[dbStart] >= 48 && data[dbStart] <= 57 ? data[dbStart] - 48 : parseDb(data.subarray(dbStart, dbEnd), 'PSP.KEY');
          let tally = tallies.get(db);
          if (!tally) tallies.set(db, (tally = { records: 0, distinct: 0, volatile: 0 }));
          tally.records++;
          recordsInFile++;
          inRecord = true;
          select(db);
          batch.del(data, keyBulk, keyStart, keyBulkEnd, tally, volatile);
          plainString = isString && !volatile;
          joinedMset = false;
          continue;
        }
        plainString = false;
        joinedMset = false;
        const args = argsOf(data.subarray(scanner.start, scanner.end));
        const name = markerName(args[0]);
        if (!sawHeader) {
          if (name !== 'PSP.FILE' || argc !== 4) throw failLoad('does not begin with PSP.FILE');
          const [version, snapshotId, fileName] = args.slice(1).map((a) => a.toString('utf8'));
          if (Number(version) !== SNAPSHOT_FORMAT_VERSION) throw failLoad(`format version ${version}, this proxy reads ${SNAPSHOT_FORMAT_VERSION}`);
          if (snapshotId !== options.manifest.snapshotId) throw failLoad(`PSP.FILE names snapshot ${snapshotId}, loading ${options.manifest.snapshotId}`);
          if (fileName !== file.name) throw failLoad(`PSP.FILE names file ${fileName}`);
          sawHeader = true;
        } else if (name === 'PSP.KEY') {
          // Well-formed ones were taken above.
          throw failLoad(`PSP.KEY with ${argc - 1} arguments`);
        } else if (name === 'PSP.PART') {
          if (argc !== 3) throw failLoad(`PSP.PART with ${argc - 1} arguments`);
          batch.closeGroup();
          select(parseDb(args[1], 'PSP.PART'));
          inRecord = true;
        } else if (name === 'PSP.FUNCTIONS') {
          if (argc !== 2) throw failLoad(`PSP.FUNCTIONS with ${argc - 1} arguments`);
          // Replaces whatever libraries the replica's node had, as the key records replace its keys.
          batch.made(functionRestoreCommand(args[1]), 'FUNCTION RESTORE of the function libraries');
        } else if (name === 'PSP.EOF') {
          const n = argc === 2 ? Number(args[1].toString('latin1')) : NaN;
          if (n !== recordsInFile) throw failLoad(`PSP.EOF says ${args[1]?.toString('latin1')} key records, the file held ${recordsInFile}`);
          sawEof = true;
        } else {
          throw failLoad(`unknown marker ${name}`);
        }
      }
      const parts = batch.finish();
      await node.sendMany(parts, batch.count, batch.check);
    }
  } catch (err) {
    if (err instanceof SyncProxyError) throw err;
    if (options.signal.aborted) throw options.signal.reason;
    throw toSyncProxyError(err, 'IO_ERROR', `reading ${file.name}`);
  }
  if (scanner.bufferedBytes > 0) throw failLoad('ends inside a command');
  if (!sawHeader) throw failLoad('is empty');
  if (!sawEof) throw failLoad('has no PSP.EOF (truncated)');
}

/** End of the last bulk read by bulkData (its CRLF follows). */
let bulkEnd = 0;

/** The data start of the (already validated) bulk whose '$' is at `pos`; sets bulkEnd. */
function bulkData(data: Buffer, pos: number): number {
  let len = 0;
  let i = pos + 1;
  for (; data[i] !== 13; i++) len = len * 10 + data[i] - 48;
  bulkEnd = i + 2 + len;
  return i + 2;
}

/** `data[start, end)` is "PSP.KEY" in any case (isMarker has matched "PSP."). */
function isKeyMarker(data: Buffer, start: number, end: number): boolean {
  return end - start === 7 && (data[start + 4] | 0x20) === 107 && (data[start + 5] | 0x20) === 101 && (data[start + 6] | 0x20) === 121;
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

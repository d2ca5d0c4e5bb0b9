/**
 * One snapshot file into the node (./loader.ts drives the files): read in chunks through
 * CommandScanner, markers interpreted (src/source/types.ts format doc), everything else forwarded
 * as raw bytes. Each key record goes to its key's load lane (./load-lanes.ts), where its DEL, its
 * commands and its expiry keep their file order; each chunk becomes one LoadBatch per lane.
 */
import { functionRestoreCommand } from '../source/function-libraries';
import { createReadStream } from 'node:fs';
import { SyncProxyError, toSyncProxyError } from '../errors';
import { CommandScanner } from './command-scanner';
import { DbTally, LoadBatch, LoadedKeys, argsOf, isMarker, keyHash, markerName } from './load-batch';
import type { LoadLanes } from './load-lanes';
import { SNAPSHOT_FORMAT_VERSION, type Manifest } from '../source/types';
import { NodeProfile, isPexpireat, toNodeForm } from '../backend/node-profile';

/** Where the load is, across the chunks and files of one snapshot (reset by `begin`). */
export interface LoadState {
  commands: number;
  bytes: number;
  /** Keys that may have a record loaded already (the node was flushed at `begin`). */
  loaded: LoadedKeys;
}

export interface FileLoadOptions {
  /** Bytes per read of the file (one batch of node commands each); 1 MiB when not set. */
  readBytes?: number;
  manifest: Manifest;
  signal: AbortSignal;
  onProgress?: (bytesRead: number) => void;
  profile: NodeProfile;
}

/** What a file's load needs of the lanes: a key's lane, each lane's db, sending (tests record it). */
export type LaneRouter = Pick<LoadLanes, 'laneOf' | 'dbs' | 'send'>;

export async function loadFile(lanes: LaneRouter, file: { name: string; path: string }, options: FileLoadOptions, tallies: Map<number, DbTally>, state: LoadState): Promise<void> {
  const scanner = new CommandScanner();
  const rewriteExpiry = options.profile.expiry !== 'pexpireat';
  const failLoad = (why: string): SyncProxyError => new SyncProxyError('LOAD_FAILED', `${file.name}: ${why}`);
  let sawHeader = false;
  let sawEof = false;
  let recordsInFile = 0;
  let inRecord = false;
  let recordLane = 0;
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
      const batches: Array<LoadBatch | undefined> = [];
      const batchOf = (lane: number): LoadBatch => (batches[lane] ??= new LoadBatch(file.name, state.loaded));
      /** The open record's batch: a record goes on in the next chunk on the same lane. */
      let batch = batchOf(recordLane);
      const enterRecord = (hash: number, db: number): void => {
        recordLane = lanes.laneOf(hash);
        batch = batchOf(recordLane);
        // Each connection has its own selected db.
        if (lanes.dbs[recordLane] === db) return;
        batch.select(db);
        lanes.dbs[recordLane] = db;
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
          const hash = keyHash(data, keyStart, bulkEnd);
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
          enterRecord(hash, db);
          batch.del(data, keyBulk, keyBulkEnd, hash, tally, volatile);
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
          // The continued key's commands take its lane again, after its earlier parts.
          enterRecord(keyHash(args[2], 0, args[2].length), parseDb(args[1], 'PSP.PART'));
          batch.closeGroup();
          inRecord = true;
        } else if (name === 'PSP.FUNCTIONS') {
          if (argc !== 2) throw failLoad(`PSP.FUNCTIONS with ${argc - 1} arguments`);
          // Replaces whatever libraries the replica's node had, as the key records replace its
          // keys. Keyless: lane 0 (it comes before every key record of the snapshot).
          batchOf(0).made(functionRestoreCommand(args[1]), 'FUNCTION RESTORE of the function libraries');
        } else if (name === 'PSP.EOF') {
          const n = argc === 2 ? Number(args[1].toString('latin1')) : NaN;
          if (n !== recordsInFile) throw failLoad(`PSP.EOF says ${args[1]?.toString('latin1')} key records, the file held ${recordsInFile}`);
          sawEof = true;
        } else {
          throw failLoad(`unknown marker ${name}`);
        }
      }
      await lanes.send(batches);
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

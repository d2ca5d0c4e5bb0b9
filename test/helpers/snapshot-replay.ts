/**
 * Rebuilds a master's dataset on a fresh node the way a replica does, from the master proxy's
 * sync service only: every snapshot file fetched with GetChunk (size and CRC32C checked against
 * the manifest), loaded as the replica loader does (PSP.KEY = SELECT db + DEL key, PSP.PART =
 * SELECT db, PSP.FILE / PSP.EOF checked and skipped, everything else sent), then the write log
 * replayed from `logOffset + 1` until the master's offset is reached.
 *
 * `expiry: 'pexpire'` is for a target that does not honour PEXPIREAT (Pika 4.0.1 deletes the key
 * at once): every `PEXPIREAT key ms` of the snapshot and the log is sent as `PEXPIRE key <ms left>`,
 * as the replica loader does on such a node.
 */
import { crc32c } from '@node-rs/crc32';
import { decodeReply } from '../../src/resp/decode';
import { RequestParser } from '../../src/resp/request-parser';
import type { LogEntry, Manifest } from '../../src/source/types';
import type { ReplicaIdentity, SyncClient } from '../../src/sync/sync-client';
import { PipelinedNode, ReplyCheck, expectNoError } from './pipelined-node';

const CHUNK = 1024 * 1024;
const MAX_PENDING = 2000;
export const TEST_REPLICA: ReplicaIdentity = { runId: 'e'.repeat(40), host: '127.0.0.1', port: 1 };

/** How absolute expiries reach the target: as written (PEXPIREAT) or as the time left (PEXPIRE). */
export type ExpiryMode = 'pexpireat' | 'pexpire';

/** `PEXPIREAT key ms` as `PEXPIRE key <ms left, at least 1>` in 'pexpire' mode; anything else unchanged. */
function adaptExpiry(args: Buffer[], mode: ExpiryMode): Buffer[] | undefined {
  if (mode === 'pexpireat' || args.length !== 3 || args[0].toString('latin1').toUpperCase() !== 'PEXPIREAT') return undefined;
  const left = Math.max(1, Number(args[2].toString('latin1')) - Date.now());
  return [Buffer.from('PEXPIRE'), args[1], Buffer.from(String(left))];
}

/** Fetches one file in chunks and proves it equals the manifest's size and checksum. */
export async function fetchFile(client: SyncClient, manifest: Manifest, name: string): Promise<Buffer> {
  const entry = manifest.files.find((f) => f.name === name);
  if (!entry) throw new Error(`${name} is not in the manifest`);
  const parts: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const chunk = await client.getChunk({ snapshotId: manifest.snapshotId, file: name, offset, length: CHUNK, replica: TEST_REPLICA });
    if (chunk.offset !== offset) throw new Error(`${name}: chunk at ${chunk.offset}, asked for ${offset}`);
    parts.push(chunk.data);
    offset += chunk.data.length;
    if (chunk.eof) break;
    if (chunk.data.length === 0) throw new Error(`${name}: empty chunk at ${offset} without eof`);
  }
  const data = Buffer.concat(parts);
  if (data.length !== entry.size) throw new Error(`${name}: fetched ${data.length} bytes, manifest says ${entry.size}`);
  const crc = crc32c(data) >>> 0;
  if (crc !== entry.crc32c) throw new Error(`${name}: CRC32C ${crc.toString(16)}, manifest says ${entry.crc32c.toString(16)}`);
  return data;
}

/** Loads every snapshot file into `target`; returns the key records per db. */
export async function loadSnapshotFiles(client: SyncClient, manifest: Manifest, target: PipelinedNode, expiry: ExpiryMode = 'pexpireat'): Promise<Map<number, number>> {
  const records = new Map<number, number>();
  let selected = -1;
  const select = (db: number): void => {
    if (db !== selected) target.send(['SELECT', String(db)]);
    selected = db;
  };
  for (const file of manifest.files) {
    const parser = new RequestParser();
    parser.feed(await fetchFile(client, manifest, file.name));
    let first = true;
    let eof = false;
    let inFile = 0;
    for (let req = parser.next(); req; req = parser.next()) {
      const name = req.args[0].toString('latin1');
      if (eof) throw new Error(`${file.name}: commands after PSP.EOF`);
      if (first !== (name === 'PSP.FILE')) throw new Error(`${file.name}: PSP.FILE must be the first command, got ${name}`);
      first = false;
      if (name === 'PSP.KEY') {
        const db = Number(req.args[1].toString());
        select(db);
        target.send(['DEL', req.args[2]], (r) => (r.type === 58 ? null : `DEL: ${r.raw.toString().trim()}`));
        records.set(db, (records.get(db) ?? 0) + 1);
        inFile++;
      } else if (name === 'PSP.PART') {
        select(Number(req.args[1].toString()));
      } else if (name === 'PSP.FUNCTIONS') {
        target.send(['FUNCTION', 'RESTORE', req.args[1], 'FLUSH'], expectNoError);
      } else if (name === 'PSP.EOF') {
        if (Number(req.args[1].toString()) !== inFile) throw new Error(`${file.name}: PSP.EOF says ${req.args[1]}, the file held ${inFile} records`);
        eof = true;
      } else if (name !== 'PSP.FILE') {
        const adapted = adaptExpiry(req.args, expiry);
        if (adapted) target.send(adapted, expectNoError);
        else target.sendRaw(Buffer.from(req.raw));
      }
      if (target.pending >= MAX_PENDING) await target.settle(`loading ${file.name}`);
    }
    if (!eof || parser.bufferedBytes > 0) throw new Error(`${file.name}: truncated (no PSP.EOF or a partial command)`);
    await target.settle(`loading ${file.name}`);
  }
  return records;
}

/** EXEC's reply must be an array without error elements. */
const execOk: ReplyCheck = (r) => {
  const v = decodeReply(r.raw);
  if (!Array.isArray(v)) return `EXEC: ${r.raw.toString().trim()}`;
  const bad = v.find((x) => x instanceof Error);
  return bad ? `inside EXEC: ${(bad as Error).message}` : null;
};

/** Applies one write-log entry: SELECT its db (always: a SELECT inside a transaction moves the link), then the command or MULTI..EXEC. */
export function applyEntry(target: PipelinedNode, entry: LogEntry, expiry: ExpiryMode = 'pexpireat'): void {
  const commands = entry.commands.map((c) => adaptExpiry(c, expiry) ?? c);
  const where = (args: Buffer[]): ReplyCheck => (r) => {
    const e = expectNoError(r);
    return e ? `entry ${entry.offset} ${args[0]}: ${e}` : null;
  };
  target.send(['SELECT', String(entry.db)]);
  if (commands.length === 1) return target.send(commands[0], where(commands[0]));
  target.send(['MULTI']);
  for (const c of commands) target.send(c, (r) => (r.type === 43 ? null : `entry ${entry.offset} queue ${c[0]}: ${r.raw.toString().trim()}`));
  target.send(['EXEC'], (r) => {
    const e = execOk(r);
    return e ? `entry ${entry.offset}: ${e}` : null;
  });
}

/**
 * Streams the log from `manifest.logOffset + 1` and applies it until the applied offset reaches
 * `untilOffset` (the master's last offset once writes stopped) and the master's heartbeat agrees.
 */
export async function replayLog(client: SyncClient, manifest: Manifest, target: PipelinedNode, untilOffset: number, expiry: ExpiryMode = 'pexpireat'): Promise<{ applied: number; heartbeatOffset: number }> {
  const ac = new AbortController();
  let applied = manifest.logOffset;
  let heartbeatOffset = -1;
  if (untilOffset <= applied) return { applied, heartbeatOffset };
  try {
    for await (const m of client.streamLog({ logId: manifest.logId, fromOffset: manifest.logOffset + 1, replica: TEST_REPLICA }, ac.signal)) {
      if (m.heartbeat) heartbeatOffset = Math.max(heartbeatOffset, m.heartbeat.masterOffset);
      if (m.entry) {
        if (m.entry.offset !== applied + 1) throw new Error(`log jumped from ${applied} to ${m.entry.offset}`);
        applyEntry(target, m.entry, expiry);
        applied = m.entry.offset;
        if (target.pending >= MAX_PENDING) await target.settle(`replaying the log up to ${applied}`);
      }
      if (applied >= untilOffset && heartbeatOffset >= 0) break;
    }
  } finally {
    ac.abort();
  }
  await target.settle(`replaying the log up to ${applied}`);
  return { applied, heartbeatOffset };
}

/**
 * Strict checks of what a master answers, before anything reaches the replica. The wire fills
 * missing fields with zero values, so an empty id, a zero protocol version or a size that does not
 * add up is a MALFORMED_RESPONSE (retryable: the next answer may be whole), never a default.
 */
import { SyncProxyError } from '../errors';
import { entryChecksum } from '../source/log-format';
import { LogEntry, ManifestDb, ManifestFile, SYNC_PROTOCOL_VERSION } from '../source/types';
import type { ChunkAnswer, LogStreamMessage, MetaAnswer } from './sync-client';
import { ChunkMsg, LogMessageMsg, MetaMsg } from './proto';

/** A snapshot file name as the master may send it: one plain path component. */
const SAFE_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

function malformed(what: string, problem: string): SyncProxyError {
  return new SyncProxyError('MALFORMED_RESPONSE', `${what}: ${problem}`);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function isUint32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

function nonEmpty(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0;
}

export function validateMeta(msg: MetaMsg, what: string): MetaAnswer {
  if (!msg || typeof msg !== 'object') throw malformed(what, 'no meta in the answer');
  if (msg.protocolVersion !== SYNC_PROTOCOL_VERSION) {
    throw new SyncProxyError('PROTOCOL_VERSION_MISMATCH', `${what}: master speaks sync protocol ${String(msg.protocolVersion)}, this replica ${SYNC_PROTOCOL_VERSION}`);
  }
  if (!nonEmpty(msg.snapshotId)) throw malformed(what, 'empty snapshot id');
  if (!nonEmpty(msg.logId)) throw malformed(what, 'empty log id');
  if (!isUint32(msg.formatVersion) || msg.formatVersion === 0) throw malformed(what, `format version ${String(msg.formatVersion)}`);
  for (const field of ['logOffset', 'createdAtMs', 'totalBytes', 'masterOffset'] as const) {
    if (!isCount(msg[field])) throw malformed(what, `${field} ${String(msg[field])} is not a non-negative integer`);
  }
  // An empty node may snapshot to zero files; total_bytes must then be 0 (checked below).
  if (!Array.isArray(msg.files)) throw malformed(what, 'the manifest has no file list');
  const names = new Set<string>();
  let sum = 0;
  const files: ManifestFile[] = msg.files.map((f, i) => {
    if (!f || !nonEmpty(f.name)) throw malformed(what, `file #${i} has no name`);
    if (!SAFE_FILE_NAME.test(f.name) || f.name.includes('..')) {
      throw new SyncProxyError('HOSTILE_FILE_NAME', `${what}: file name ${JSON.stringify(f.name)} is not a plain file name`);
    }
    if (names.has(f.name)) throw malformed(what, `file ${f.name} is listed twice`);
    names.add(f.name);
    if (!isCount(f.size)) throw malformed(what, `file ${f.name} has size ${String(f.size)}`);
    if (!isUint32(f.crc32c)) throw malformed(what, `file ${f.name} has crc32c ${String(f.crc32c)}`);
    sum += f.size;
    return { name: f.name, size: f.size, crc32c: f.crc32c };
  });
  if (sum !== msg.totalBytes) throw malformed(what, `total_bytes ${msg.totalBytes} differs from the sum of file sizes ${sum}`);
  if (typeof msg.partial !== 'boolean') throw malformed(what, `partial ${String(msg.partial)}`);
  if (!Array.isArray(msg.dbs)) throw malformed(what, 'no database counts');
  if (msg.partial && msg.dbs.length > 0) throw malformed(what, 'a partial manifest with database counts');
  const dbSeen = new Set<number>();
  const dbs: ManifestDb[] = msg.dbs.map((d) => {
    if (!d || !isUint32(d.db) || !isCount(d.records)) throw malformed(what, `database count ${JSON.stringify(d)}`);
    if (dbSeen.has(d.db)) throw malformed(what, `database ${d.db} is counted twice`);
    dbSeen.add(d.db);
    return { db: d.db, records: d.records };
  });
  return {
    protocolVersion: msg.protocolVersion,
    formatVersion: msg.formatVersion,
    snapshotId: msg.snapshotId,
    logId: msg.logId,
    logOffset: msg.logOffset,
    createdAtMs: msg.createdAtMs,
    files,
    dbs,
    totalBytes: msg.totalBytes,
    masterOffset: msg.masterOffset,
    partial: msg.partial,
  };
}

export function validateChunk(msg: ChunkMsg, req: { file: string; offset: number; length: number }, what: string): ChunkAnswer {
  if (!msg || typeof msg !== 'object') throw malformed(what, 'no chunk in the answer');
  if (!nonEmpty(msg.snapshotId)) throw malformed(what, 'empty snapshot id');
  if (msg.file !== req.file) throw malformed(what, `answer is for file ${JSON.stringify(msg.file)}`);
  if (msg.offset !== req.offset) throw malformed(what, `answer is for offset ${String(msg.offset)}`);
  if (!Buffer.isBuffer(msg.data)) throw malformed(what, 'chunk data is not bytes');
  if (msg.data.length > req.length) throw malformed(what, `${msg.data.length} bytes for a ${req.length}-byte request`);
  if (typeof msg.eof !== 'boolean') throw malformed(what, 'no eof flag');
  // A short read is only legal at the end of the file: anything else would stall or skip bytes.
  if (msg.data.length < req.length && !msg.eof) throw malformed(what, `short chunk (${msg.data.length} of ${req.length} bytes) without eof`);
  if (!isUint32(msg.crc32c)) throw malformed(what, `crc32c ${String(msg.crc32c)}`);
  return { snapshotId: msg.snapshotId, file: msg.file, offset: msg.offset, data: msg.data, crc32c: msg.crc32c, eof: msg.eof };
}

/** One stream message; entries must arrive with consecutive offsets starting at `expectedOffset`. */
export function validateLogMessage(msg: LogMessageMsg, expectedOffset: number, what: string): LogStreamMessage {
  if (msg?.kind === 'heartbeat' && msg.heartbeat) {
    const { masterOffset, timeMs } = msg.heartbeat;
    if (!isCount(masterOffset) || !isCount(timeMs)) throw malformed(what, 'heartbeat without offset or time');
    return { heartbeat: { masterOffset, timeMs } };
  }
  if (msg?.kind === 'entry' && msg.entry) {
    const e = msg.entry;
    if (!isCount(e.offset) || e.offset !== expectedOffset) throw malformed(what, `log entry offset ${String(e.offset)}, expected ${expectedOffset}`);
    if (!isUint32(e.db)) throw malformed(what, `log entry ${e.offset} has db ${String(e.db)}`);
    if (!Array.isArray(e.commands) || e.commands.length === 0) throw malformed(what, `log entry ${e.offset} has no commands`);
    const commands: Buffer[][] = e.commands.map((c) => {
      if (!c || !Array.isArray(c.args) || c.args.length === 0 || !c.args.every((a) => Buffer.isBuffer(a))) {
        throw malformed(what, `log entry ${e.offset} has an empty or non-binary command`);
      }
      return c.args;
    });
    const entry: LogEntry = { offset: e.offset, db: e.db, commands };
    // A byte flipped between the master's log and here must never be applied to the node.
    const actual = entryChecksum(entry);
    if (e.crc32c !== actual) {
      throw new SyncProxyError('CHECKSUM_MISMATCH', `${what}: log entry ${e.offset} fails its CRC32C (got ${String(e.crc32c)}, computed ${actual})`);
    }
    return { entry };
  }
  throw malformed(what, 'log message is neither an entry nor a heartbeat');
}

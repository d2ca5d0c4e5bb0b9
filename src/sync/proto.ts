/**
 * Loads the sync protocol schema (proto/pikasync/v1/sync.proto) at run time and describes, as thin
 * TS interfaces, the message shapes proto-loader produces with the options below. The loaded
 * definitions are never hand-edited; these interfaces only name what src/sync reads and writes.
 *
 * Loader options and why: keepCase false (camelCase fields), longs as Number (offsets and sizes
 * stay below 2^53; callers re-check with Number.isSafeInteger), enums as String, defaults true (a
 * missing field reads as its zero value, so validators must treat zero values as "absent"),
 * oneofs true (LogMessage gets a `kind` discriminator), bytes as Buffer.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { SyncProxyError } from '../errors';

export const PROTO_RELATIVE_PATH = path.join('pikasync', 'v1', 'sync.proto');

/** Metadata keys of the wire contract. */
export const PASSWORD_METADATA_KEY = 'psp-password';
export const ERROR_CODE_METADATA_KEY = 'psp-error-code';
export const RETRYABLE_METADATA_KEY = 'psp-retryable';

/** Upper bound of one chunk (matches the --sync-chunk-size maximum). */
export const MAX_CHUNK_LENGTH = 64 * 1024 * 1024;
/** What a client accepts in one message: a maximal chunk plus framing and fields. */
export const MAX_RECEIVE_MESSAGE_BYTES = MAX_CHUNK_LENGTH + 64 * 1024;

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  bytes: Buffer,
};

/**
 * The proto directory: next to the compiled code (`dist/proto`, copied by scripts/post-build.js),
 * or the repository's `proto/` when running from a source tree.
 */
export function resolveProtoRoot(): string {
  const candidates = [
    path.resolve(__dirname, '../../proto'), // dist/src/sync -> dist/proto; src/sync (ts) -> <repo>/proto
    path.resolve(__dirname, '../../../proto'), // dist/src/sync -> <repo>/proto (plain `tsc`, no post-build copy)
  ];
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, PROTO_RELATIVE_PATH))) return dir;
  }
  throw new SyncProxyError('INTERNAL', `sync.proto not found; looked in ${candidates.join(', ')}`);
}

let cached: grpc.ServiceClientConstructor | undefined;

/** The loaded `pikasync.v1.Sync` service (client constructor; `.service` is the definition). */
export function loadSyncService(): grpc.ServiceClientConstructor {
  if (cached) return cached;
  const root = resolveProtoRoot();
  const definition = protoLoader.loadSync(PROTO_RELATIVE_PATH, { ...LOADER_OPTIONS, includeDirs: [root] });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    pikasync: { v1: { Sync: grpc.ServiceClientConstructor } };
  };
  cached = loaded.pikasync.v1.Sync;
  return cached;
}

// ---- message shapes as proto-loader delivers them (camelCase, numbers, Buffers) ----

export interface ReplicaIdentityMsg {
  runId: string;
  host: string;
  port: number;
}

export interface MetaRequestMsg {
  protocolVersion: number;
  waitMs: number;
  replica: ReplicaIdentityMsg | null;
  acceptPartial: boolean;
  knownFiles: number;
  snapshotId: string;
}

export interface FileInfoMsg {
  name: string;
  size: number;
  crc32c: number;
}

export interface DbCountMsg {
  db: number;
  records: number;
}

export interface MetaMsg {
  protocolVersion: number;
  formatVersion: number;
  snapshotId: string;
  logId: string;
  logOffset: number;
  createdAtMs: number;
  files: FileInfoMsg[];
  dbs: DbCountMsg[];
  totalBytes: number;
  masterOffset: number;
  partial: boolean;
}

export interface ChunkRequestMsg {
  snapshotId: string;
  file: string;
  offset: number;
  length: number;
  replica: ReplicaIdentityMsg | null;
}

export interface ChunkMsg {
  snapshotId: string;
  file: string;
  offset: number;
  data: Buffer;
  crc32c: number;
  eof: boolean;
}

export interface StreamLogRequestMsg {
  logId: string;
  fromOffset: number;
  replica: ReplicaIdentityMsg | null;
}

export interface CommandMsg {
  args: Buffer[];
}

export interface LogEntryMsg {
  offset: number;
  db: number;
  commands: CommandMsg[];
  crc32c: number;
}

export interface HeartbeatMsg {
  masterOffset: number;
  timeMs: number;
}

export interface LogMessageMsg {
  kind?: 'entry' | 'heartbeat';
  entry?: LogEntryMsg | null;
  heartbeat?: HeartbeatMsg | null;
}

export interface DigestRequestMsg {
  replica: ReplicaIdentityMsg | null;
  logId: string;
  minLogOffset: number;
  cutoffMs: number;
  waitMs: number;
  snapshotId: string;
  ranges: number[];
}

export interface RangeDigestMsg {
  range: number;
  keys: number;
  a: number;
  b: number;
  volatile: number;
  expirySumS: number;
}

export interface KeyDigestMsg {
  db: number;
  key: Buffer;
  type: string;
  expireAtMs: number;
  a: number;
  b: number;
}

export interface DigestMsg {
  snapshotId: string;
  logId: string;
  logOffset: number;
  ranges: RangeDigestMsg[];
  keys: KeyDigestMsg[];
}

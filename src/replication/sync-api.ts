/**
 * What the replica needs from the gRPC sync client (src/sync/sync-client.ts). The replication
 * code depends on this shape only, so tests can also drive it with a real SyncServer or a
 * hand-built source, and the manager gets the client from an injectable factory.
 */
import type { Logger } from 'pino';

import type { ChunkAnswer, DigestAnswer, DigestQuery, LogStreamMessage, MetaAnswer, ReplicaIdentity } from '../sync/sync-client';

export type { ChunkAnswer, DigestAnswer, DigestQuery, MetaAnswer, ReplicaIdentity };
export type LogMessage = LogStreamMessage;

export interface SyncClientLike {
  getMeta(request: { waitMs: number; replica: ReplicaIdentity; knownFiles?: number; snapshotId?: string }): Promise<MetaAnswer>;
  getChunk(request: { snapshotId: string; file: string; offset: number; length: number; replica: ReplicaIdentity }): Promise<ChunkAnswer>;
  streamLog(request: { logId: string; fromOffset: number; replica: ReplicaIdentity }, signal: AbortSignal): AsyncIterable<LogMessage>;
  /** Online verification (optional: a test double may leave it out; SYNCPROXY VERIFY then says so). */
  getDigest?(request: DigestQuery): Promise<DigestAnswer>;
  close(): void | Promise<void>;
}

export interface SyncClientFactoryOptions {
  host: string;
  port: number;
  password?: string;
  tls?: { cert?: string; key?: string; ca?: string };
  rpcTimeoutMs: number;
  logger: Logger;
}

export type SyncClientFactory = (options: SyncClientFactoryOptions) => SyncClientLike;

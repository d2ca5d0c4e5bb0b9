/**
 * The replica side of the sync protocol. Every answer from the master is validated before it is
 * returned (a missing field reads as a zero value on the wire, so "looks empty" is an error, never a
 * default), and every failure is a SyncProxyError built by status-mapping. Unary calls carry a
 * deadline; the log stream has none but is declared dead when nothing (not even a heartbeat)
 * arrives for `streamIdleTimeoutMs`.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { crc32c } from '@node-rs/crc32';
import { SyncProxyError } from '../errors';
import type { Logger } from '../logger';
import { LogEntry, Manifest, SYNC_PROTOCOL_VERSION } from '../source/types';
import { ChunkMsg, DigestMsg, LogMessageMsg, MAX_RECEIVE_MESSAGE_BYTES, MetaMsg, PASSWORD_METADATA_KEY, loadSyncService } from './proto';
import { fromGrpcError } from './status-mapping';
import { validateChunk, validateLogMessage, validateMeta } from './response-validation';

/** No message for this long on a log stream (heartbeats come every second) means a dead link. */
export const DEFAULT_STREAM_IDLE_TIMEOUT_MS = 10_000;
/** The master caps its own wait for a snapshot build at this (sync-server MAX_META_WAIT_MS). */
const MASTER_MAX_META_WAIT_MS = 60_000;
/**
 * HTTP/2 receive window (per stream and per connection). The default 64 KiB makes the master stop
 * after every 64 KiB of a chunk until the replica's WINDOW_UPDATE arrives; 16 MiB lets the copy
 * workers' chunks (4 x 4 MiB by default) flow without those stalls. Memory stays bounded: only
 * chunks the copier asked for are ever sent.
 */
const FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024;

export interface SyncClientOptions {
  host: string;
  port: number;
  password?: string;
  /**
   * TLS toward the master: a string is a PEM file path, a Buffer PEM contents. Without `ca` the
   * system roots verify the master; `cert` + `key` present a client certificate.
   */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  rpcTimeoutMs: number;
  streamIdleTimeoutMs?: number;
  logger: Logger;
}

export interface ReplicaIdentity {
  runId: string;
  host: string;
  port: number;
}

export type MetaAnswer = Manifest & { masterOffset: number; protocolVersion: number; partial: boolean };

/** A chunk message after validation (echoed file and offset, length, CRC32C): same shape. */
export type ChunkAnswer = ChunkMsg;

export interface LogStreamMessage {
  entry?: LogEntry;
  heartbeat?: { masterOffset: number; timeMs: number };
}

type UnaryMethod<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.ClientUnaryCall;
type StreamMethod<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientReadableStream<Res>;

/** A master reads a whole snapshot to answer GetDigest: never give it less than this. */
const DIGEST_MIN_DEADLINE_MS = 300_000;

export interface DigestQuery {
  replica: ReplicaIdentity;
  logId: string;
  minLogOffset: number;
  cutoffMs: number;
  waitMs: number;
  snapshotId?: string;
  ranges?: number[];
}

export type DigestAnswer = DigestMsg;

export class SyncClient {
  private readonly client: grpc.Client;
  private readonly endpoint: string;
  private readonly logger: Logger;
  private readonly idleTimeoutMs: number;

  constructor(private readonly options: SyncClientOptions) {
    this.endpoint = `${options.host.includes(':') ? `[${options.host}]` : options.host}:${options.port}`;
    this.logger = options.logger.child({ component: 'sync-client', master: this.endpoint });
    this.idleTimeoutMs = options.streamIdleTimeoutMs ?? DEFAULT_STREAM_IDLE_TIMEOUT_MS;
    const tls = options.tls;
    const credentials = tls ? grpc.credentials.createSsl(pem(tls.ca, 'CA bundle'), pem(tls.key, 'key'), pem(tls.cert, 'certificate')) : grpc.credentials.createInsecure();
    const Sync = loadSyncService();
    this.client = new Sync(this.endpoint, credentials, {
      'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_BYTES,
      'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
      // Fail fast and let the replica's retry policy decide; no hidden reconnect loops.
      'grpc.enable_retries': 0,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    });
  }

  /**
   * With `knownFiles` a partial manifest (the master still building) may come back; with
   * `snapshotId` too, only that snapshot's manifest (SNAPSHOT_NOT_FOUND once it is gone).
   */
  async getMeta(req: { waitMs: number; replica: ReplicaIdentity; knownFiles?: number; snapshotId?: string }): Promise<MetaAnswer> {
    const what = `GetMeta from ${this.endpoint}`;
    const waitMs = Math.max(0, Math.min(Math.floor(req.waitMs), MASTER_MAX_META_WAIT_MS));
    const partial = req.knownFiles === undefined ? {} : { acceptPartial: true, knownFiles: req.knownFiles, snapshotId: req.snapshotId ?? '' };
    const msg = await this.unary<MetaMsg>('GetMeta', { protocolVersion: SYNC_PROTOCOL_VERSION, waitMs, replica: req.replica, ...partial }, waitMs + this.options.rpcTimeoutMs, what);
    const meta = validateMeta(msg, what);
    if (meta.partial && req.knownFiles === undefined) throw new SyncProxyError('MALFORMED_RESPONSE', `${what}: a partial manifest that was not asked for`);
    if (meta.partial && meta.files.length <= req.knownFiles!) throw new SyncProxyError('MALFORMED_RESPONSE', `${what}: a partial manifest with ${meta.files.length} files, ${req.knownFiles} were known`);
    return meta;
  }

  async getChunk(req: { snapshotId: string; file: string; offset: number; length: number; replica: ReplicaIdentity }): Promise<ChunkAnswer> {
    const what = `GetChunk ${req.file}@${req.offset}+${req.length} from ${this.endpoint}`;
    // protobufjs would encode NaN or a fraction as some other number: refuse before sending.
    for (const [field, value] of [['offset', req.offset], ['length', req.length]] as const) {
      if (!Number.isSafeInteger(value) || value < 0) throw new SyncProxyError('INVALID_REQUEST', `${what}: ${field} must be a non-negative integer`);
    }
    const msg = await this.unary<ChunkMsg>(
      'GetChunk',
      { snapshotId: req.snapshotId, file: req.file, offset: req.offset, length: req.length, replica: req.replica },
      this.options.rpcTimeoutMs,
      what,
    );
    const chunk = validateChunk(msg, req, what);
    const actual = crc32c(chunk.data) >>> 0;
    if (actual !== chunk.crc32c) {
      throw new SyncProxyError('CHECKSUM_MISMATCH', `${what}: chunk CRC32C ${actual.toString(16)} differs from the master's ${chunk.crc32c.toString(16)}`);
    }
    return chunk;
  }

  /**
   * Write-log entries from `fromOffset` on, with the master's heartbeats. Never ends by itself:
   * it throws when the link fails (MASTER_TIMEOUT after the idle timeout), when the master ends
   * the stream, and SYNC_ABORTED when `signal` aborts. Entries are checked to be consecutive.
   */
  async *streamLog(req: { logId: string; fromOffset: number; replica: ReplicaIdentity }, signal: AbortSignal): AsyncIterable<LogStreamMessage> {
    const what = `StreamLog ${req.logId}@${req.fromOffset} from ${this.endpoint}`;
    if (signal.aborted) throw new SyncProxyError('SYNC_ABORTED', `${what}: aborted before start`, { cause: signal.reason });
    if (!Number.isSafeInteger(req.fromOffset) || req.fromOffset < 1) throw new SyncProxyError('INVALID_REQUEST', `${what}: from_offset must be a positive integer`);
    const method = (this.client as unknown as Record<string, StreamMethod<object, LogMessageMsg>>).StreamLog.bind(this.client);
    const call = method({ logId: req.logId, fromOffset: req.fromOffset, replica: req.replica }, this.metadata(), {});
    let ended: SyncProxyError | undefined;
    const endWith = (err: SyncProxyError): void => {
      if (ended) return;
      ended = err;
      call.cancel();
    };
    const onAbort = (): void => endWith(new SyncProxyError('SYNC_ABORTED', `${what}: aborted`, { cause: signal.reason }));
    signal.addEventListener('abort', onAbort, { once: true });
    let idle: NodeJS.Timeout | undefined;
    const armIdle = (): void => {
      if (idle) clearTimeout(idle);
      idle = setTimeout(() => endWith(new SyncProxyError('MASTER_TIMEOUT', `${what}: no message for ${this.idleTimeoutMs} ms`)), this.idleTimeoutMs);
    };
    armIdle();
    let expected = req.fromOffset;
    try {
      for await (const raw of call as AsyncIterable<LogMessageMsg>) {
        if (ended) break;
        const message = validateLogMessage(raw, expected, what);
        if (message.entry) expected = message.entry.offset + 1;
        // Only the master's silence counts: no idle clock while the consumer works on a message.
        clearTimeout(idle);
        yield message;
        armIdle();
      }
      if (ended) throw ended;
      throw new SyncProxyError('MASTER_CONNECTION_LOST', `${what}: the master ended the log stream`);
    } catch (err) {
      if (ended) throw ended;
      if (err instanceof SyncProxyError) throw err;
      throw fromGrpcError(err, what);
    } finally {
      if (idle) clearTimeout(idle);
      signal.removeEventListener('abort', onAbort);
      call.cancel(); // no-op when the call already finished; releases it when the consumer stopped early
    }
  }

  close(): void {
    this.client.close();
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.options.password) md.set(PASSWORD_METADATA_KEY, this.options.password);
    return md;
  }

  /**
   * Content digests of a master snapshot at `minLogOffset` or later (aggregates per range), or
   * with `ranges` the key-by-key digests of those ranges of `snapshotId`. Reading the snapshot
   * takes the master a while on a big dataset: the deadline allows for it.
   */
  async getDigest(req: DigestQuery): Promise<DigestAnswer> {
    const what = `GetDigest from ${this.endpoint}`;
    const waitMs = Math.max(0, Math.min(Math.floor(req.waitMs), MASTER_MAX_META_WAIT_MS));
    const msg = await this.unary<DigestMsg>(
      'GetDigest',
      { replica: req.replica, logId: req.logId, minLogOffset: req.minLogOffset, cutoffMs: req.cutoffMs, waitMs, snapshotId: req.snapshotId ?? '', ranges: req.ranges ?? [] },
      waitMs + Math.max(this.options.rpcTimeoutMs, DIGEST_MIN_DEADLINE_MS),
      what,
    );
    if (typeof msg.snapshotId !== 'string' || msg.snapshotId === '' || msg.logId !== req.logId || !Number.isSafeInteger(msg.logOffset) || !Array.isArray(msg.ranges) || !Array.isArray(msg.keys)) {
      throw new SyncProxyError('MALFORMED_RESPONSE', `${what}: malformed digest`);
    }
    return msg;
  }

  private unary<Res>(name: 'GetMeta' | 'GetChunk' | 'GetDigest', req: object, timeoutMs: number, what: string): Promise<Res> {
    const method = (this.client as unknown as Record<string, UnaryMethod<object, Res>>)[name].bind(this.client);
    return new Promise<Res>((resolve, reject) => {
      method(req, this.metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) {
          const e = fromGrpcError(err, what);
          this.logger.debug({ code: e.code, err: e.message }, `${name} failed`);
          reject(e);
        } else if (res === undefined || res === null) {
          reject(new SyncProxyError('MALFORMED_RESPONSE', `${what}: empty answer`));
        } else resolve(res);
      });
    });
  }
}

function pem(source: string | Buffer | undefined, what: string): Buffer | null {
  if (source === undefined) return null;
  if (Buffer.isBuffer(source)) return source;
  try {
    return readFileSync(source);
  } catch (err) {
    throw new SyncProxyError('CONFIG_INVALID', `cannot read the TLS ${what} ${source}: ${(err as Error).message}`, { cause: err });
  }
}

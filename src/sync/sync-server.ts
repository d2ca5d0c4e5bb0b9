/**
 * The master side of the sync protocol: a gRPC server that serves the snapshot store's manifest
 * and file chunks and streams the write log. Every call is authenticated (metadata "psp-password",
 * constant-time compare), refused with NOT_A_MASTER while this proxy is a replica, validated, and
 * every failure leaves as a status built by status-mapping (never as an empty success).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { crc32c } from '@node-rs/crc32';
import { SyncProxyError } from '../errors';
import type { Logger } from '../logger';
import { entryChecksum } from '../source/log-format';
import { LogEntry, SYNC_PROTOCOL_VERSION, SnapshotStoreView, WriteLogView } from '../source/types';
import { PROTECTED_MODE_MESSAGE, peerAddress } from '../server/protected-mode';
import { ContentDigest, RANGES } from '../verify/content-digest';
import { digestSnapshotFiles } from '../verify/dataset-readers';
import {
  ChunkMsg, ChunkRequestMsg, DigestMsg, DigestRequestMsg, LogMessageMsg, MAX_CHUNK_LENGTH, MetaMsg, MetaRequestMsg, PASSWORD_METADATA_KEY,
  ReplicaIdentityMsg, StreamLogRequestMsg, loadSyncService,
} from './proto';
import { ReplicaIdentity, ReplicaInfo, ReplicaRegistry } from './replica-registry';
import { toGrpcStatus } from './status-mapping';

/** Longest a GetMeta call waits for a snapshot build, whatever the replica asks for. */
export const MAX_META_WAIT_MS = 60_000;
export const HEARTBEAT_INTERVAL_MS = 1_000;
/** stop() waits this long for calls to finish before closing connections. */
export const GRACEFUL_STOP_MS = 2_000;
const MAX_ID_LENGTH = 256;

export interface SyncServerOptions {
  bind: string;
  port: number;
  password?: string;
  /** PEM file paths. With `ca` set, clients must present a certificate signed by it. */
  tls?: { cert: string; key: string; ca?: string };
  store: SnapshotStoreView;
  log: WriteLogView;
  runId: string;
  isMaster: () => boolean;
  logger: Logger;
  /** Protected mode (server/protected-mode.ts): calls from a peer it does not allow fail with PROTECTED_MODE. */
  guard?: { allows(address: string | undefined): boolean };
}

export class SyncServer {
  private server?: grpc.Server;
  private readonly logger: Logger;
  private readonly registry = new ReplicaRegistry();
  private readonly streams = new Set<AbortController>();
  private readonly passwordDigest?: Buffer;

  constructor(private readonly options: SyncServerOptions) {
    this.logger = options.logger.child({ component: 'sync-server' });
    if (options.password) this.passwordDigest = digest(options.password);
  }

  /** Starts listening; resolves with the bound port (an ephemeral one when `port` is 0). */
  async start(): Promise<number> {
    if (this.server) throw new SyncProxyError('INTERNAL', 'sync server already started');
    const server = new grpc.Server();
    server.addService(loadSyncService().service, {
      GetMeta: (call: grpc.ServerUnaryCall<MetaRequestMsg, MetaMsg>, cb: grpc.sendUnaryData<MetaMsg>) => this.unary('GetMeta', call, cb, () => this.getMeta(call)),
      GetChunk: (call: grpc.ServerUnaryCall<ChunkRequestMsg, ChunkMsg>, cb: grpc.sendUnaryData<ChunkMsg>) => this.unary('GetChunk', call, cb, () => this.getChunk(call)),
      StreamLog: (call: grpc.ServerWritableStream<StreamLogRequestMsg, LogMessageMsg>) => void this.streamLog(call),
      GetDigest: (call: grpc.ServerUnaryCall<DigestRequestMsg, DigestMsg>, cb: grpc.sendUnaryData<DigestMsg>) => this.unary('GetDigest', call, cb, () => this.getDigest(call)),
    });
    const address = `${this.options.bind.includes(':') && !this.options.bind.startsWith('[') ? `[${this.options.bind}]` : this.options.bind}:${this.options.port}`;
    const credentials = this.serverCredentials();
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(address, credentials, (err, bound) => {
        if (err) reject(new SyncProxyError('CONFIG_INVALID', `sync listener cannot bind ${address}: ${err.message}`, { cause: err }));
        else resolve(bound);
      });
    });
    this.server = server;
    this.logger.info({ address, port, tls: Boolean(this.options.tls), clientCerts: Boolean(this.options.tls?.ca) }, 'sync service listening');
    return port;
  }

  /** Ends open log streams, lets running calls finish, and forces the close after 2 s. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const stream of this.streams) stream.abort(new SyncProxyError('MASTER_CONNECTION_LOST', 'the master sync service is stopping'));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, GRACEFUL_STOP_MS);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.logger.info('sync service stopped');
  }

  /** Replicas seen in the last minute, for INFO replication. */
  replicas(): ReplicaInfo[] {
    return this.registry.list();
  }

  private serverCredentials(): grpc.ServerCredentials {
    const tls = this.options.tls;
    if (!tls) return grpc.ServerCredentials.createInsecure();
    const read = (file: string, what: string): Buffer => {
      try {
        return readFileSync(file);
      } catch (err) {
        throw new SyncProxyError('CONFIG_INVALID', `cannot read the TLS ${what} ${file}: ${(err as Error).message}`, { cause: err });
      }
    };
    const ca = tls.ca ? read(tls.ca, 'CA bundle') : null;
    return grpc.ServerCredentials.createSsl(ca, [{ cert_chain: read(tls.cert, 'certificate'), private_key: read(tls.key, 'key') }], ca !== null);
  }

  private async unary<Req, Res>(name: string, call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>, handler: () => Promise<Res>): Promise<void> {
    try {
      this.admit(call);
      cb(null, await handler());
    } catch (err) {
      this.logFailure(name, call.getPeer(), err);
      cb(toGrpcStatus(err));
    }
  }

  /** Protected mode first, then authentication (the role is not revealed to strangers), then the role. */
  private admit(call: { metadata: grpc.Metadata; getPeer(): string }): void {
    const metadata = call.metadata;
    if (this.options.guard && !this.options.guard.allows(peerAddress(call.getPeer()))) {
      throw new SyncProxyError('PROTECTED_MODE', PROTECTED_MODE_MESSAGE, { details: { peer: call.getPeer() } });
    }
    if (this.passwordDigest) {
      const given = metadata.get(PASSWORD_METADATA_KEY)[0];
      if (given === undefined || given.length === 0) {
        throw new SyncProxyError('AUTH_FAILED', 'this master requires a password (psp-password metadata)', { details: { auth: 'missing' } });
      }
      if (!timingSafeEqual(digest(given), this.passwordDigest)) {
        throw new SyncProxyError('AUTH_FAILED', 'invalid password', { details: { auth: 'wrong' } });
      }
    }
    if (!this.options.isMaster()) throw new SyncProxyError('NOT_A_MASTER', `proxy ${this.options.runId} is a replica, not a master`);
  }

  private async getMeta(call: grpc.ServerUnaryCall<MetaRequestMsg, MetaMsg>): Promise<MetaMsg> {
    const req = call.request;
    const replica = this.replicaIdentity(req.replica, call.getPeer());
    if (req.protocolVersion !== SYNC_PROTOCOL_VERSION) {
      throw new SyncProxyError('PROTOCOL_VERSION_MISMATCH', `replica speaks sync protocol ${req.protocolVersion}, this master speaks ${SYNC_PROTOCOL_VERSION}`);
    }
    const waitMs = Math.min(nonNegativeInt(req.waitMs, 'wait_ms'), MAX_META_WAIT_MS);
    this.registry.syncing(replica, this.options.log.lastOffset);
    const knownFiles = req.acceptPartial === true ? nonNegativeInt(req.knownFiles, 'known_files') : undefined;
    if (typeof req.snapshotId !== 'string' || req.snapshotId.length > MAX_ID_LENGTH) throw new SyncProxyError('INVALID_REQUEST', 'snapshot_id must be a string of at most 256 characters');
    const continuing = knownFiles !== undefined && req.snapshotId !== '' ? req.snapshotId : undefined;
    const m = await this.options.store.ensureSnapshot(waitMs, knownFiles, continuing);
    return {
      protocolVersion: SYNC_PROTOCOL_VERSION,
      formatVersion: m.formatVersion,
      snapshotId: m.snapshotId,
      logId: m.logId,
      logOffset: m.logOffset,
      createdAtMs: m.createdAtMs,
      files: m.files.map((f) => ({ name: f.name, size: f.size, crc32c: f.crc32c })),
      dbs: m.dbs.map((d) => ({ db: d.db, records: d.records })),
      totalBytes: m.totalBytes,
      masterOffset: this.options.log.lastOffset,
      partial: m.partial === true,
    };
  }

  /** Online verification: digests of a snapshot at or after the replica's offset (proto GetDigest). */
  private async getDigest(call: grpc.ServerUnaryCall<DigestRequestMsg, DigestMsg>): Promise<DigestMsg> {
    const req = call.request;
    this.replicaIdentity(req.replica, call.getPeer());
    if (typeof req.logId !== 'string' || req.logId.length === 0 || req.logId.length > MAX_ID_LENGTH) throw new SyncProxyError('INVALID_REQUEST', 'log_id must be a string of 1 to 256 characters');
    if (typeof req.snapshotId !== 'string' || req.snapshotId.length > MAX_ID_LENGTH) throw new SyncProxyError('INVALID_REQUEST', 'snapshot_id must be a string of at most 256 characters');
    const minOffset = nonNegativeInt(req.minLogOffset, 'min_log_offset');
    const cutoffMs = nonNegativeInt(req.cutoffMs, 'cutoff_ms');
    const waitMs = Math.min(nonNegativeInt(req.waitMs, 'wait_ms'), MAX_META_WAIT_MS);
    const ranges = new Set<number>();
    for (const r of req.ranges ?? []) {
      if (!Number.isInteger(r) || r < 0 || r >= RANGES) throw new SyncProxyError('INVALID_REQUEST', `range ${r} outside 0..${RANGES - 1}`);
      ranges.add(r);
    }
    const store = this.options.store;
    // Key lists come from the snapshot the ranges were compared on; aggregates from a new enough one.
    const manifest = ranges.size > 0 ? await store.ensureSnapshot(0, undefined, req.snapshotId) : await store.snapshotAtLeast(req.logId, minOffset, waitMs);
    if (manifest.partial) throw new SyncProxyError('SNAPSHOT_BUILDING', `snapshot ${manifest.snapshotId} is still being built`);
    const digest = new ContentDigest(cutoffMs, ranges);
    const abort = new AbortController();
    call.on('cancelled', () => abort.abort(new SyncProxyError('SYNC_ABORTED', 'GetDigest cancelled by the replica')));
    await digestSnapshotFiles(store.snapshotFiles(manifest.snapshotId), digest, abort.signal);
    const out: DigestMsg = { snapshotId: manifest.snapshotId, logId: manifest.logId, logOffset: manifest.logOffset, ranges: [], keys: [] };
    for (let r = 0; r < RANGES; r++) {
      const d = digest.range(r);
      if (d.keys > 0) out.ranges.push({ range: r, keys: d.keys, a: d.a, b: d.b, volatile: d.volatile, expirySumS: d.expirySumS });
    }
    out.keys = digest.collected.map((k) => ({ db: k.db, key: k.key, type: k.type, expireAtMs: k.expireAtMs, a: k.a, b: k.b }));
    return out;
  }

  private async getChunk(call: grpc.ServerUnaryCall<ChunkRequestMsg, ChunkMsg>): Promise<ChunkMsg> {
    const req = call.request;
    const replica = this.replicaIdentity(req.replica, call.getPeer());
    if (typeof req.snapshotId !== 'string' || req.snapshotId.length === 0 || req.snapshotId.length > MAX_ID_LENGTH) {
      throw new SyncProxyError('INVALID_REQUEST', 'snapshot_id must be a non-empty string of at most 256 characters');
    }
    if (typeof req.file !== 'string' || req.file.length === 0 || req.file.length > MAX_ID_LENGTH) {
      throw new SyncProxyError('INVALID_REQUEST', 'file must be a non-empty string of at most 256 characters');
    }
    const offset = nonNegativeInt(req.offset, 'offset');
    const length = nonNegativeInt(req.length, 'length');
    if (length === 0 || length > MAX_CHUNK_LENGTH) throw new SyncProxyError('INVALID_REQUEST', `length must be from 1 to ${MAX_CHUNK_LENGTH}, got ${length}`);
    this.registry.syncing(replica);
    const { data, eof } = await this.options.store.readChunk(req.snapshotId, req.file, offset, length);
    if (data.length > length) throw new SyncProxyError('INTERNAL', `snapshot store returned ${data.length} bytes for a ${length}-byte request`);
    return { snapshotId: req.snapshotId, file: req.file, offset, data, crc32c: crc32c(data) >>> 0, eof };
  }

  private async streamLog(call: grpc.ServerWritableStream<StreamLogRequestMsg, LogMessageMsg>): Promise<void> {
    const abort = new AbortController();
    const cancelled = new SyncProxyError('MASTER_CONNECTION_LOST', 'the replica cancelled the log stream');
    const onCancel = (): void => abort.abort(cancelled);
    call.on('cancelled', onCancel);
    this.streams.add(abort);
    let heartbeat: NodeJS.Timeout | undefined;
    let tracker: { sent(offset: number): void; closed(): void } | undefined;
    try {
      this.admit(call);
      const req = call.request;
      const replica = this.replicaIdentity(req.replica, call.getPeer());
      const log = this.options.log;
      const from = nonNegativeInt(req.fromOffset, 'from_offset');
      if (req.logId !== log.logId) {
        throw new SyncProxyError('LOG_OFFSET_GONE', `log id ${JSON.stringify(req.logId)} is not this master's write log (${log.logId}): a full sync is needed`);
      }
      if (from < 1 || from < log.firstOffset || from > log.lastOffset + 1) {
        throw new SyncProxyError('LOG_OFFSET_GONE', `offset ${from} is not held: the write log holds ${log.firstOffset}..${log.lastOffset}`);
      }
      tracker = this.registry.streamOpened(replica, from);
      let draining = false;
      const waitForDrain = (): Promise<void> =>
        new Promise((resolve) => {
          draining = true;
          const done = (): void => {
            draining = false;
            call.off('drain', done);
            abort.signal.removeEventListener('abort', done);
            resolve();
          };
          call.on('drain', done);
          abort.signal.addEventListener('abort', done, { once: true });
        });
      // Heartbeats go out only when the socket keeps up; a replica that lags gets entries first.
      const beat = (): void => {
        if (abort.signal.aborted || draining) return;
        if (!this.options.isMaster()) {
          abort.abort(new SyncProxyError('NOT_A_MASTER', `proxy ${this.options.runId} stopped serving as a master`));
          return;
        }
        if (!call.write({ heartbeat: { masterOffset: log.lastOffset, timeMs: Date.now() } })) void waitForDrain();
      };
      beat();
      heartbeat = setInterval(beat, HEARTBEAT_INTERVAL_MS);
      for await (const entry of log.follow(from, abort.signal)) {
        if (abort.signal.aborted) break;
        if (draining) await waitForDrain();
        if (abort.signal.aborted) break;
        if (!call.write({ entry: toEntryMsg(entry) })) await waitForDrain();
        tracker.sent(entry.offset);
      }
      if (!abort.signal.aborted) throw new SyncProxyError('INTERNAL', 'the write log stopped following without an error');
      throw abort.signal.reason;
    } catch (error) {
      // An abort may surface as the log's own error or as an AbortError: the abort reason wins.
      const err = abort.signal.aborted ? abort.signal.reason : error;
      if (err === cancelled) return; // the replica went away: nobody to tell
      this.logFailure('StreamLog', call.getPeer(), err);
      call.emit('error', toGrpcStatus(err));
    } finally {
      if (heartbeat) clearInterval(heartbeat);
      call.off('cancelled', onCancel);
      this.streams.delete(abort);
      tracker?.closed();
    }
  }

  private replicaIdentity(msg: ReplicaIdentityMsg | null | undefined, peer: string): ReplicaIdentity {
    const runId = msg?.runId ?? '';
    const host = msg?.host || peerHost(peer);
    const port = msg?.port ?? 0;
    if (typeof runId !== 'string' || runId.length > MAX_ID_LENGTH || typeof host !== 'string' || host.length > MAX_ID_LENGTH) {
      throw new SyncProxyError('INVALID_REQUEST', 'replica identity: run_id and host must be strings of at most 256 characters');
    }
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new SyncProxyError('INVALID_REQUEST', `replica identity: port ${port} is out of range`);
    return { runId, host, port };
  }

  private logFailure(call: string, peer: string, err: unknown): void {
    const e = err instanceof SyncProxyError ? err : undefined;
    this.logger.warn({ call, peer, code: e?.code ?? 'INTERNAL', err }, `${call} failed`);
  }
}

function digest(value: string | Buffer): Buffer {
  return createHash('sha256').update(value).digest();
}

function nonNegativeInt(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new SyncProxyError('INVALID_REQUEST', `${field} must be a non-negative integer below 2^53, got ${String(value)}`);
  }
  return value;
}

function peerHost(peer: string): string {
  const m = /^\[?(.*?)\]?:\d+$/.exec(peer);
  return m ? m[1] : peer;
}

function toEntryMsg(entry: LogEntry): LogMessageMsg['entry'] {
  return { offset: entry.offset, db: entry.db, commands: entry.commands.map((args) => ({ args })), crc32c: entryChecksum(entry) };
}

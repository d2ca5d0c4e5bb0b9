import { expect } from 'chai';
import { crc32c } from '@node-rs/crc32';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ERROR_CATALOGUE, ErrorCode, SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { Manifest, SYNC_PROTOCOL_VERSION, SnapshotStoreView } from '../src/source/types';
import { SnapshotStore } from '../src/source/snapshot-store';
import { WriteLog } from '../src/source/write-log';
import { ERROR_CODE_METADATA_KEY, LogMessageMsg, MetaMsg, PASSWORD_METADATA_KEY, RETRYABLE_METADATA_KEY, loadSyncService } from '../src/sync/proto';
import { fromGrpcError, toGrpcStatus } from '../src/sync/status-mapping';
import { LogStreamMessage, SyncClient } from '../src/sync/sync-client';
import { SyncServer, SyncServerOptions } from '../src/sync/sync-server';
import { freePort } from './helpers/ports';
import { RedisServer } from './helpers/redis-server';
import { entryChecksum } from '../src/source/log-format';

/** A wire log entry with the checksum a real master sends. */
function entryMsg(offset: number, ...commands: Buffer[][]): { offset: number; db: number; commands: { args: Buffer[] }[]; crc32c: number } {
  return { offset, db: 0, commands: commands.map((args) => ({ args })), crc32c: entryChecksum({ offset, db: 0, commands }) };
}

const b = (s: string): Buffer => Buffer.from(s);
const REPLICA = { runId: 'a'.repeat(40), host: '127.0.0.1', port: 7380 };
const logger = silentLogger();

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<SyncProxyError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  if (caught === undefined) throw new Error(`expected ${code}, but the call succeeded`);
  expect(caught, String(caught)).to.be.instanceOf(SyncProxyError);
  expect((caught as SyncProxyError).code, (caught as SyncProxyError).message).to.equal(code);
  return caught as SyncProxyError;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Reads `count` messages of `kinds` from a log stream, then aborts it; returns them and the stop error. */
async function readStream(
  client: SyncClient,
  req: { logId: string; fromOffset: number },
  until: (msgs: LogStreamMessage[]) => boolean,
): Promise<{ messages: LogStreamMessage[]; error: SyncProxyError }> {
  const ac = new AbortController();
  const messages: LogStreamMessage[] = [];
  try {
    for await (const m of client.streamLog({ ...req, replica: REPLICA }, ac.signal)) {
      messages.push(m);
      if (until(messages)) ac.abort();
    }
  } catch (err) {
    expect(err).to.be.instanceOf(SyncProxyError);
    return { messages, error: err as SyncProxyError };
  }
  throw new Error('a log stream ended without an error');
}

/** A store whose content does not matter (auth, role and TLS tests): one fixed manifest. */
class FixedStore implements SnapshotStoreView {
  readonly manifest: Manifest = {
    formatVersion: 1, snapshotId: 'snap-1', logId: 'log-1', logOffset: 0, createdAtMs: Date.now(),
    files: [{ name: 'part-000001.resp', size: 3, crc32c: 0 }], dbs: [{ db: 0, records: 1 }], totalBytes: 3,
  };
  async ensureSnapshot(): Promise<Manifest> {
    return this.manifest;
  }
  async readChunk(snapshotId: string, file: string, offset: number, length: number): Promise<{ data: Buffer; eof: boolean }> {
    if (snapshotId !== 'snap-1') throw new SyncProxyError('SNAPSHOT_NOT_FOUND', snapshotId);
    const data = b('abc').subarray(offset, offset + length);
    return { data, eof: offset + data.length === 3 };
  }
  currentSnapshotId(): string {
    return 'snap-1';
  }
  async snapshotAtLeast(): Promise<Manifest> {
    return this.manifest;
  }
  snapshotFiles(): Array<{ name: string; path: string }> {
    throw new SyncProxyError('SNAPSHOT_NOT_FOUND', 'the fixed store has no files on disk');
  }
}

describe('sync service', function () {
  this.timeout(60_000);
  const cleanups: Array<() => Promise<void> | void> = [];
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'psp-sync-'));
  });
  afterEach(async () => {
    while (cleanups.length > 0) await (cleanups.pop() as () => Promise<void>)();
    rmSync(dir, { recursive: true, force: true });
  });

  async function openLog(segmentBytes = 1 << 16, maxBytes = 1 << 20): Promise<WriteLog> {
    const log = new WriteLog({ dir: path.join(dir, 'log'), maxBytes, segmentBytes, logger });
    await log.open();
    cleanups.push(() => log.close());
    return log;
  }

  async function startServer(opts: Partial<SyncServerOptions> & { log: WriteLog; store: SnapshotStoreView }): Promise<{ server: SyncServer; port: number }> {
    const server = new SyncServer({ bind: '127.0.0.1', port: 0, runId: 'm'.repeat(40), isMaster: () => true, logger, ...opts });
    const port = await server.start();
    cleanups.push(() => server.stop());
    return { server, port };
  }

  function client(port: number, extra: Partial<ConstructorParameters<typeof SyncClient>[0]> = {}): SyncClient {
    const c = new SyncClient({ host: '127.0.0.1', port, rpcTimeoutMs: 5_000, logger, ...extra });
    cleanups.push(() => c.close());
    return c;
  }

  describe('status mapping', () => {
    const expectedStatus: Partial<Record<ErrorCode, grpc.status>> = {
      AUTH_FAILED: grpc.status.UNAUTHENTICATED,
      PROTECTED_MODE: grpc.status.PERMISSION_DENIED,
      SNAPSHOT_NOT_FOUND: grpc.status.NOT_FOUND,
      FILE_NOT_IN_MANIFEST: grpc.status.NOT_FOUND,
      INVALID_REQUEST: grpc.status.INVALID_ARGUMENT,
      HOSTILE_FILE_NAME: grpc.status.INVALID_ARGUMENT,
      SNAPSHOT_BUILDING: grpc.status.UNAVAILABLE,
      NOT_A_MASTER: grpc.status.UNAVAILABLE,
      LOG_OFFSET_GONE: grpc.status.FAILED_PRECONDITION,
      PROTOCOL_VERSION_MISMATCH: grpc.status.FAILED_PRECONDITION,
      IO_ERROR: grpc.status.INTERNAL,
      INTERNAL: grpc.status.INTERNAL,
    };

    it('maps every catalogue code to a status with psp-error-code, psp-retryable and "CODE: message", and back', () => {
      for (const code of Object.keys(ERROR_CATALOGUE) as ErrorCode[]) {
        const status = toGrpcStatus(new SyncProxyError(code, `boom\r\nline two`));
        expect(status.code, code).to.equal(expectedStatus[code] ?? grpc.status.INTERNAL);
        expect(status.details).to.equal(`${code}: boom line two`);
        expect(status.metadata.get(ERROR_CODE_METADATA_KEY)).to.deep.equal([code]);
        expect(status.metadata.get(RETRYABLE_METADATA_KEY)).to.deep.equal([String(ERROR_CATALOGUE[code].retryable)]);
        const back = fromGrpcError(status, 'Call');
        expect(back.code).to.equal(code);
        expect(back.retryable).to.equal(ERROR_CATALOGUE[code].retryable);
        expect(back.message).to.equal('Call: boom line two');
        expect(back.cause).to.equal(status);
      }
    });

    it('distinguishes a missing password (UNAUTHENTICATED) from a wrong one (PERMISSION_DENIED)', () => {
      expect(toGrpcStatus(new SyncProxyError('AUTH_FAILED', 'x', { details: { auth: 'missing' } })).code).to.equal(grpc.status.UNAUTHENTICATED);
      expect(toGrpcStatus(new SyncProxyError('AUTH_FAILED', 'x', { details: { auth: 'wrong' } })).code).to.equal(grpc.status.PERMISSION_DENIED);
    });

    it('keeps a retryable override and wraps non-catalogue errors as INTERNAL', () => {
      const back = fromGrpcError(toGrpcStatus(new SyncProxyError('IO_ERROR', 'disk', { retryable: false })), 'Call');
      expect(back.code).to.equal('IO_ERROR');
      expect(back.retryable).to.equal(false);
      const plain = toGrpcStatus(new Error('plain'));
      expect(plain.code).to.equal(grpc.status.INTERNAL);
      expect(plain.details).to.equal('INTERNAL: plain');
    });

    it('classifies statuses without psp-error-code by their gRPC code', () => {
      const cases: Array<[grpc.status, string, ErrorCode]> = [
        [grpc.status.UNAVAILABLE, 'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1', 'MASTER_UNREACHABLE'],
        [grpc.status.UNAVAILABLE, 'Connection dropped', 'MASTER_CONNECTION_LOST'],
        [grpc.status.UNAVAILABLE, 'read ECONNRESET', 'MASTER_CONNECTION_LOST'],
        [grpc.status.DEADLINE_EXCEEDED, 'Deadline exceeded', 'MASTER_TIMEOUT'],
        [grpc.status.CANCELLED, 'Call cancelled', 'MASTER_CONNECTION_LOST'],
        [grpc.status.UNAUTHENTICATED, 'no', 'AUTH_FAILED'],
        [grpc.status.PERMISSION_DENIED, 'no', 'AUTH_FAILED'],
        [grpc.status.UNIMPLEMENTED, 'The server does not implement the method /pikasync.v1.Sync/GetMeta', 'NOT_A_SYNC_PROXY'],
        [grpc.status.INTERNAL, 'Response message parsing error: index out of range', 'MALFORMED_RESPONSE'],
        [grpc.status.RESOURCE_EXHAUSTED, 'Received message larger than max (9 vs 1)', 'MALFORMED_RESPONSE'],
      ];
      for (const [code, details, expected] of cases) {
        const err = Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
        const mapped = fromGrpcError(err, 'GetMeta');
        expect(mapped.code, details).to.equal(expected);
        expect(mapped.cause).to.equal(err);
      }
    });
  });

  /** The first message of a log stream (then the stream is aborted), or the stream's error. */
  async function firstLogMessage(c: SyncClient, logId: string, fromOffset: number): Promise<LogStreamMessage> {
    const { messages, error } = await readStream(c, { logId, fromOffset }, (m) => m.length >= 1);
    if (messages.length === 0) throw error;
    expect(error.code).to.equal('SYNC_ABORTED');
    return messages[0];
  }

  function everyRpc(c: SyncClient, log: WriteLog): Array<[string, () => Promise<unknown>]> {
    return [
      ['GetMeta', () => c.getMeta({ waitMs: 0, replica: REPLICA })],
      ['GetChunk', () => c.getChunk({ snapshotId: 'snap-1', file: 'part-000001.resp', offset: 0, length: 3, replica: REPLICA })],
      ['StreamLog', () => firstLogMessage(c, log.logId, 1)],
    ];
  }

  describe('authentication, role and protocol version', () => {
    it('refuses a missing password with UNAUTHENTICATED and a wrong one with PERMISSION_DENIED on every RPC', async () => {
      const log = await openLog();
      const { port } = await startServer({ log, store: new FixedStore(), password: 's3cret' });
      for (const [name, call] of everyRpc(client(port), log)) {
        const err = await expectCode(call(), 'AUTH_FAILED');
        expect(err.details.grpcCode, name).to.equal(grpc.status.UNAUTHENTICATED);
        expect(err.retryable).to.equal(false);
      }
      for (const [name, call] of everyRpc(client(port, { password: 's3cret!' }), log)) {
        const err = await expectCode(call(), 'AUTH_FAILED');
        expect(err.details.grpcCode, name).to.equal(grpc.status.PERMISSION_DENIED);
      }
    });

    it('serves every RPC with the right password', async () => {
      const log = await openLog();
      log.append(0, [[b('SET'), b('k'), b('v')]]);
      const { port } = await startServer({ log, store: new FixedStore(), password: 's3cret' });
      const c = client(port, { password: 's3cret' });
      const meta = await c.getMeta({ waitMs: 0, replica: REPLICA });
      expect(meta.snapshotId).to.equal('snap-1');
      expect(meta.masterOffset).to.equal(1);
      expect(meta.protocolVersion).to.equal(SYNC_PROTOCOL_VERSION);
      const chunk = await c.getChunk({ snapshotId: 'snap-1', file: 'part-000001.resp', offset: 1, length: 5, replica: REPLICA });
      expect(chunk.data.toString()).to.equal('bc');
      expect(chunk.eof).to.equal(true);
      expect(chunk.offset).to.equal(1);
      const first = await firstLogMessage(c, log.logId, 1);
      expect(first.heartbeat?.masterOffset).to.equal(1);
    });

    it('accepts any password (or none) when the master has no password', async () => {
      const log = await openLog();
      const { port } = await startServer({ log, store: new FixedStore() });
      for (const password of [undefined, 'whatever']) {
        const meta = await client(port, { password }).getMeta({ waitMs: 0, replica: REPLICA });
        expect(meta.snapshotId).to.equal('snap-1');
      }
    });

    it('answers NOT_A_MASTER (UNAVAILABLE, retryable) on every RPC while the proxy is a replica', async () => {
      const log = await openLog();
      let master = false;
      const { port } = await startServer({ log, store: new FixedStore(), password: 'pw', isMaster: () => master });
      const c = client(port, { password: 'pw' });
      for (const [name, call] of everyRpc(c, log)) {
        const err = await expectCode(call(), 'NOT_A_MASTER');
        expect(err.details.grpcCode, name).to.equal(grpc.status.UNAVAILABLE);
        expect(err.retryable).to.equal(true);
      }
      // Authentication comes first: a stranger does not learn the role.
      await expectCode(client(port).getMeta({ waitMs: 0, replica: REPLICA }), 'AUTH_FAILED');
      master = true;
      expect((await c.getMeta({ waitMs: 0, replica: REPLICA })).snapshotId).to.equal('snap-1');
    });

    it('ends an open log stream with NOT_A_MASTER when the proxy becomes a replica', async () => {
      const log = await openLog();
      let master = true;
      const { port } = await startServer({ log, store: new FixedStore(), isMaster: () => master });
      const ac = new AbortController();
      const seen: LogStreamMessage[] = [];
      const consumed = (async () => {
        for await (const m of client(port).streamLog({ logId: log.logId, fromOffset: 1, replica: REPLICA }, ac.signal)) {
          seen.push(m);
          master = false;
        }
      })();
      await expectCode(consumed, 'NOT_A_MASTER');
      expect(seen[0].heartbeat?.masterOffset).to.equal(0);
    });

    it('refuses a replica speaking another protocol version with PROTOCOL_VERSION_MISMATCH', async () => {
      const log = await openLog();
      const { port } = await startServer({ log, store: new FixedStore() });
      const Sync = loadSyncService();
      const raw = new Sync(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      cleanups.push(() => raw.close());
      const err = await new Promise<grpc.ServiceError>((resolve, reject) => {
        (raw as unknown as { GetMeta: Function }).GetMeta({ protocolVersion: SYNC_PROTOCOL_VERSION + 1, waitMs: 0 }, new grpc.Metadata(), (e: grpc.ServiceError | null) =>
          e ? resolve(e) : reject(new Error('GetMeta with protocol version 2 succeeded')),
        );
      });
      expect(err.code).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(err.metadata.get(ERROR_CODE_METADATA_KEY)).to.deep.equal(['PROTOCOL_VERSION_MISMATCH']);
      expect(fromGrpcError(err, 'GetMeta').code).to.equal('PROTOCOL_VERSION_MISMATCH');
    });
  });

  describe('client against a misbehaving or foreign server', () => {
    /** A raw gRPC server implementing the Sync service with the given handlers. */
    async function fakeMaster(impl: grpc.UntypedServiceImplementation, withService = true): Promise<number> {
      const server = new grpc.Server();
      if (withService) server.addService(loadSyncService().service, impl);
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
      );
      cleanups.push(() => void server.forceShutdown());
      return port;
    }
    const goodMeta = (): MetaMsg => ({
      protocolVersion: SYNC_PROTOCOL_VERSION, formatVersion: 1, snapshotId: 's', logId: 'l', logOffset: 5, createdAtMs: 1,
      files: [{ name: 'part-000001.resp', size: 10, crc32c: 7 }, { name: 'part-000002.resp', size: 5, crc32c: 8 }],
      dbs: [{ db: 0, records: 3 }], totalBytes: 15, masterOffset: 9, partial: false,
    });
    const metaServer = (meta: Partial<MetaMsg>): Promise<number> =>
      fakeMaster({ GetMeta: (_call: unknown, cb: grpc.sendUnaryData<MetaMsg>) => cb(null, { ...goodMeta(), ...meta } as MetaMsg) });

    it('returns a well-formed meta unchanged', async () => {
      const meta = await client(await metaServer({})).getMeta({ waitMs: 0, replica: REPLICA });
      expect(meta).to.deep.equal(goodMeta());
    });

    it('refuses another protocol version, empty ids, wrong totals and hostile names instead of defaults', async () => {
      await expectCode(client(await metaServer({ protocolVersion: 2 })).getMeta({ waitMs: 0, replica: REPLICA }), 'PROTOCOL_VERSION_MISMATCH');
      await expectCode(client(await metaServer({ protocolVersion: 0 })).getMeta({ waitMs: 0, replica: REPLICA }), 'PROTOCOL_VERSION_MISMATCH');
      await expectCode(client(await metaServer({ snapshotId: '' })).getMeta({ waitMs: 0, replica: REPLICA }), 'MALFORMED_RESPONSE');
      await expectCode(client(await metaServer({ logId: '' })).getMeta({ waitMs: 0, replica: REPLICA }), 'MALFORMED_RESPONSE');
      await expectCode(client(await metaServer({ totalBytes: 16 })).getMeta({ waitMs: 0, replica: REPLICA }), 'MALFORMED_RESPONSE');
      await expectCode(client(await metaServer({ formatVersion: 0 })).getMeta({ waitMs: 0, replica: REPLICA }), 'MALFORMED_RESPONSE');
      await expectCode(client(await metaServer({ files: [{ name: '', size: 15, crc32c: 1 }] })).getMeta({ waitMs: 0, replica: REPLICA }), 'MALFORMED_RESPONSE');
      await expectCode(client(await metaServer({ files: [{ name: '../x', size: 15, crc32c: 1 }] })).getMeta({ waitMs: 0, replica: REPLICA }), 'HOSTILE_FILE_NAME');
      await expectCode(client(await metaServer({ files: [{ name: 'a/b', size: 15, crc32c: 1 }] })).getMeta({ waitMs: 0, replica: REPLICA }), 'HOSTILE_FILE_NAME');
    });

    it('an empty answer (every field defaulted) is MALFORMED, not a snapshot', async () => {
      const port = await fakeMaster({ GetMeta: (_c: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { protocolVersion: SYNC_PROTOCOL_VERSION }) });
      await expectCode(client(port).getMeta({ waitMs: 0, replica: REPLICA }), 'MALFORMED_RESPONSE');
    });

    it('refuses a chunk for another file or offset, a short chunk without eof and a bad checksum', async () => {
      let answer: Record<string, unknown> = {};
      const port = await fakeMaster({ GetChunk: (_c: unknown, cb: grpc.sendUnaryData<object>) => cb(null, answer) });
      const c = client(port);
      const ask = (): Promise<unknown> => c.getChunk({ snapshotId: 's', file: 'part-000001.resp', offset: 4, length: 3, replica: REPLICA });
      const data = b('xyz');
      const good = { snapshotId: 's', file: 'part-000001.resp', offset: 4, data, crc32c: crc32c(data), eof: false };
      answer = good;
      expect(((await ask()) as { data: Buffer }).data.toString()).to.equal('xyz');
      answer = { ...good, file: 'part-000002.resp' };
      await expectCode(ask(), 'MALFORMED_RESPONSE');
      answer = { ...good, offset: 0 };
      await expectCode(ask(), 'MALFORMED_RESPONSE');
      answer = { ...good, data: b('xy'), crc32c: crc32c(b('xy')) };
      await expectCode(ask(), 'MALFORMED_RESPONSE');
      answer = { ...good, data: b('xyzw'), crc32c: crc32c(b('xyzw')) };
      await expectCode(ask(), 'MALFORMED_RESPONSE');
      answer = { ...good, crc32c: (crc32c(data) + 1) >>> 0 };
      await expectCode(ask(), 'CHECKSUM_MISMATCH');
      answer = { ...good, snapshotId: '' };
      await expectCode(ask(), 'MALFORMED_RESPONSE');
    });

    it('a server without the Sync service is NOT_A_SYNC_PROXY; a closed port is MASTER_UNREACHABLE', async () => {
      await expectCode(client(await fakeMaster({}, false)).getMeta({ waitMs: 0, replica: REPLICA }), 'NOT_A_SYNC_PROXY');
      await expectCode(client(await freePort()).getMeta({ waitMs: 0, replica: REPLICA }), 'MASTER_UNREACHABLE');
    });

    it('a unary call past its deadline is MASTER_TIMEOUT', async () => {
      const port = await fakeMaster({ GetMeta: () => undefined /* never answers */ });
      await expectCode(client(port, { rpcTimeoutMs: 300 }).getMeta({ waitMs: 0, replica: REPLICA }), 'MASTER_TIMEOUT');
    });

    it('a silent log stream is MASTER_TIMEOUT after the idle timeout; a gap in offsets is MALFORMED_RESPONSE', async () => {
      const silent = await fakeMaster({ StreamLog: () => undefined /* never writes */ });
      const ac = new AbortController();
      const silentRun = (async () => {
        for await (const _ of client(silent, { streamIdleTimeoutMs: 300 }).streamLog({ logId: 'l', fromOffset: 1, replica: REPLICA }, ac.signal));
      })();
      await expectCode(silentRun, 'MASTER_TIMEOUT');

      const gappy = await fakeMaster({
        StreamLog: (call: grpc.ServerWritableStream<unknown, LogMessageMsg>) => {
          call.write({ entry: entryMsg(3, [b('DEL'), b('k')]) });
          call.write({ entry: entryMsg(5, [b('DEL'), b('k')]) });
        },
      });
      const got: LogStreamMessage[] = [];
      const gappyRun = (async () => {
        for await (const m of client(gappy).streamLog({ logId: 'l', fromOffset: 3, replica: REPLICA }, ac.signal)) got.push(m);
      })();
      await expectCode(gappyRun, 'MALFORMED_RESPONSE');
      expect(got.map((m) => m.entry?.offset)).to.deep.equal([3]);
    });

    it('a log entry whose bytes changed on the way fails its CRC32C and is never returned', async () => {
      const port = await fakeMaster({
        StreamLog: (call: grpc.ServerWritableStream<unknown, LogMessageMsg>) => {
          call.write({ entry: entryMsg(1, [b('SET'), b('k'), b('v1')]) });
          const tampered = entryMsg(2, [b('SET'), b('k'), b('v2')]);
          tampered.commands[0].args[2] = b('v3'); // checksum computed for v2
          call.write({ entry: tampered });
        },
      });
      const got: LogStreamMessage[] = [];
      const run = (async () => {
        for await (const m of client(port).streamLog({ logId: 'l', fromOffset: 1, replica: REPLICA }, new AbortController().signal)) got.push(m);
      })();
      await expectCode(run, 'CHECKSUM_MISMATCH');
      expect(got.map((m) => m.entry?.offset)).to.deep.equal([1]);
    });

    it('the idle timeout counts only the master\'s silence, not a slow consumer', async () => {
      const port = await fakeMaster({
        StreamLog: (call: grpc.ServerWritableStream<unknown, LogMessageMsg>) => {
          for (let offset = 1; offset <= 3; offset++) call.write({ entry: entryMsg(offset, [b('DEL'), b(`k${offset}`)]) });
        },
      });
      const got: number[] = [];
      const run = (async () => {
        for await (const m of client(port, { streamIdleTimeoutMs: 200 }).streamLog({ logId: 'l', fromOffset: 1, replica: REPLICA }, new AbortController().signal)) {
          got.push(m.entry!.offset);
          await new Promise((r) => setTimeout(r, 400)); // slower than the idle timeout
        }
      })();
      await expectCode(run, 'MASTER_TIMEOUT');
      expect(got).to.deep.equal([1, 2, 3]);
    });

    it('a master that ends the log stream normally is MASTER_CONNECTION_LOST, not the end of replication', async () => {
      const port = await fakeMaster({ StreamLog: (call: grpc.ServerWritableStream<unknown, LogMessageMsg>) => call.end() });
      const run = (async () => {
        for await (const _ of client(port).streamLog({ logId: 'l', fromOffset: 1, replica: REPLICA }, new AbortController().signal));
      })();
      await expectCode(run, 'MASTER_CONNECTION_LOST');
    });
  });

  describe('TLS', () => {
    function makeCert(name: string): { cert: string; key: string } {
      const cert = path.join(dir, `${name}-cert.pem`);
      const key = path.join(dir, `${name}-key.pem`);
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-days', '2', '-keyout', key, '-out', cert], { stdio: 'ignore' });
      return { cert, key };
    }
    const transportFailures: ErrorCode[] = ['MASTER_UNREACHABLE', 'MASTER_CONNECTION_LOST', 'MASTER_TIMEOUT'];

    it('serves a client that verifies the server certificate and refuses a plaintext client', async () => {
      const server = makeCert('server');
      const log = await openLog();
      const { port } = await startServer({ log, store: new FixedStore(), password: 'pw', tls: { cert: server.cert, key: server.key } });
      const meta = await client(port, { password: 'pw', tls: { ca: server.cert } }).getMeta({ waitMs: 0, replica: REPLICA });
      expect(meta.snapshotId).to.equal('snap-1');
      const plain = await client(port, { password: 'pw', rpcTimeoutMs: 3_000 })
        .getMeta({ waitMs: 0, replica: REPLICA })
        .then(() => undefined, (e: unknown) => e);
      expect(plain).to.be.instanceOf(SyncProxyError);
      expect(transportFailures).to.include((plain as SyncProxyError).code);
      // A client that does not trust the server's certificate is refused too.
      const other = makeCert('other');
      const untrusted = await client(port, { password: 'pw', rpcTimeoutMs: 3_000, tls: { ca: other.cert } })
        .getMeta({ waitMs: 0, replica: REPLICA })
        .then(() => undefined, (e: unknown) => e);
      expect(untrusted).to.be.instanceOf(SyncProxyError);
      expect(transportFailures).to.include((untrusted as SyncProxyError).code);
    });

    it('requires a client certificate signed by the CA when the master has tls.ca', async () => {
      const server = makeCert('server');
      const replica = makeCert('replica');
      const log = await openLog();
      const { port } = await startServer({ log, store: new FixedStore(), tls: { cert: server.cert, key: server.key, ca: replica.cert } });
      const without = await client(port, { rpcTimeoutMs: 3_000, tls: { ca: server.cert } })
        .getMeta({ waitMs: 0, replica: REPLICA })
        .then(() => undefined, (e: unknown) => e);
      expect(without).to.be.instanceOf(SyncProxyError);
      expect(transportFailures).to.include((without as SyncProxyError).code);
      const meta = await client(port, { tls: { ca: server.cert, cert: replica.cert, key: replica.key } }).getMeta({ waitMs: 0, replica: REPLICA });
      expect(meta.snapshotId).to.equal('snap-1');
    });
  });

  describe('StreamLog with the real write log', () => {
    const set = (k: string, v: string): Buffer[][] => [[b('SET'), b(k), b(v)]];

    it('streams entries in order from an offset, then live ones, with heartbeats carrying the master offset', async () => {
      const log = await openLog();
      for (let i = 1; i <= 5; i++) log.append(i % 2, set(`k${i}`, `v${i}`));
      log.append(2, [[b('MULTI')], [b('INCR'), b('n')], [b('EXEC')]]);
      const { port } = await startServer({ log, store: new FixedStore() });
      let appended = false;
      const { messages, error } = await readStream(client(port), { logId: log.logId, fromOffset: 3 }, (msgs) => {
        if (!appended && msgs.some((m) => m.entry?.offset === 6)) {
          appended = true;
          log.append(0, set('live', '7'));
        }
        return msgs.some((m) => m.entry?.offset === 7) && msgs.filter((m) => m.heartbeat).length >= 2;
      });
      expect(error.code).to.equal('SYNC_ABORTED');
      expect(messages[0].heartbeat?.masterOffset).to.equal(6);
      const entries = messages.filter((m) => m.entry).map((m) => m.entry!);
      expect(entries.map((e) => e.offset)).to.deep.equal([3, 4, 5, 6, 7]);
      expect(entries[0]).to.deep.equal({ offset: 3, db: 1, commands: set('k3', 'v3') });
      expect(entries[3]).to.deep.equal({ offset: 6, db: 2, commands: [[b('MULTI')], [b('INCR'), b('n')], [b('EXEC')]] });
      expect(entries[4].commands).to.deep.equal(set('live', '7'));
      const beats = messages.filter((m) => m.heartbeat).map((m) => m.heartbeat!);
      for (const hb of beats) {
        expect(hb.masterOffset).to.be.within(6, 7);
        expect(hb.timeMs).to.be.greaterThan(0);
      }
    });

    it('answers LOG_OFFSET_GONE for a trimmed offset, an offset past the end, a wrong log id and a reset log', async () => {
      const log = await openLog(512, 1024);
      for (let i = 1; i <= 100; i++) log.append(0, set(`key-${i}`, 'x'.repeat(40)));
      await waitFor('the log to trim', () => log.firstOffset > 1);
      const { port } = await startServer({ log, store: new FixedStore() });
      const c = client(port);
      const trimmed = await expectCode(firstLogMessage(c, log.logId, 1), 'LOG_OFFSET_GONE');
      expect(trimmed.details.grpcCode).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(trimmed.retryable).to.equal(true);
      await expectCode(firstLogMessage(c, log.logId, log.lastOffset + 2), 'LOG_OFFSET_GONE');
      await expectCode(firstLogMessage(c, 'not-the-log-id', log.firstOffset), 'LOG_OFFSET_GONE');
      // The oldest held offset still streams.
      const first = log.firstOffset;
      const { messages } = await readStream(c, { logId: log.logId, fromOffset: first }, (m) => m.some((x) => x.entry));
      expect(messages.find((m) => m.entry)?.entry?.offset).to.equal(first);
      // A log reset while a replica follows ends its stream with LOG_OFFSET_GONE.
      const oldId = log.logId;
      const run = readStream(c, { logId: oldId, fromOffset: log.lastOffset + 1 }, () => false);
      await new Promise((r) => setTimeout(r, 200));
      log.reset('test');
      const { error } = await run;
      expect(error.code).to.equal('LOG_OFFSET_GONE');
    });

    it('delivers a large backlog complete and in order to a slow consumer', async () => {
      const log = await openLog(1 << 20, 32 << 20);
      const value = 'v'.repeat(32 * 1024);
      for (let i = 1; i <= 300; i++) log.append(0, set(`big-${i}`, value));
      const { port } = await startServer({ log, store: new FixedStore() });
      const offsets: number[] = [];
      const ac = new AbortController();
      const run = (async () => {
        for await (const m of client(port).streamLog({ logId: log.logId, fromOffset: 1, replica: REPLICA }, ac.signal)) {
          if (!m.entry) continue;
          offsets.push(m.entry.offset);
          expect(m.entry.commands[0][2].length).to.equal(value.length);
          // Stall early (the master must wait on the full window), then read in small steps.
          await new Promise((r) => (offsets.length === 1 ? setTimeout(r, 500) : setImmediate(r)));
          if (offsets.length === 300) ac.abort();
        }
      })();
      await expectCode(run, 'SYNC_ABORTED');
      expect(offsets).to.deep.equal(Array.from({ length: 300 }, (_, i) => i + 1));
    });

    it('lists replicas as sync while copying and online while streaming, and drops them when the stream ends', async () => {
      const log = await openLog();
      log.append(0, set('a', '1'));
      log.append(0, set('b', '2'));
      const { server, port } = await startServer({ log, store: new FixedStore() });
      const c = client(port);
      expect(server.replicas()).to.deep.equal([]);
      await c.getMeta({ waitMs: 0, replica: REPLICA });
      expect(server.replicas()).to.have.length(1);
      expect(server.replicas()[0]).to.include({ runId: REPLICA.runId, host: '127.0.0.1', port: 7380, state: 'sync' });
      const ac = new AbortController();
      const run = (async () => {
        for await (const m of c.streamLog({ logId: log.logId, fromOffset: 1, replica: REPLICA }, ac.signal)) void m;
      })();
      await waitFor('the replica to be online at offset 2', () => server.replicas()[0]?.state === 'online' && server.replicas()[0]?.offset === 2);
      ac.abort();
      await expectCode(run, 'SYNC_ABORTED');
      await waitFor('the replica to be forgotten', () => server.replicas().length === 0);
    });

    it('ends open streams with a retryable error when the server stops', async () => {
      const log = await openLog();
      const { server, port } = await startServer({ log, store: new FixedStore() });
      const run = readStream(client(port), { logId: log.logId, fromOffset: 1 }, () => false);
      await waitFor('the stream to open', () => server.replicas().length === 1);
      await server.stop();
      const { error } = await run;
      expect(error.retryable, error.describe()).to.equal(true);
      expect(['MASTER_CONNECTION_LOST', 'MASTER_UNREACHABLE']).to.include(error.code);
    });
  });

  describe('GetMeta / GetChunk of a real snapshot (SnapshotStore over a real redis-server)', () => {
    let node: RedisServer;
    let groupDir: string;
    let log: WriteLog;
    let store: SnapshotStore;
    let server: SyncServer;
    let port: number;
    let c: SyncClient;

    before(async () => {
      groupDir = mkdtempSync(path.join(os.tmpdir(), 'psp-sync-snap-'));
      node = await RedisServer.start({ databases: 4 });
      const r = node.client();
      for (let i = 0; i < 2000; i += 500) {
        const batch: string[] = [];
        for (let j = i; j < i + 500; j++) batch.push(`str-${j}`, `value-${j}-${'x'.repeat(j % 50)}`);
        await r.mset(...batch);
      }
      const fields: Record<string, string> = {};
      for (let i = 0; i < 5000; i++) fields[`f${i}`] = `v${i}`;
      await r.hset('big-hash', fields);
      await r.select(2);
      await r.rpush('list', ...Array.from({ length: 3000 }, (_, i) => `item-${i}`));
      await r.zadd('zset', 1, 'a', 2.5, 'b');
      await r.set('with-ttl', 'v', 'PX', 600_000);
      r.disconnect();
      log = new WriteLog({ dir: path.join(groupDir, 'log'), maxBytes: 1 << 20, segmentBytes: 1 << 16, logger });
      await log.open();
      for (let i = 1; i <= 3; i++) log.append(0, [[b('SET'), b(`logged-${i}`), b('v')]]);
      store = new SnapshotStore({
        dir: path.join(groupDir, 'snapshots'), node: { host: node.host, port: node.port }, fileSize: 64 * 1024,
        maxAgeMs: 600_000, maxTrackedKeys: 100_000, log, ordered: { barrier: async () => log.lastOffset }, logger,
      });
      await store.init();
      server = new SyncServer({ bind: '127.0.0.1', port: 0, password: 'pw', store, log, runId: 'm'.repeat(40), isMaster: () => true, logger });
      port = await server.start();
      c = new SyncClient({ host: '127.0.0.1', port, password: 'pw', rpcTimeoutMs: 10_000, logger });
    });
    after(async () => {
      c?.close();
      await server?.stop();
      await store?.close();
      await log?.close();
      await node?.stop();
      rmSync(groupDir, { recursive: true, force: true });
    });

    const chunk = (snapshotId: string, file: string, offset: number, length: number): Promise<unknown> =>
      c.getChunk({ snapshotId, file, offset, length, replica: REPLICA });

    it('a first GetMeta with wait 0 answers SNAPSHOT_BUILDING (UNAVAILABLE, retryable); a patient one gets the manifest', async () => {
      const building = await expectCode(c.getMeta({ waitMs: 0, replica: REPLICA }), 'SNAPSHOT_BUILDING');
      expect(building.details.grpcCode).to.equal(grpc.status.UNAVAILABLE);
      expect(building.retryable).to.equal(true);
      const meta = await c.getMeta({ waitMs: 60_000, replica: REPLICA });
      expect(meta.snapshotId).to.equal(store.currentSnapshotId());
      expect(meta.logId).to.equal(log.logId);
      expect(meta.logOffset).to.equal(3);
      expect(meta.masterOffset).to.equal(3);
      expect(meta.files.length).to.be.greaterThan(1);
      expect(meta.totalBytes).to.equal(meta.files.reduce((n, f) => n + f.size, 0));
      expect(meta.dbs.find((d) => d.db === 0)?.records).to.equal(2001);
      expect(meta.dbs.find((d) => d.db === 2)?.records).to.equal(3);
      // The fresh snapshot is shared; master_offset moves with the log.
      log.append(0, [[b('DEL'), b('str-1')]]);
      const again = await c.getMeta({ waitMs: 0, replica: REPLICA });
      expect(again.snapshotId).to.equal(meta.snapshotId);
      expect(again.logOffset).to.equal(3);
      expect(again.masterOffset).to.equal(4);
      expect(server.replicas().map((r) => r.state)).to.deep.equal(['sync']);
    });

    it('a replica accepting partial manifests gets the files finished so far while the build runs; the complete manifest extends them', async () => {
      const dir = path.join(groupDir, 'snapshots-partial');
      const partialStore = new SnapshotStore({
        dir, node: { host: node.host, port: node.port }, fileSize: 8 * 1024,
        maxAgeMs: 600_000, maxTrackedKeys: 100_000, log, ordered: { barrier: async () => log.lastOffset }, logger,
      });
      await partialStore.init();
      const partialServer = new SyncServer({ bind: '127.0.0.1', port: 0, password: 'pw', store: partialStore, log, runId: 'p'.repeat(40), isMaster: () => true, logger });
      const pc = new SyncClient({ host: '127.0.0.1', port: await partialServer.start(), password: 'pw', rpcTimeoutMs: 10_000, logger });
      try {
        const readWhole = async (snapshotId: string, f: { name: string; size: number; crc32c: number }): Promise<Buffer> => {
          const parts: Buffer[] = [];
          for (let offset = 0; offset < f.size; ) {
            const got = await pc.getChunk({ snapshotId, file: f.name, offset, length: 3000, replica: REPLICA });
            parts.push(got.data);
            offset += got.data.length;
          }
          const whole = Buffer.concat(parts);
          expect(crc32c(whole) >>> 0, f.name).to.equal(f.crc32c);
          return whole;
        };
        const first = await pc.getMeta({ waitMs: 60_000, replica: REPLICA, knownFiles: 0 });
        expect(first.partial, 'the first answer comes at the first finished file').to.equal(true);
        expect(first.files.length).to.be.greaterThan(0);
        expect(first.dbs).to.deep.equal([]);
        expect(first.totalBytes).to.equal(first.files.reduce((n, f) => n + f.size, 0));
        // A finished file is served while the build goes on.
        const early = await readWhole(first.snapshotId, first.files[0]);
        let meta = first;
        const counts = [first.files.length];
        while (meta.partial) {
          meta = await pc.getMeta({ waitMs: 60_000, replica: REPLICA, knownFiles: meta.files.length });
          // A partial answer adds files; the complete one may list exactly the last partial's files.
          if (meta.partial) expect(meta.files.length, 'each partial answer adds files').to.be.greaterThan(counts[counts.length - 1]);
          else expect(meta.files.length).to.be.at.least(counts[counts.length - 1]);
          counts.push(meta.files.length);
        }
        expect(meta.snapshotId).to.equal(first.snapshotId);
        expect(meta.files.slice(0, first.files.length)).to.deep.equal(first.files);
        expect(meta.dbs.find((d) => d.db === 0)?.records).to.equal(2001);
        expect(meta.logOffset).to.equal(first.logOffset);
        expect(early.equals(readFileSync(path.join(dir, meta.snapshotId, first.files[0].name)))).to.equal(true);
        for (const f of meta.files) await readWhole(meta.snapshotId, f);
        // Without accept_partial the answer is always the complete manifest.
        expect((await pc.getMeta({ waitMs: 0, replica: REPLICA })).partial).to.equal(false);
        // Continuing a snapshot by id: that snapshot's manifest, or SNAPSHOT_NOT_FOUND once it is gone.
        const continued = await pc.getMeta({ waitMs: 0, replica: REPLICA, knownFiles: meta.files.length, snapshotId: meta.snapshotId });
        expect(continued.files).to.deep.equal(meta.files);
        await expectCode(pc.getMeta({ waitMs: 0, replica: REPLICA, knownFiles: 0, snapshotId: 'no-such-snapshot' }), 'SNAPSHOT_NOT_FOUND');
      } finally {
        pc.close();
        await partialServer.stop();
        await partialStore.close();
      }
    });

    it('chunks reassemble into files whose size and CRC32C match the manifest', async () => {
      const meta = await c.getMeta({ waitMs: 60_000, replica: REPLICA });
      const CHUNK = 7001; // not a divisor of anything: exercises short last chunks
      for (const f of meta.files) {
        const parts: Buffer[] = [];
        for (let offset = 0; ; offset += CHUNK) {
          const got = await c.getChunk({ snapshotId: meta.snapshotId, file: f.name, offset, length: CHUNK, replica: REPLICA });
          expect(got.snapshotId).to.equal(meta.snapshotId);
          expect(got.file).to.equal(f.name);
          expect(got.offset).to.equal(offset);
          expect(got.crc32c).to.equal(crc32c(got.data) >>> 0);
          parts.push(got.data);
          expect(got.eof).to.equal(offset + got.data.length === f.size);
          if (got.eof) break;
          expect(got.data.length).to.equal(CHUNK);
        }
        const whole = Buffer.concat(parts);
        expect(whole.length, f.name).to.equal(f.size);
        expect(crc32c(whole) >>> 0, f.name).to.equal(f.crc32c);
        expect(whole.equals(readFileSync(path.join(groupDir, 'snapshots', meta.snapshotId, f.name)))).to.equal(true);
      }
    });

    it('many chunk requests at once all get their bytes (the store reads one at a time, the rest wait their turn)', async () => {
      const meta = await c.getMeta({ waitMs: 60_000, replica: REPLICA });
      const f = meta.files[0];
      const whole = readFileSync(path.join(groupDir, 'snapshots', meta.snapshotId, f.name));
      const requests = Array.from({ length: 16 }, (_, i) => {
        const offset = Math.floor((i * f.size) / 16);
        return c.getChunk({ snapshotId: meta.snapshotId, file: f.name, offset, length: 1000, replica: REPLICA }).then((got) => ({ offset, got }));
      });
      for (const { offset, got } of await Promise.all(requests)) {
        expect(got.offset).to.equal(offset);
        expect(got.data.equals(whole.subarray(offset, offset + got.data.length)), `bytes at ${offset}`).to.equal(true);
        expect(got.data.length).to.equal(Math.min(1000, f.size - offset));
      }
    });

    it('refuses unknown snapshots, files outside the manifest, hostile names and bad offsets or lengths', async () => {
      const meta = await c.getMeta({ waitMs: 60_000, replica: REPLICA });
      const id = meta.snapshotId;
      const file = meta.files[0];
      const cases: Array<[Promise<unknown>, ErrorCode, grpc.status]> = [
        [chunk('no-such-snapshot', file.name, 0, 10), 'SNAPSHOT_NOT_FOUND', grpc.status.NOT_FOUND],
        [chunk(id, 'part-999999.resp', 0, 10), 'FILE_NOT_IN_MANIFEST', grpc.status.NOT_FOUND],
        [chunk(id, 'manifest.json', 0, 10), 'FILE_NOT_IN_MANIFEST', grpc.status.NOT_FOUND],
        [chunk(id, '../x', 0, 10), 'HOSTILE_FILE_NAME', grpc.status.INVALID_ARGUMENT],
        [chunk(id, '/etc/passwd', 0, 10), 'HOSTILE_FILE_NAME', grpc.status.INVALID_ARGUMENT],
        [chunk(id, 'a/b', 0, 10), 'HOSTILE_FILE_NAME', grpc.status.INVALID_ARGUMENT],
        [chunk(id, `../${id}/${file.name}`, 0, 10), 'HOSTILE_FILE_NAME', grpc.status.INVALID_ARGUMENT],
        [chunk('', file.name, 0, 10), 'INVALID_REQUEST', grpc.status.INVALID_ARGUMENT],
        [chunk(id, '', 0, 10), 'INVALID_REQUEST', grpc.status.INVALID_ARGUMENT],
        [chunk(id, file.name, file.size + 1, 10), 'INVALID_REQUEST', grpc.status.INVALID_ARGUMENT],
        [chunk(id, file.name, 0, 0), 'INVALID_REQUEST', grpc.status.INVALID_ARGUMENT],
        [chunk(id, file.name, 0, 64 * 1024 * 1024 + 1), 'INVALID_REQUEST', grpc.status.INVALID_ARGUMENT],
      ];
      for (const [p, code, status] of cases) {
        const err = await expectCode(p, code);
        expect(err.details.grpcCode, err.message).to.equal(status);
      }
      // Negative numbers are refused by the client before sending ...
      await expectCode(chunk(id, file.name, -1, 10), 'INVALID_REQUEST');
      await expectCode(chunk(id, file.name, 0, -1), 'INVALID_REQUEST');
      // ... because the wire cannot carry them as such: protobufjs turns a negative uint64 into 0
      // and a negative uint32 into 2^32-1. The server refuses what does arrive: lengths past the
      // maximum and offsets that are not exact below 2^53.
      const Sync = loadSyncService();
      const raw = new Sync(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      try {
        for (const [offset, length] of [[0, -1], [2 ** 53, 10], [2 ** 63, 10]]) {
          const md = new grpc.Metadata();
          md.set(PASSWORD_METADATA_KEY, 'pw');
          const err = await new Promise<grpc.ServiceError>((resolve, reject) => {
            (raw as unknown as { GetChunk: Function }).GetChunk({ snapshotId: id, file: file.name, offset, length }, md, (e: grpc.ServiceError | null) =>
              e ? resolve(e) : reject(new Error(`GetChunk offset ${offset} length ${length} succeeded`)),
            );
          });
          expect(err.code).to.equal(grpc.status.INVALID_ARGUMENT);
          expect(fromGrpcError(err, 'GetChunk').code).to.equal('INVALID_REQUEST');
        }
      } finally {
        raw.close();
      }
    });
  });
});

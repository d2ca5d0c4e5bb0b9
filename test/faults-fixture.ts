/**
 * End-to-end pieces for the fault, bad-input and security tests: real nodes (redis-server by
 * default, or real Pika: `kind`, helpers/nodes.ts), the built CLI
 * as child processes (ProxyProcess), FaultProxy between replica and master, a fake gRPC master for
 * answers a real master never gives. Not a .test file: imported by them.
 *
 * How sync traffic is put behind a fault proxy without any test hook in the product: a replica
 * connects to `<SLAVEOF host>:<sync_port from HELLO>`. The master proxy binds 127.0.0.2 (still
 * loopback) on ports P (RESP) and R (sync); two FaultProxies listen on 127.0.0.1:P and
 * 127.0.0.1:R and forward to 127.0.0.2. The replica is told `SLAVEOF 127.0.0.1 P`, HELLO reports
 * R, so both its RESP handshake and its gRPC calls cross a fault proxy.
 */
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import Redis from 'ioredis';
import { encodeValue } from '../src/resp/encode';
import { RequestParser } from '../src/resp/request-parser';
import { loadSyncService, MetaMsg, ChunkMsg } from '../src/sync/proto';
import { toGrpcStatus } from '../src/sync/status-mapping';
import { FaultProxy } from './helpers/fault-proxy';
import { NodeKind, TestNode, startNode } from './helpers/nodes';
import { freePort, waitForPort } from './helpers/ports';
import { ProxyProcess } from './helpers/proxy-process';
import { scanKeys } from './helpers/read-key';

export const MASTER_BIND = '127.0.0.2';

/** Replica flags that keep the suite fast: small backoff, few attempts, small chunks. */
export function replicaFlags(overrides: Record<string, string> = {}): string[] {
  const flags: Record<string, string> = {
    'sync-retry-base-ms': '50',
    'sync-retry-max-ms': '400',
    'sync-max-attempts': '3',
    'sync-chunk-size': '4096',
    'sync-rpc-timeout-ms': '2000',
    'sync-snapshot-wait-ms': '5000',
    'sync-progress-interval-ms': '200',
    ...overrides,
  };
  return Object.entries(flags).flatMap(([k, v]) => [`--${k}`, v]);
}

export function redisClient(host: string, port: number, password?: string): Redis {
  const client = new Redis({ host, port, password, maxRetriesPerRequest: 1, retryStrategy: () => null, lazyConnect: false });
  client.on('error', () => undefined); // a killed proxy is expected here; commands still reject
  return client;
}

/** Writes `n` string keys of ~`valueSize` bytes (plus one hash, by HMSET: Pika's HSET takes one pair) through `client`, pipelined. */
export async function seed(client: Redis, n: number, prefix = 'k', valueSize = 256): Promise<void> {
  for (let start = 0; start < n; start += 500) {
    const p = client.pipeline();
    for (let i = start; i < Math.min(n, start + 500); i++) p.set(`${prefix}:${i}`, `${i}:${'v'.repeat(valueSize)}`);
    const results = await p.exec();
    for (const [err] of results ?? []) if (err) throw err;
  }
  await client.hmset(`${prefix}:hash`, 'f1', 'a', 'f2', 'b');
}

/** Keys of db 0 counted by SCAN (Pika's DBSIZE is the result of its last background scan). */
export async function countKeys(client: Redis): Promise<number> {
  return (await scanKeys(client)).length;
}

export interface SyncStatus {
  role: string;
  state: string;
  confirmed: boolean;
  attempt: number;
  failedAttempts: number;
  bytesTotal: number;
  bytesRead: number;
  bytesResumed: number;
  chunkRetries: number;
  snapshotChanges: number;
  snapshotId: string | null;
  lastError: string | null;
  finalError: string | null;
  errors: Array<{ attempt: number; code: string; retryable: boolean; chain: string }>;
  [key: string]: unknown;
}

export async function syncStatus(client: Redis): Promise<SyncStatus> {
  return JSON.parse(String(await client.call('SYNCPROXY', 'STATUS', 'JSON'))) as SyncStatus;
}

export async function infoReplication(client: Redis): Promise<Record<string, string>> {
  const text = await client.info('replication');
  const out: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** The reply to a read on the replica: the error text, or 'OK:<value>' when it was served. */
export async function readReply(client: Redis, key = 'k:1'): Promise<string> {
  try {
    return `OK:${String(await client.get(key))}`;
  } catch (err) {
    return (err as Error).message;
  }
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 30_000, explain?: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${explain ? `: ${await explain().catch((e) => String(e))}` : ''}`);
    await new Promise((r) => setTimeout(r, 40));
  }
}

/** Waits for a state predicate on SYNCPROXY STATUS and returns that status. */
export function waitStatus(client: Redis, what: string, pred: (s: SyncStatus) => boolean, timeoutMs = 30_000): Promise<SyncStatus> {
  let last: SyncStatus | undefined;
  return waitFor(what, async () => {
    last = await syncStatus(client);
    return pred(last) ? last : undefined;
  }, timeoutMs, async () => JSON.stringify({ ...last, phases: undefined }));
}

/** Waits until the proxy's node connection is up (first commands must not race the connect). */
export async function waitBackendUp(client: Redis): Promise<void> {
  await waitFor('backend link up', async () => (await client.info('proxy')).includes('backend_link_status:up'), 15_000);
}

/** A master proxy (CLI) whose RESP and sync ports are reached through fault proxies. */
export class FaultedMaster {
  private constructor(
    readonly node: TestNode,
    readonly proxy: ProxyProcess,
    /** In front of the master's RESP port (HELLO). */
    readonly resp: FaultProxy,
    /** In front of the master's gRPC sync port. */
    readonly sync: FaultProxy,
    /** Straight to the master proxy (not through a fault proxy); replaced by restart(). */
    public client: Redis,
    private readonly password?: string,
  ) {}

  static async start(extraArgs: string[] = [], kind: NodeKind = 'redis'): Promise<FaultedMaster> {
    const pass = extraArgs.indexOf('--requirepass');
    const password = pass >= 0 ? extraArgs[pass + 1] : undefined;
    const node = await startNode(kind);
    const port = await freePort();
    let syncPort = await freePort();
    while (syncPort === port) syncPort = await freePort();
    const resp = await FaultProxy.start({ target: { host: MASTER_BIND, port }, port });
    const sync = await FaultProxy.start({ target: { host: MASTER_BIND, port: syncPort }, port: syncPort });
    const proxy = await ProxyProcess.start({ backend: node, port, syncPort, extraArgs: ['--bind', MASTER_BIND, ...extraArgs] });
    const ready = Promise.all([waitForPort(port, 15_000, MASTER_BIND), waitForPort(syncPort, 15_000, MASTER_BIND)]);
    const master = new FaultedMaster(node, proxy, resp, sync, await ready.then(() => redisClient(MASTER_BIND, port, password), () => redisClient(MASTER_BIND, port, password)), password);
    try {
      await ready;
      await waitBackendUp(master.client);
    } catch (err) {
      await master.stop();
      throw err;
    }
    return master;
  }

  /** The address a replica is told in SLAVEOF: the RESP fault proxy. */
  get port(): number {
    return this.resp.port;
  }

  /** After a crash: restart the CLI on the same ports and data dir and wait for it. */
  async restart(): Promise<void> {
    this.client.disconnect();
    await this.proxy.restart();
    await waitForPort(this.proxy.port, 15_000, MASTER_BIND);
    await waitForPort(this.proxy.syncPort, 15_000, MASTER_BIND);
    this.client = redisClient(MASTER_BIND, this.proxy.port, this.password);
    await waitBackendUp(this.client);
  }

  async stop(): Promise<void> {
    this.client.disconnect();
    await this.resp.stop();
    await this.sync.stop();
    await this.proxy.stop().catch(() => undefined);
    await this.node.stop();
  }
}

/** A replica: its own node (redis-server by default) and the CLI in front of it. */
export class Replica {
  client: Redis;
  private constructor(readonly node: TestNode, readonly proxy: ProxyProcess, private readonly password?: string) {
    this.client = redisClient('127.0.0.1', proxy.port, password);
  }

  static async start(extraArgs: string[] = [], options: { dataDir?: string; backend?: { host: string; port: number }; kind?: NodeKind } = {}): Promise<Replica> {
    const pass = extraArgs.indexOf('--requirepass');
    const node = await startNode(options.kind ?? 'redis');
    let proxy: ProxyProcess;
    try {
      proxy = await ProxyProcess.start({ backend: options.backend ?? node, dataDir: options.dataDir, extraArgs });
    } catch (err) {
      await node.stop();
      throw err;
    }
    const replica = new Replica(node, proxy, pass >= 0 ? extraArgs[pass + 1] : undefined);
    try {
      await waitBackendUp(replica.client);
    } catch (err) {
      await replica.stop();
      throw err;
    }
    return replica;
  }

  slaveof(host: string, port: number): Promise<unknown> {
    return this.client.call('SLAVEOF', host, String(port));
  }

  status(): Promise<SyncStatus> {
    return syncStatus(this.client);
  }

  waitStatus(what: string, pred: (s: SyncStatus) => boolean, timeoutMs?: number): Promise<SyncStatus> {
    return waitStatus(this.client, what, pred, timeoutMs);
  }

  /** After a crash: same ports and data dir; a new client. */
  async restart(): Promise<void> {
    this.client.disconnect();
    await this.proxy.restart();
    this.client = redisClient('127.0.0.1', this.proxy.port, this.password);
  }

  async stop(): Promise<void> {
    this.client.disconnect();
    await this.proxy.stop().catch(() => undefined);
    await this.node.stop();
  }
}

export interface FakeGrpcHandlers {
  getMeta: (call: grpc.ServerUnaryCall<unknown, MetaMsg>) => MetaMsg | Error;
  getChunk?: (req: { snapshotId: string; file: string; offset: number; length: number }) => ChunkMsg | Error;
}

/**
 * A fake master: a RESP port answering AUTH/SYNCPROXY HELLO like a master proxy, and a raw gRPC
 * server of the Sync service whose answers the test chooses (the peer under test, not our code).
 */
export class FakeGrpcMaster {
  readonly calls = { getMeta: 0, getChunk: 0, streamLog: 0 };
  private constructor(private readonly resp: net.Server, private readonly sockets: Set<net.Socket>, private readonly server: grpc.Server, readonly port: number, readonly syncPort: number) {}

  static async start(handlers: FakeGrpcHandlers, options: { helloProtocol?: number } = {}): Promise<FakeGrpcMaster> {
    const server = new grpc.Server();
    let master: FakeGrpcMaster | undefined;
    const answer = <T>(cb: grpc.sendUnaryData<T>, result: T | Error): void => {
      if (result instanceof Error) cb('code' in result && typeof (result as grpc.ServiceError).code === 'number' ? (result as grpc.ServiceError) : toGrpcStatus(result));
      else cb(null, result);
    };
    server.addService(loadSyncService().service, {
      GetMeta: (call: grpc.ServerUnaryCall<unknown, MetaMsg>, cb: grpc.sendUnaryData<MetaMsg>) => {
        master!.calls.getMeta++;
        answer(cb, handlers.getMeta(call));
      },
      GetChunk: (call: grpc.ServerUnaryCall<{ snapshotId: string; file: string; offset: number; length: number }, ChunkMsg>, cb: grpc.sendUnaryData<ChunkMsg>) => {
        master!.calls.getChunk++;
        answer(cb, handlers.getChunk ? handlers.getChunk(call.request) : new Error('no chunks here'));
      },
      StreamLog: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        master!.calls.streamLog++;
        call.end();
      },
    });
    const syncPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
    const sockets = new Set<net.Socket>();
    const resp = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
      const parser = new RequestParser();
      socket.on('data', (chunk) => {
        parser.feed(chunk);
        for (let req = parser.next(); req; req = parser.next()) {
          const name = req.args.map((a) => a.toString()).join(' ').toUpperCase();
          if (name === 'SYNCPROXY HELLO') {
            socket.write(encodeValue(['name', 'pika-sync-proxy', 'version', '0.1.0', 'protocol', options.helloProtocol ?? 1, 'sync_port', syncPort, 'run_id', 'f'.repeat(40), 'role', 'master']));
          } else if (name.startsWith('AUTH')) {
            socket.write('+OK\r\n');
          } else {
            socket.write(`-ERR unknown command\r\n`);
          }
        }
      });
    });
    await new Promise<void>((resolve) => resp.listen(0, '127.0.0.1', () => resolve()));
    master = new FakeGrpcMaster(resp, sockets, server, (resp.address() as net.AddressInfo).port, syncPort);
    return master;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.resp.close(() => resolve()));
    this.server.forceShutdown();
  }
}

/** A well-formed meta for the fake master; tests override fields to make it wrong. */
export function fakeMeta(files: Array<{ name: string; size: number; crc32c: number }>, overrides: Partial<MetaMsg> = {}): MetaMsg {
  return {
    protocolVersion: 1, formatVersion: 1, snapshotId: 'snap-fake-1', logId: 'log-fake', logOffset: 0, createdAtMs: Date.now(),
    files, dbs: [{ db: 0, records: 1 }], totalBytes: files.reduce((a, f) => a + f.size, 0), masterOffset: 0, partial: false, ...overrides,
  };
}

/** /proc/<pid>/status VmRSS in bytes. */
export async function rssOf(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(text);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/**
 * Shared pieces of the replica end-to-end tests (test/replica-e2e.test.ts, replica-resume.test.ts):
 * real nodes (redis-server or Pika, helpers/nodes.ts) behind real proxy CLI processes, a mixed
 * data set, INFO parsing, waiting and a cleanup list. Not a .test file: imported by them.
 */
import Redis from 'ioredis';
import { compareNodes } from './helpers/compare-nodes';
import { NodeKind, StartNodeOptions, TestNode, dataDbs, startNode } from './helpers/nodes';
import { ProxyProcess } from './helpers/proxy-process';

/** The dbs of a redis-server node; a Pika node has only db 0 (helpers/nodes.ts dataDbs). */
export const DATA_DBS = dataDbs('redis');
export { Writers } from './helpers/sync-writers';

export interface ProxyPair {
  masterNode: TestNode;
  replicaNode: TestNode;
  master: ProxyProcess;
  replica: ProxyProcess;
  /** Clients of the master proxy and of the replica proxy. */
  mc: Redis;
  rc: Redis;
}

/** Things to stop after a test, in reverse order of creation; errors are collected, not hidden. */
export class Cleanup {
  private readonly items: Array<() => Promise<unknown> | unknown> = [];

  /**
   * One Cleanup for every test of the enclosing describe, run after each test (run() leaves it
   * empty for the next).
   */
  static perTest(): Cleanup {
    const cleanup = new Cleanup();
    afterEach(() => cleanup.run());
    return cleanup;
  }

  add<T>(item: T, stop: (item: T) => Promise<unknown> | unknown): T {
    this.items.push(() => stop(item));
    return item;
  }

  /** A redis-server (optionally the Pika profile). */
  redis(options: { pikaProfile?: boolean } = {}): Promise<TestNode> {
    return this.node('redis', options);
  }

  /** A real node of `kind`, stopped (and its dir removed) by run(). */
  node(kind: NodeKind, options: StartNodeOptions = {}): Promise<TestNode> {
    return startNode(kind, options).then((s) => this.add(s, (x) => x.stop()));
  }

  proxy(node: TestNode, extraArgs: string[] = [], dataDir?: string): Promise<ProxyProcess> {
    return ProxyProcess.start({ backend: node, extraArgs: ['--log-level', 'info', ...extraArgs], dataDir }).then((p) => this.add(p, (x) => x.stop()));
  }

  client(client: Redis): Redis {
    return this.add(client, (c) => c.disconnect());
  }

  /** Two nodes of `kind`, a master proxy and a replica proxy (FAST_RETRY) in front, and a client of each. */
  async pair(kind: NodeKind): Promise<ProxyPair> {
    const masterNode = await this.node(kind);
    const replicaNode = await this.node(kind);
    const master = await this.proxy(masterNode);
    const replica = await this.proxy(replicaNode, FAST_RETRY);
    return { masterNode, replicaNode, master, replica, mc: this.client(proxyClient(master)), rc: this.client(proxyClient(replica)) };
  }

  async run(): Promise<void> {
    const errors: unknown[] = [];
    while (this.items.length > 0) {
      try {
        await this.items.pop()!();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new Error(`cleanup failed: ${errors.map(String).join('; ')}`);
  }
}

/** Replica flags that keep retries short for tests. */
export const FAST_RETRY = ['--sync-retry-base-ms', '100', '--sync-retry-max-ms', '1000', '--sync-max-attempts', '5', '--sync-progress-interval-ms', '200'];

export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

export async function replInfo(client: Redis): Promise<Record<string, string>> {
  return parseInfo(String(await client.call('INFO', 'replication')));
}

export async function syncStatus(client: Redis): Promise<Record<string, unknown>> {
  return JSON.parse(String(await client.call('SYNCPROXY', 'STATUS', 'JSON'))) as Record<string, unknown>;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 30_000, pauseMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pauseMs));
  }
}

/** Waits for sync_confirmed:1; on timeout the message carries the replica's status and log tail. */
export async function waitConfirmed(replica: ProxyProcess, client: Redis, timeoutMs = 30_000): Promise<Record<string, string>> {
  try {
    return await waitFor('sync_confirmed:1', async () => {
      const info = await replInfo(client);
      return info.sync_confirmed === '1' && info.sync_state === 'streaming' ? info : undefined;
    }, timeoutMs, 50);
  } catch (err) {
    const status = await client.call('SYNCPROXY', 'STATUS').catch((e: Error) => e.message);
    throw new Error(`${(err as Error).message}\n${String(status)}\n${replica.tail(20)}`);
  }
}

/** Waits until the replica applied everything the master logged (offsets equal, master idle). */
export async function waitCaughtUp(master: Redis, replica: Redis, timeoutMs = 20_000): Promise<number> {
  let last = '';
  try {
    return await waitFor('replica caught up with the master write log', async () => {
      const m = Number((await replInfo(master)).master_repl_offset);
      const r = await replInfo(replica);
      last = `master_repl_offset ${m}, replica slave_repl_offset ${r.slave_repl_offset}, state ${r.sync_state}`;
      return r.sync_state === 'streaming' && Number(r.slave_repl_offset) === m ? m : undefined;
    }, timeoutMs, 50);
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${last}`);
  }
}

export async function expectNodesEqual(a: TestNode, b: TestNode): Promise<void> {
  const diffs = await compareNodes(a, b);
  if (diffs.length > 0) throw new Error(`nodes differ (A=${a.address}, B=${b.address}):\n  ${diffs.join('\n  ')}`);
}


export interface SeedOptions {
  /** String keys per db. */
  strings?: number;
  /** Add the 100k-field hash and the 100k-element list (bigKeyDbs). */
  bigKeys?: boolean;
  bigSize?: number;
  prefix?: string;
  /**
   * Add stream keys; default only on redis-server. Pika 4.0.1's XRANGE gives back other ids than
   * XADD was given, so the proxy refuses to copy a stream from it (UNSUPPORTED_DATA, tested in
   * replica-e2e.test.ts); a Pika data set for a sync that must succeed has no streams.
   */
  streams?: boolean;
}

/** Where seed() puts `<prefix>:big:hash` and `<prefix>:big:list`: dbs 0 and 3 on redis, 0 on Pika. */
export function bigKeyDbs(kind: NodeKind): { hash: number; list: number } {
  const dbs = dataDbs(kind);
  return { hash: dbs[0], list: dbs[1] ?? dbs[0] };
}

/**
 * Every type in each of dataDbs(kind) (0, 3, 7 on redis; 0 on Pika), TTL keys (long TTLs so none
 * expires during a test; set with EXPIRE, PEXPIRE and SETEX, which both kinds apply as Redis
 * does), binary-ish values and keys, and optionally two big keys. Written straight to the node
 * (the master proxy reads the node for its snapshot; only writes during the sync must go through
 * the proxy). Hashes are written with HMSET (Pika's HSET takes one pair).
 */
export async function seed(node: TestNode, options: SeedOptions = {}): Promise<void> {
  const strings = options.strings ?? 500;
  const p = options.prefix ?? 's';
  const big = options.bigSize ?? 100_000;
  const bigDbs = bigKeyDbs(node.kind);
  const streams = options.streams ?? node.kind !== 'pika';
  for (const db of dataDbs(node.kind)) {
    const c = node.client(db);
    try {
      await c.select(db);
      let pipe = c.pipeline();
      for (let i = 0; i < strings; i++) {
        if (i % 10 === 3) pipe.setex(`${p}:str:${db}:${i}`, 400 + i, `value-${db}-${i}-${'x'.repeat(i % 50)}`);
        else pipe.set(`${p}:str:${db}:${i}`, `value-${db}-${i}-${'x'.repeat(i % 50)}`);
        if (i % 5 === 0) pipe.pexpire(`${p}:str:${db}:${i}`, 300_000 + i * 10);
      }
      pipe.set(Buffer.from(`${p}:bin:\r\n\x00\xff`, 'latin1'), Buffer.from([0, 13, 10, 255, 128, 36, 42]));
      pipe.set(`${p}:empty`, '');
      for (let i = 0; i < 20; i++) {
        const fields: string[] = [];
        for (let f = 0; f < 30; f++) fields.push(`f${f}`, `v${db}-${i}-${f}`);
        pipe.hmset(`${p}:hash:${i}`, ...fields);
        pipe.rpush(`${p}:list:${i}`, ...Array.from({ length: 25 }, (_, j) => `e${j}-${i % 3}`));
        pipe.sadd(`${p}:set:${i}`, ...Array.from({ length: 25 }, (_, j) => `m${j}`));
        pipe.zadd(`${p}:zset:${i}`, ...Array.from({ length: 25 }, (_, j) => [String(j * 1.5 - 7), `z${j}`]).flat());
        if (streams) for (let e = 0; e < 10; e++) pipe.xadd(`${p}:stream:${i}`, `${1000 + e}-${i}`, 'field', `v${e}`, 'n', String(e));
        if (i % 4 === 0) {
          pipe.expire(`${p}:hash:${i}`, 600);
          pipe.expire(`${p}:list:${i}`, 700);
          pipe.expire(`${p}:zset:${i}`, 800);
          if (streams) pipe.expire(`${p}:stream:${i}`, 900);
          pipe.pexpire(`${p}:set:${i}`, 650_000);
        }
      }
      await execOrThrow(pipe);
      if (options.bigKeys) await seedBigKeys(c, db, bigDbs, p, big);
    } finally {
      c.disconnect();
    }
  }
}

async function execOrThrow(pipe: ReturnType<Redis['pipeline']>): Promise<void> {
  const results = (await pipe.exec()) ?? [];
  const failed = results.find(([err]) => err);
  if (failed) throw new Error(`seed command failed: ${(failed[0] as Error).message}`);
}

async function seedBigKeys(c: Redis, db: number, dbs: { hash: number; list: number }, p: string, big: number): Promise<void> {
  for (let start = 0; start < big; start += 5000) {
    const pipe = c.pipeline();
    for (let i = start; i < Math.min(big, start + 5000); i += 500) {
      const end = Math.min(big, i + 500);
      if (db === dbs.hash) {
        const fields: string[] = [];
        for (let j = i; j < end; j++) fields.push(`field:${j}`, `hv:${j}`);
        pipe.hmset(`${p}:big:hash`, ...fields);
      }
      if (db === dbs.list) pipe.rpush(`${p}:big:list`, ...Array.from({ length: end - i }, (_, j) => `lv:${i + j}`));
    }
    await execOrThrow(pipe);
  }
  if (db === dbs.list) await c.expire(`${p}:big:list`, 3600);
}

/** An ioredis client to a proxy (a process, or one in-process) that does not retry (a refused command must surface). */
export function proxyClient(proxy: { host?: string; port: number }, db = 0): Redis {
  return new Redis({ host: proxy.host ?? '127.0.0.1', port: proxy.port, db, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: true });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Every key the writers set with a TTL form exists on both nodes with a TTL (a TTL rewritten into
 * an immediate deletion, or dropped, fails here by name); values and TTLs within 1 s are compared
 * by expectNodesEqual.
 */
export async function expectTtlKeysKept(ttlKeys: Iterable<string>, ...nodes: TestNode[]): Promise<void> {
  const problems: string[] = [];
  for (const node of nodes) {
    const clients = new Map<number, Redis>();
    try {
      for (const entry of ttlKeys) {
        const [dbText, key] = entry.split(' ');
        const db = Number(dbText);
        if (!clients.has(db)) clients.set(db, node.client(db));
        const c = clients.get(db)!;
        const exists = await c.exists(key);
        const pttl = await c.pttl(key);
        if (exists !== 1 || pttl <= 0) problems.push(`${node.kind} ${node.address} db ${db} ${key}: exists ${exists}, PTTL ${pttl}`);
      }
    } finally {
      for (const c of clients.values()) c.disconnect();
    }
  }
  if (problems.length > 0) throw new Error(`keys written with a TTL are missing or lost their TTL:\n  ${problems.join('\n  ')}`);
}

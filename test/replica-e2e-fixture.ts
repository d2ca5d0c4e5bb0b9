/**
 * Shared pieces of the replica end-to-end tests (test/replica-e2e.test.ts, replica-resume.test.ts):
 * real redis-servers behind real proxy CLI processes, a mixed data set, INFO parsing, waiting and
 * a cleanup list. Not a .test file: imported by them.
 */
import Redis from 'ioredis';
import { compareNodes } from './helpers/compare-nodes';
import { ProxyProcess } from './helpers/proxy-process';
import { RedisServer } from './helpers/redis-server';

export const DATA_DBS = [0, 3, 7];

/** Things to stop after a test, in reverse order of creation; errors are collected, not hidden. */
export class Cleanup {
  private readonly items: Array<() => Promise<unknown> | unknown> = [];

  add<T>(item: T, stop: (item: T) => Promise<unknown> | unknown): T {
    this.items.push(() => stop(item));
    return item;
  }

  redis(options: { pikaProfile?: boolean } = {}): Promise<RedisServer> {
    return RedisServer.start(options).then((s) => this.add(s, (x) => x.stop()));
  }

  proxy(node: RedisServer, extraArgs: string[] = [], dataDir?: string): Promise<ProxyProcess> {
    return ProxyProcess.start({ backend: node, extraArgs: ['--log-level', 'info', ...extraArgs], dataDir }).then((p) => this.add(p, (x) => x.stop()));
  }

  client(client: Redis): Redis {
    return this.add(client, (c) => c.disconnect());
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

export async function expectNodesEqual(a: RedisServer, b: RedisServer): Promise<void> {
  const diffs = await compareNodes(a, b);
  if (diffs.length > 0) throw new Error(`nodes differ (A=${a.address}, B=${b.address}):\n  ${diffs.join('\n  ')}`);
}

export interface SeedOptions {
  /** String keys per db. */
  strings?: number;
  /** Add the 100k-field hash (db 0) and the 100k-element list (db 3). */
  bigKeys?: boolean;
  bigSize?: number;
  prefix?: string;
}

/**
 * Every type in dbs 0, 3 and 7, TTL keys (long TTLs so none expires during a test), binary-ish
 * values and keys, and optionally two big keys. Written straight to the node (the master proxy
 * reads the node for its snapshot; only writes during the sync must go through the proxy).
 */
export async function seed(node: RedisServer, options: SeedOptions = {}): Promise<void> {
  const strings = options.strings ?? 500;
  const p = options.prefix ?? 's';
  const big = options.bigSize ?? 100_000;
  for (const db of DATA_DBS) {
    const c = node.client(db);
    try {
      await c.select(db);
      let pipe = c.pipeline();
      for (let i = 0; i < strings; i++) {
        pipe.set(`${p}:str:${db}:${i}`, `value-${db}-${i}-${'x'.repeat(i % 50)}`);
        if (i % 5 === 0) pipe.pexpire(`${p}:str:${db}:${i}`, 300_000 + i * 10);
      }
      pipe.set(Buffer.from(`${p}:bin:\r\n\x00\xff`, 'latin1'), Buffer.from([0, 13, 10, 255, 128, 36, 42]));
      pipe.set(`${p}:empty`, '');
      for (let i = 0; i < 20; i++) {
        const fields: string[] = [];
        for (let f = 0; f < 30; f++) fields.push(`f${f}`, `v${db}-${i}-${f}`);
        pipe.hset(`${p}:hash:${i}`, ...fields);
        pipe.rpush(`${p}:list:${i}`, ...Array.from({ length: 25 }, (_, j) => `e${j}-${i % 3}`));
        pipe.sadd(`${p}:set:${i}`, ...Array.from({ length: 25 }, (_, j) => `m${j}`));
        pipe.zadd(`${p}:zset:${i}`, ...Array.from({ length: 25 }, (_, j) => [String(j * 1.5 - 7), `z${j}`]).flat());
        for (let e = 0; e < 10; e++) pipe.xadd(`${p}:stream:${i}`, `${1000 + e}-${i}`, 'field', `v${e}`, 'n', String(e));
        if (i % 4 === 0) {
          pipe.expire(`${p}:hash:${i}`, 600);
          pipe.expire(`${p}:list:${i}`, 700);
          pipe.expire(`${p}:zset:${i}`, 800);
          pipe.expire(`${p}:stream:${i}`, 900);
        }
      }
      await pipe.exec();
      if (options.bigKeys && (db === 0 || db === 3)) {
        for (let start = 0; start < big; start += 5000) {
          pipe = c.pipeline();
          for (let i = start; i < Math.min(big, start + 5000); i += 500) {
            if (db === 0) {
              const fields: string[] = [];
              for (let j = i; j < Math.min(big, i + 500); j++) fields.push(`field:${j}`, `hv:${j}`);
              pipe.hset(`${p}:big:hash`, ...fields);
            } else {
              pipe.rpush(`${p}:big:list`, ...Array.from({ length: Math.min(big, i + 500) - i }, (_, j) => `lv:${i + j}`));
            }
          }
          await pipe.exec();
        }
        if (db === 3) await c.expire(`${p}:big:list`, 3600);
      }
    } finally {
      c.disconnect();
    }
  }
}

/** An ioredis client to a proxy that does not retry (a refused command must surface). */
export function proxyClient(proxy: ProxyProcess, db = 0): Redis {
  return new Redis({ host: proxy.host, port: proxy.port, db, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: true });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Concurrent clients writing through the MASTER proxy: every command family the test names, on
 * seeded keys (so they race the snapshot's reads) and on keys of their own, in dbs 0, 3, 5 and 7.
 * A command error is recorded (the test asserts there were none): writers never hide a failure.
 */
export class Writers {
  private running = true;
  private readonly loops: Array<Promise<void>> = [];
  readonly errors: string[] = [];
  ops = 0;

  constructor(private readonly master: ProxyProcess) {}

  start(): this {
    for (const db of [0, 3, 7]) this.loops.push(this.mixed(db, db * 1000));
    this.loops.push(this.flusher(5));
    return this;
  }

  /** Stops the writers and waits for their last commands' replies. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private async mixed(db: number, seed: number): Promise<void> {
    const c = proxyClient(this.master, db);
    let n = seed;
    try {
      while (this.running) {
        n++;
        const i = n % 20;
        try {
          switch (n % 12) {
            case 0: await c.incr(`w:ctr:${n % 7}`); break;
            case 1: await c.lpush(`s:list:${i}`, `w${n}`); await c.rpop(`s:list:${(i + 3) % 20}`); break;
            case 2: await c.hincrby(`s:hash:${i}`, `cnt${n % 30}`, 1); break;
            case 3: await c.sadd(`s:set:${i}`, `w${n}`); await c.srem(`s:set:${(i + 1) % 20}`, `m${n % 25}`); break;
            case 4: await c.zincrby(`s:zset:${i}`, 1.5, `z${n % 25}`); break;
            case 5: await c.expire(`s:str:${db}:${n % 500}`, 1000 + (n % 100)); break;
            case 6: await c.del(`s:str:${db}:${(n * 7) % 500}`); break;
            case 7: await c.mset(`w:m:${n % 13}`, `a${n}`, `s:str:${db}:${(n * 3) % 500}`, `mset${n}`); break;
            case 8: {
              const r = await c.multi().incr('w:tx').hset(`s:hash:${i}`, 'tx', String(n)).lpush('w:txlist', String(n)).expire('w:txlist', 2000).exec();
              for (const [err] of r ?? []) if (err) throw err;
              if (!r) throw new Error('EXEC aborted');
              break;
            }
            case 9: await c.xadd(`s:stream:${i}`, '*', 'w', String(n)); break;
            case 10: await c.set(`w:ex:${n % 11}`, String(n), 'EX', 500 + (n % 50)); break;
            default: await c.hset(`w:h:${n % 5}`, `f${n % 40}`, String(n)); break;
          }
          this.ops++;
        } catch (err) {
          this.errors.push(`db ${db} op ${n % 12}: ${(err as Error).message}`);
          if (this.errors.length > 20) return;
        }
      }
    } finally {
      c.disconnect();
    }
  }

  /** Fills db 5 and flushes it now and then (FLUSHDB of one db while the others are written). */
  private async flusher(db: number): Promise<void> {
    const c = proxyClient(this.master, db);
    let n = 0;
    try {
      while (this.running) {
        n++;
        try {
          if (n % 40 === 0) await c.flushdb();
          else await c.set(`f:${n % 100}`, String(n));
          this.ops++;
        } catch (err) {
          this.errors.push(`db ${db} flusher: ${(err as Error).message}`);
          if (this.errors.length > 20) return;
        }
      }
    } finally {
      c.disconnect();
    }
  }
}

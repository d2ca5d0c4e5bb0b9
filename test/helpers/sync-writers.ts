/**
 * Concurrent clients writing through the MASTER proxy while a replica syncs (replica-e2e tests):
 * every command family (streams on redis-server only) on seeded keys (so they race the snapshot's reads) and on keys of their
 * own, in every data db of the node kind, plus one flusher. Every TTL form a client may send
 * (EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, SETEX, PSETEX, SET EX/PX) goes to keys `w:ttl:<form>:*`
 * that always carry a future TTL, recorded in `ttlKeys` so a test can check each of them.
 * On redis-server the forms Pika refuses (SET EXAT/PXAT/KEEPTTL, GETEX) are sent too; never to a
 * Pika-backed proxy. A command error is recorded (the test asserts there were none).
 */
import Redis from 'ioredis';
import { NodeKind, dataDbs } from './nodes';

interface ProxyAddress {
  host: string;
  port: number;
}

/** An ioredis client to a proxy that does not retry (a refused command must surface). */
function client(proxy: ProxyAddress, db: number): Redis {
  return new Redis({ host: proxy.host, port: proxy.port, db, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: true });
}

type TtlForm = (c: Redis, key: string, n: number) => Promise<unknown>;

const nowS = (): number => Math.floor(Date.now() / 1000);

/** TTL forms both kinds must see applied; each leaves the key with a TTL of 400..1600 s. */
const TTL_FORMS: Record<string, TtlForm> = {
  expire: async (c, k, n) => c.multi().set(k, `v${n}`).expire(k, 1000 + (n % 100)).exec().then(checkExec),
  pexpire: async (c, k, n) => c.multi().set(k, `v${n}`).pexpire(k, 1_100_000 + n).exec().then(checkExec),
  expireat: async (c, k, n) => c.multi().set(k, `v${n}`).expireat(k, nowS() + 1200 + (n % 100)).exec().then(checkExec),
  pexpireat: async (c, k, n) => c.multi().set(k, `v${n}`).pexpireat(k, Date.now() + 1_300_000 + n).exec().then(checkExec),
  setex: (c, k, n) => c.setex(k, 900 + (n % 50), `v${n}`),
  psetex: (c, k, n) => c.psetex(k, 800_000 + n, `v${n}`),
  'set-ex': (c, k, n) => c.set(k, `v${n}`, 'EX', 500 + (n % 50)),
  'set-px': (c, k, n) => c.set(k, `v${n}`, 'PX', 600_000 + n),
};

/** Redis-only TTL forms (Pika answers a syntax error or unknown command). */
const REDIS_ONLY_TTL_FORMS: Record<string, TtlForm> = {
  'set-exat': (c, k, n) => c.call('SET', k, `v${n}`, 'EXAT', String(nowS() + 1400)),
  'set-pxat': (c, k, n) => c.call('SET', k, `v${n}`, 'PXAT', String(Date.now() + 1_500_000)),
  'set-keepttl': async (c, k, n) => {
    await c.set(k, `v${n}`, 'EX', 700);
    return c.call('SET', k, `w${n}`, 'KEEPTTL');
  },
  getex: async (c, k, n) => {
    await c.set(k, `v${n}`);
    return c.call('GETEX', k, 'PX', String(650_000 + n));
  },
};

/** The TTL forms the writers send to a proxy in front of `kind`. */
export function ttlFormNames(kind: NodeKind): string[] {
  return Object.keys(kind === 'redis' ? { ...TTL_FORMS, ...REDIS_ONLY_TTL_FORMS } : TTL_FORMS);
}

function checkExec(r: Array<[Error | null, unknown]> | null): void {
  if (!r) throw new Error('EXEC aborted');
  for (const [err] of r) if (err) throw err;
}

export class Writers {
  private running = true;
  private readonly loops: Array<Promise<void>> = [];
  readonly errors: string[] = [];
  /** `db key` of every key written with a TTL form (each must exist with a TTL afterwards). */
  readonly ttlKeys = new Set<string>();
  ops = 0;
  private readonly forms: Array<[string, TtlForm]>;

  constructor(private readonly master: ProxyAddress, private readonly kind: NodeKind = 'redis') {
    const all: Record<string, TtlForm> = { ...TTL_FORMS, ...REDIS_ONLY_TTL_FORMS };
    this.forms = ttlFormNames(kind).map((name) => [name, all[name]]);
  }

  start(): this {
    for (const db of dataDbs(this.kind)) this.loops.push(this.mixed(db, db * 1000));
    // redis-server: FLUSHDB of db 5 while the others are written. Pika has one db, where a FLUSHDB
    // would wipe the seeded data; there the flusher deletes its own keys instead.
    this.loops.push(this.flusher(this.kind === 'redis' ? 5 : 0));
    return this;
  }

  /** Stops the writers and waits for their last commands' replies. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private record(db: number, op: string, err: unknown): boolean {
    this.errors.push(`db ${db} ${op}: ${(err as Error).message}`);
    return this.errors.length > 20;
  }

  private async mixed(db: number, seed: number): Promise<void> {
    const c = client(this.master, db);
    let n = seed;
    try {
      while (this.running) {
        n++;
        const i = n % 20;
        try {
          switch (n % 13) {
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
              checkExec(r);
              break;
            }
            // Streams only on redis-server (the proxy refuses to copy Pika's streams: seed()).
            case 9:
              if (this.kind === 'redis') await c.xadd(`s:stream:${i}`, '*', 'w', String(n));
              else await c.zrem(`s:zset:${i}`, `z${n % 25}`);
              break;
            case 10:
            case 11: {
              const [form, apply] = this.forms[Math.floor(n / 13) % this.forms.length];
              const key = `w:ttl:${form}:${n % 3}`;
              await apply(c, key, n);
              this.ttlKeys.add(`${db} ${key}`);
              break;
            }
            default: await c.hset(`w:h:${n % 5}`, `f${n % 40}`, String(n)); break;
          }
          this.ops++;
        } catch (err) {
          if (this.record(db, `op ${n % 13}`, err)) return;
        }
      }
    } finally {
      c.disconnect();
    }
  }

  private async flusher(db: number): Promise<void> {
    const c = client(this.master, db);
    let n = 0;
    try {
      while (this.running) {
        n++;
        try {
          if (n % 40 === 0 && this.kind === 'redis') await c.flushdb();
          else if (n % 40 === 0) await c.del(...Array.from({ length: 100 }, (_, j) => `f:${j}`));
          else await c.set(`f:${n % 100}`, String(n));
          this.ops++;
        } catch (err) {
          if (this.record(db, 'flusher', err)) return;
        }
      }
    } finally {
      c.disconnect();
    }
  }
}

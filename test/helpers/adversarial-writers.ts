/**
 * Base data and adversarial concurrent writers for exactness tests, sent through a proxy.
 *
 * Key names carry their type (`str:`, `ctr:`, `flt:`, `hash:`, `list:`, `set:`, `zset:`,
 * `stream:`), so the writers' commands rarely hit WRONGTYPE. Writers work on a hot key set that
 * overlaps the base data (indexes below HOT_BASE) plus keys the base does not have, switch dbs
 * with SELECT (also inside MULTI), and stop by themselves after `maxOps` or when asked.
 */
import Redis from 'ioredis';
import { decodeReply } from '../../src/resp/decode';
import { encodeArgs } from '../../src/resp/request-parser';
import { RespClient } from './resp-client';

export const BASE_DBS = [0, 2, 5];
const HOT_BASE = 60;
const HOT_NEW = 20;
const NEW_OFFSET = 900_000;
export const BIG_HASH_FIELDS = 50_000;
export const BIG_LIST_ITEMS = 50_000;
/** Far enough that nothing expires during a test. */
const BASE_TTL_MS = 3_600_000;

/** Small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * ~6.6k keys in each of `dbs` (default 0, 2, 5; a Pika node: [0]) — every type, some with TTLs
 * (PEXPIRE, which both kinds apply as Redis does) — + big keys in the first db. `streams: false`
 * leaves streams out (Pika: the proxy refuses to copy a stream whose ids XRANGE changes);
 * `firstDbStrings` (default 3000) sizes the first db so a one-db node still has a build that
 * lasts while the writers write.
 */
export async function loadBaseData(port: number, dbs: readonly number[] = BASE_DBS, streams = true, firstDbStrings = 3000): Promise<number> {
  let keys = 0;
  const bigDb = dbs[0];
  for (const db of dbs) {
    const c = new Redis({ port, db, enableReadyCheck: false, maxRetriesPerRequest: 0, lazyConnect: true });
    await c.connect();
    try {
      const p = c.pipeline();
      const strings = db === bigDb ? firstDbStrings : 1500;
      for (let i = 0; i < strings; i++) p.set(`str:${i}`, `v${db}-${i}-${'x'.repeat(i % 40)}`);
      for (let i = 0; i < 300; i++) p.set(`ctr:${i}`, String(i * 7));
      for (let i = 0; i < 200; i++) p.set(`flt:${i}`, `${i}.25`);
      for (let i = 0; i < 1000; i++) p.hmset(`hash:${i}`, 'a', String(i), 'b', 'bee', 'c', String(db), 'n', '1');
      for (let i = 0; i < 1000; i++) p.rpush(`list:${i}`, 'l1', 'l2', `l${i}`, 'l4');
      for (let i = 0; i < 1000; i++) p.sadd(`set:${i}`, 'm1', 'm2', `m${i}`, 'm4', 'm5');
      for (let i = 0; i < 1000; i++) p.zadd(`zset:${i}`, 1, 'z1', 2.5, 'z2', i, `z${i}`);
      if (streams) for (let i = 0; i < 300; i++) p.xadd(`stream:${i}`, `${1000 + i}-1`, 'f', `s${i}`, 'g', 'h');
      for (let i = 0; i < strings; i += 5) p.pexpire(`str:${i}`, BASE_TTL_MS);
      for (let i = 0; i < 1000; i += 7) for (const t of ['hash', 'list', 'set', 'zset']) p.pexpire(`${t}:${i}`, BASE_TTL_MS + i);
      if (streams) for (let i = 0; i < 300; i += 11) p.pexpire(`stream:${i}`, BASE_TTL_MS);
      keys += strings + 300 + 200 + 4000 + (streams ? 300 : 0);
      if (db === bigDb) {
        for (let i = 0; i < BIG_HASH_FIELDS; i += 1000) {
          const args: string[] = [];
          for (let j = i; j < i + 1000; j++) args.push(`f${j}`, `hv${j}`);
          p.hmset('big:hash', ...args);
        }
        for (let i = 0; i < BIG_LIST_ITEMS; i += 1000) p.rpush('big:list', ...Array.from({ length: 1000 }, (_, j) => `e${i + j}`));
        p.sadd('big:set', ...Array.from({ length: 5000 }, (_, j) => `s${j}`));
        p.zadd('big:zset', ...Array.from({ length: 5000 }, (_, j) => [j / 4, `z${j}`]).flat());
        if (streams) for (let i = 0; i < 3000; i++) p.xadd('big:stream', `${5000 + i}-0`, 'i', String(i));
        p.pexpire('big:hash', BASE_TTL_MS);
        keys += streams ? 5 : 4;
      }
      const results = (await p.exec()) ?? [];
      const failed = results.find(([err]) => err);
      if (failed) throw failed[0];
    } finally {
      c.disconnect();
    }
  }
  return keys;
}

export interface WriterStats {
  ops: number;
  commands: number;
  /** Error replies by text (node semantics such as WRONGTYPE are expected in this mix). */
  errors: Map<string, number>;
}

export interface WriterOptions {
  port: number;
  seed: number;
  maxOps: number;
  /** RENAME, LMOVE, SET EXAT/PXAT/KEEPTTL and GETEX (Redis only; Pika lacks or refuses them). */
  redisOnly: boolean;
  /** The dbs SELECTed (default BASE_DBS; Pika: [0]). */
  dbs?: readonly number[];
  /** XADD (default true; false on Pika, whose streams the proxy refuses to copy). */
  streams?: boolean;
  shouldStop: () => boolean;
}

type Cmd = (string | number)[];

/** One adversarial writer; resolves with its stats when done. */
export async function runWriter(o: WriterOptions): Promise<WriterStats> {
  const rnd = prng(o.seed);
  const dbs = o.dbs ?? BASE_DBS;
  const now = (): number => Date.now();
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const idx = (): number => (rnd() < 0.8 ? Math.floor(rnd() * HOT_BASE) : NEW_OFFSET + Math.floor(rnd() * HOT_NEW));
  const k = (type: string): string => `${type}:${idx()}`;
  const val = (): string => `w${o.seed}-${Math.floor(rnd() * 1e6)}`;
  const stats: WriterStats = { ops: 0, commands: 0, errors: new Map() };
  const client = await RespClient.connect(o.port);
  let db = 0;

  const ops: [number, () => Cmd[]][] = [
    [6, () => [['INCR', k('ctr')]]],
    [3, () => [['INCRBYFLOAT', k('flt'), pick(['1.5', '-0.25', '3.0e1'])]]],
    [4, () => [['LPUSH', k('list'), val()]]],
    [3, () => [['RPOP', k('list')]]],
    [2, () => [['RPOPLPUSH', k('list'), k('list')]]],
    [4, () => [['HINCRBY', k('hash'), pick(['a', 'n', 'x']), 3]]],
    [2, () => [['HSET', k('hash'), `f${Math.floor(rnd() * 5)}`, val()]]],
    [4, () => [['SADD', k('set'), `m${Math.floor(rnd() * 20)}`]]],
    [2, () => [['SMOVE', k('set'), k('set'), `m${Math.floor(rnd() * 20)}`]]],
    [2, () => [['SPOP', k('set')]]],
    [1, () => [['SPOP', k('set'), 2]]],
    [4, () => [['ZINCRBY', k('zset'), pick(['1', '0.5', '-2']), `z${Math.floor(rnd() * 10)}`]]],
    [2, () => [['EXPIRE', pick([k('str'), k('hash'), k('list'), k('set'), k('zset')]), 1000 + Math.floor(rnd() * 1000)]]],
    [1, () => [['PEXPIRE', k('ctr'), 2_000_000]]],
    [2, () => [['PERSIST', pick([k('str'), k('hash'), k('list'), k('set'), k('zset'), k('stream')])]]],
    [2, () => [['SET', k('str'), val(), 'EX', 1000]]],
    // Every TTL form a client may send; all land 1000+ s in the future.
    [1, () => [['SET', k('str'), val(), 'PX', 1_100_000]]],
    [1, () => [['SETEX', k('str'), 1200, val()]]],
    [1, () => [['PSETEX', k('str'), 1_250_000, val()]]],
    [1, () => [['EXPIREAT', pick([k('str'), k('hash'), k('list'), k('set'), k('zset')]), Math.floor(now() / 1000) + 1300]]],
    [1, () => [['PEXPIREAT', pick([k('str'), k('hash'), k('list'), k('set'), k('zset'), k('ctr')]), now() + 1_400_000]]],
    [2, () => [['SET', k('str'), val()]]],
    [2, () => [['DEL', pick([k('str'), k('hash'), k('list'), k('set'), k('zset'), k('stream'), k('ctr')])]]],
    [1, () => [['UNLINK', k('str'), k('hash'), k('zset')]]],
    [2, () => [['MSET', k('str'), val(), k('str'), val(), k('flt'), '2.5']]],
    [1, () => [['BLPOP', k('list'), k('list'), '0.02']]],
    [3, () => [['HSET', 'big:hash', `f${Math.floor(rnd() * BIG_HASH_FIELDS * 1.1)}`, val()]]],
    [2, () => [['HINCRBY', 'big:hash', `n${Math.floor(rnd() * 100)}`, 1]]],
    [1, () => [['HDEL', 'big:hash', `f${Math.floor(rnd() * BIG_HASH_FIELDS)}`]]],
    [2, () => [['LSET', 'big:list', Math.floor(rnd() * 40_000), val()]]],
    [1, () => [['RPUSH', 'big:list', val()]]],
    [1, () => [['LPOP', 'big:list']]],
    [1, () => [['SADD', 'big:set', val()], ['ZINCRBY', 'big:zset', 1, `z${Math.floor(rnd() * 5000)}`]]],
    [
      4,
      () => {
        // A transaction, sometimes moving to another db inside it (the session stays there).
        const other = pick(dbs);
        const inner: Cmd[] = [['INCR', k('ctr')], ['HINCRBY', k('hash'), 'n', 1]];
        if (rnd() < 0.6) inner.push(['SELECT', other]);
        if (rnd() < 0.3) inner.push(['PEXPIREAT', k('hash'), now() + 1_500_000]);
        inner.push(['LPUSH', k('list'), val()], ['ZINCRBY', k('zset'), 1, 'z1'], ['SET', k('str'), val(), 'PX', 1_500_000]);
        if (rnd() < 0.3) inner.push(['SPOP', k('set')], ['SADD', k('set'), val()]);
        return [['MULTI'], ...inner, ['EXEC']];
      },
    ],
  ];
  if (o.streams ?? true) ops.push([2, () => [['XADD', k('stream'), '*', 'w', val()]]]);
  if (o.redisOnly) {
    ops.push([1, () => [['SET', k('str'), val(), 'EXAT', Math.floor(now() / 1000) + 1600]]]);
    ops.push([1, () => [['SET', k('str'), val(), 'PXAT', now() + 1_700_000]]]);
    ops.push([1, () => [['SET', k('str'), val(), 'KEEPTTL']]]);
    ops.push([1, () => [['GETEX', k('str'), 'PX', 1_800_000]]]);
    // RENAME keeps the type prefix so later commands on the target name stay well-typed.
    ops.push([2, () => {
      const t = pick(['str', 'hash', 'list', 'set', 'zset', 'ctr']);
      return [['RENAME', k(t), k(t)]];
    }]);
    ops.push([2, () => [['LMOVE', k('list'), k('list'), pick(['LEFT', 'RIGHT']), pick(['LEFT', 'RIGHT'])]]]);
  }

  const total = ops.reduce((s, [w]) => s + w, 0);
  const choose = (): (() => Cmd[]) => {
    let r = rnd() * total;
    for (const [w, f] of ops) if ((r -= w) < 0) return f;
    return ops[0][1];
  };

  try {
    for (let i = 0; i < o.maxOps && !o.shouldStop(); i++) {
      const cmds: Cmd[] = [];
      if (rnd() < 0.25) {
        const next = pick(dbs);
        if (next !== db) cmds.push(['SELECT', next]);
        db = next;
      }
      const body = choose()();
      cmds.push(...body);
      // A SELECT inside MULTI leaves the session in that db after EXEC.
      for (const c of body) if (c[0] === 'SELECT') db = Number(c[1]);
      client.send(Buffer.concat(cmds.map((c) => encodeArgs(c.map(String)))));
      for (const c of cmds) {
        const reply = await client.read(30_000);
        if (reply[0] === 45) count(stats, reply.toString().trim());
        if (c[0] === 'EXEC' && reply[0] === 42) {
          const v = decodeReply(reply);
          if (Array.isArray(v)) for (const e of v) if (e instanceof Error) count(stats, `in EXEC: ${e.message}`);
        }
      }
      stats.ops++;
      stats.commands += cmds.length;
    }
  } finally {
    client.close();
  }
  return stats;
}

function count(stats: WriterStats, text: string): void {
  const key = text.replace(/\d+/g, 'N').slice(0, 120);
  stats.errors.set(key, (stats.errors.get(key) ?? 0) + 1);
}

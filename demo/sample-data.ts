/**
 * The demo's data set: every type the sync carries on the node kind (strings, hashes, lists, sets,
 * zsets; a stream on redis-server only — Pika's XRANGE does not give back the ids written, so the
 * proxy refuses to copy a Pika stream), keys with TTLs set in every form a client may send (the
 * proxy sends PEXPIREAT to Pika as PEXPIRE), keys in every demo db (0 and 3 on redis-server, 0 on
 * Pika, which has one database) and one big hash of 50,000 fields (written in pages, as a client
 * would, so no single command is huge). Only commands Pika has: HMSET, never a multi-pair HSET.
 */
import Redis from 'ioredis';
import { NodeKind } from '../test/helpers/nodes';

export const BIG_HASH_FIELDS = 50_000;
/** Long enough that nothing expires while the demo runs. */
const TTL_SECONDS = 3600;
const TTL_STRINGS = 24;

export interface SampleSummary {
  keysByDb: Record<number, number>;
  /** Keys written with a TTL (every db). */
  ttlKeys: number;
  /** The TTL forms used, for the summary line. */
  ttlForms: string[];
}

async function exec(pipeline: ReturnType<Redis['pipeline']>): Promise<void> {
  for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err;
}

type Pipeline = ReturnType<Redis['pipeline']>;

/** Every TTL form both kinds take; each leaves the key with about TTL_SECONDS + i seconds. */
const TTL_FORMS: Array<[string, (p: Pipeline, key: string, i: number) => void]> = [
  ['SET EX', (p, k, i) => p.set(k, `expiring-${i}`, 'EX', TTL_SECONDS + i)],
  ['SET PX', (p, k, i) => p.set(k, `expiring-${i}`, 'PX', (TTL_SECONDS + i) * 1000)],
  ['SETEX', (p, k, i) => p.setex(k, TTL_SECONDS + i, `expiring-${i}`)],
  ['PSETEX', (p, k, i) => p.psetex(k, (TTL_SECONDS + i) * 1000, `expiring-${i}`)],
  ['EXPIRE', (p, k, i) => p.set(k, `expiring-${i}`).expire(k, TTL_SECONDS + i)],
  ['PEXPIRE', (p, k, i) => p.set(k, `expiring-${i}`).pexpire(k, (TTL_SECONDS + i) * 1000 + 123)],
  ['EXPIREAT', (p, k, i) => p.set(k, `expiring-${i}`).expireat(k, Math.floor(Date.now() / 1000) + TTL_SECONDS + i)],
  ['PEXPIREAT', (p, k, i) => p.set(k, `expiring-${i}`).pexpireat(k, Date.now() + (TTL_SECONDS + i) * 1000 + 456)],
];

/** `connect(db)` opens a client to the master proxy on that db; `dbs` are the dbs to fill. */
export async function loadSampleData(connect: (db: number) => Redis, kind: NodeKind, dbs: number[]): Promise<SampleSummary> {
  const keysByDb: Record<number, number> = {};
  let ttlKeys = 0;
  for (const db of dbs) {
    const client = connect(db);
    try {
      const p = client.pipeline();
      const tag = `db${db}`;
      for (let i = 0; i < 200; i++) p.set(`${tag}:string:${i}`, `value-${i}-${'x'.repeat(i % 50)}`);
      p.set(`${tag}:binary`, Buffer.from([0, 1, 2, 255, 13, 10, 0]));
      for (let i = 0; i < 50; i++) p.hmset(`${tag}:hash:${i}`, { name: `user-${i}`, email: `u${i}@example.com`, visits: String(i * 7) });
      for (let i = 0; i < 50; i++) p.rpush(`${tag}:list:${i}`, ...Array.from({ length: 10 }, (_, j) => `item-${i}-${j}`));
      for (let i = 0; i < 50; i++) p.sadd(`${tag}:set:${i}`, ...Array.from({ length: 8 }, (_, j) => `member-${(i * j) % 13}-${j}`));
      for (let i = 0; i < 50; i++) p.zadd(`${tag}:zset:${i}`, ...Array.from({ length: 6 }, (_, j) => [j * 1.5 - i, `player-${j}`]).flat());
      for (let i = 0; i < TTL_STRINGS; i++) {
        const [form, write] = TTL_FORMS[i % TTL_FORMS.length];
        write(p, `${tag}:ttl:${form.replace(' ', '-').toLowerCase()}:${i}`, i);
      }
      p.hmset(`${tag}:ttl:hash`, { a: '1', b: '2' });
      p.pexpireat(`${tag}:ttl:hash`, Date.now() + TTL_SECONDS * 1000 + 789);
      let keys = 200 + 1 + 50 * 4 + TTL_STRINGS + 1;
      ttlKeys += TTL_STRINGS + 1;
      if (kind === 'redis') {
        for (let i = 1; i <= 25; i++) p.xadd(`${tag}:stream`, `${1700000000000 + i}-0`, 'sensor', `s${i % 3}`, 'reading', String(i * 0.5));
        keys += 1;
      }
      await exec(p);
      keysByDb[db] = keys;
    } finally {
      client.disconnect();
    }
  }

  const client = connect(0);
  try {
    for (let first = 0; first < BIG_HASH_FIELDS; first += 5000) {
      const fields: Record<string, string> = {};
      for (let i = first; i < first + 5000; i++) fields[`field:${i}`] = `v${i}:${'h'.repeat(i % 40)}`;
      await client.hmset('db0:big:hash', fields);
    }
    keysByDb[0] += 1;
  } finally {
    client.disconnect();
  }
  return { keysByDb, ttlKeys, ttlForms: TTL_FORMS.map(([form]) => form) };
}

/**
 * A little write traffic while the sync runs: the catch-up must carry it to the replica. One
 * transaction per round: a counter, a list, one hash field (HSET with one pair, as Pika takes it)
 * and a session key whose expiry is set with PEXPIREAT (sent to Pika as PEXPIRE by the proxy).
 */
export function startBackgroundWrites(client: Redis): { stop: () => Promise<number> } {
  let writes = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const replies = await client
        .multi()
        .incr('db0:live:counter')
        .rpush('db0:live:events', `event-${writes}`)
        .hset('db0:big:hash', `live:${writes}`, String(writes))
        .set('db0:live:session', `session-${writes}`)
        .pexpireat('db0:live:session', Date.now() + TTL_SECONDS * 1000)
        .exec();
      for (const [err] of replies ?? []) if (err) throw err;
      writes++;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  loop.catch(() => undefined); // the error surfaces from stop(); never an unhandled rejection meanwhile
  return {
    stop: async () => {
      running = false;
      await loop;
      return writes;
    },
  };
}

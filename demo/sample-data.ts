/**
 * The demo's data set: every type the sync carries (strings, hashes, lists, sets, zsets, a stream),
 * keys with TTLs, keys in db 0 and db 3 and one big hash of 50,000 fields (written in pages, as a
 * client would, so no single command is huge). Only commands Pika has.
 */
import Redis from 'ioredis';

export const BIG_HASH_FIELDS = 50_000;
/** Long enough that nothing expires while the demo runs. */
const TTL_SECONDS = 3600;

export interface SampleSummary {
  keysByDb: Record<number, number>;
}

async function exec(pipeline: ReturnType<Redis['pipeline']>): Promise<void> {
  for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err;
}

/** `client` must be connected to the master proxy; `connect(db)` opens one for another db. */
export async function loadSampleData(connect: (db: number) => Redis): Promise<SampleSummary> {
  const keysByDb: Record<number, number> = {};
  for (const db of [0, 3]) {
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
      for (let i = 0; i < 20; i++) p.set(`${tag}:ttl:string:${i}`, `expiring-${i}`, 'EX', TTL_SECONDS + i);
      p.hmset(`${tag}:ttl:hash`, { a: '1', b: '2' });
      p.pexpire(`${tag}:ttl:hash`, TTL_SECONDS * 1000 + 123);
      for (let i = 1; i <= 25; i++) p.xadd(`${tag}:stream`, `${1700000000000 + i}-0`, 'sensor', `s${i % 3}`, 'reading', String(i * 0.5));
      await exec(p);
      keysByDb[db] = 200 + 1 + 50 * 4 + 20 + 1 + 1;
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
  return { keysByDb };
}

/** A little write traffic while the sync runs: the catch-up must carry it to the replica. */
export function startBackgroundWrites(client: Redis): { stop: () => Promise<number> } {
  let writes = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      await client.multi().incr('db0:live:counter').rpush('db0:live:events', `event-${writes}`).hset('db0:big:hash', `live:${writes}`, String(writes)).exec();
      writes++;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return writes;
    },
  };
}

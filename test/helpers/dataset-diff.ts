/**
 * Compares two nodes key by key in the given dbs: type, value (strings as bytes, hashes as maps,
 * lists in order, sets sorted, zsets with scores, streams with ids) and TTL (both without one, or
 * both with one within a tolerance). Returns one readable line per differing key.
 *
 * Reads with read-key.ts, so it works on redis-server and Pika alike (no DUMP, absence by
 * TYPE/EXISTS, never by PTTL -2).
 */
import Redis from 'ioredis';
import { KeyValue, readKey, scanKeys } from './read-key';

const BATCH = 200;

export { scanKeys };

function describe(s: KeyValue | undefined): string {
  if (!s) return 'none';
  const value = JSON.stringify(s.entries);
  const v = value.length > 60 ? `${value.slice(0, 60)}... (${value.length} chars)` : value;
  return `${s.type} ttl=${s.pttl} ${v}`;
}

/** Differences between `master` and `replica` in `dbs` (the clients' selected db is changed). */
export async function diffNodes(master: Redis, replica: Redis, dbs: number[], ttlToleranceMs: number): Promise<{ diffs: string[]; keysCompared: number }> {
  const diffs: string[] = [];
  let keysCompared = 0;
  for (const db of dbs) {
    await master.select(db);
    await replica.select(db);
    const keys = [...new Set([...(await scanKeys(master)), ...(await scanKeys(replica))])];
    keysCompared += keys.length;
    for (let i = 0; i < keys.length; i += BATCH) {
      const batch = keys.slice(i, i + BATCH);
      const [ms, rs] = await Promise.all([Promise.all(batch.map((k) => readKey(master, k))), Promise.all(batch.map((k) => readKey(replica, k)))]);
      batch.forEach((key, j) => {
        const m = ms[j];
        const r = rs[j];
        const name = `db${db} ${JSON.stringify(key)}`;
        if (!m && !r) return;
        if (!m || !r || m.type !== r.type || JSON.stringify(m.entries) !== JSON.stringify(r.entries)) {
          diffs.push(`${name}: master ${describe(m)} | rebuilt ${describe(r)}`);
          return;
        }
        const ttlOk = (m.pttl === -1 && r.pttl === -1) || (m.pttl >= 0 && r.pttl >= 0 && Math.abs(m.pttl - r.pttl) <= ttlToleranceMs);
        if (!ttlOk) diffs.push(`${name}: ${m.type} TTL master ${m.pttl} ms | rebuilt ${r.pttl} ms`);
      });
    }
  }
  return { diffs, keysCompared };
}

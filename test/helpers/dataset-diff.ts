/**
 * Compares two nodes key by key in the given dbs: type, value (strings as bytes, hashes as maps,
 * lists in order, sets sorted, zsets with scores, streams with ids) and TTL (both without one, or
 * both with one within a tolerance). Returns one readable line per differing key.
 */
import Redis from 'ioredis';

const BATCH = 200;

interface KeyState {
  type: string;
  value: string;
  pttl: number;
}

export async function scanKeys(node: Redis): Promise<Buffer[]> {
  const seen = new Map<string, Buffer>();
  let cursor = '0';
  do {
    const [next, keys] = (await node.callBuffer('SCAN', cursor, 'COUNT', 1000)) as [Buffer, Buffer[]];
    cursor = next.toString();
    for (const k of keys) seen.set(k.toString('latin1'), k);
  } while (cursor !== '0');
  return [...seen.values()];
}

const hex = (b: Buffer): string => b.toString('hex');
const pairs = (flat: Buffer[]): [string, string][] => {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([hex(flat[i]), hex(flat[i + 1])]);
  return out;
};

async function readKey(node: Redis, key: Buffer): Promise<KeyState> {
  const [typeRaw, pttlRaw] = await Promise.all([node.callBuffer('TYPE', key), node.callBuffer('PTTL', key)]);
  const type = String(typeRaw);
  const pttl = Number(pttlRaw);
  let value: unknown;
  switch (type) {
    case 'none':
      value = null;
      break;
    case 'string':
      value = hex((await node.callBuffer('GET', key)) as Buffer);
      break;
    case 'hash':
      value = pairs((await node.callBuffer('HGETALL', key)) as Buffer[]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      break;
    case 'list':
      value = ((await node.callBuffer('LRANGE', key, 0, -1)) as Buffer[]).map(hex);
      break;
    case 'set':
      value = ((await node.callBuffer('SMEMBERS', key)) as Buffer[]).map(hex).sort();
      break;
    case 'zset':
      value = pairs((await node.callBuffer('ZRANGE', key, 0, -1, 'WITHSCORES')) as Buffer[]);
      break;
    case 'stream':
      value = ((await node.callBuffer('XRANGE', key, '-', '+')) as [Buffer, Buffer[]][]).map(([id, f]) => [id.toString(), f.map(hex)]);
      break;
    default:
      value = `unsupported type ${type}`;
  }
  return { type, value: JSON.stringify(value), pttl };
}

function describe(s: KeyState): string {
  const v = s.value.length > 60 ? `${s.value.slice(0, 60)}... (${s.value.length} chars)` : s.value;
  return `${s.type} ttl=${s.pttl} ${v}`;
}

/** Differences between `master` and `replica` in `dbs` (the clients' selected db is changed). */
export async function diffNodes(master: Redis, replica: Redis, dbs: number[], ttlToleranceMs: number): Promise<{ diffs: string[]; keysCompared: number }> {
  const diffs: string[] = [];
  let keysCompared = 0;
  for (const db of dbs) {
    await master.select(db);
    await replica.select(db);
    const union = new Map<string, Buffer>();
    for (const k of [...(await scanKeys(master)), ...(await scanKeys(replica))]) union.set(k.toString('latin1'), k);
    const keys = [...union.values()];
    keysCompared += keys.length;
    for (let i = 0; i < keys.length; i += BATCH) {
      const batch = keys.slice(i, i + BATCH);
      const [ms, rs] = await Promise.all([Promise.all(batch.map((k) => readKey(master, k))), Promise.all(batch.map((k) => readKey(replica, k)))]);
      batch.forEach((key, j) => {
        const m = ms[j];
        const r = rs[j];
        const name = `db${db} ${JSON.stringify(key.toString('latin1'))}`;
        if (m.type !== r.type || m.value !== r.value) {
          diffs.push(`${name}: master ${describe(m)} | rebuilt ${describe(r)}`);
        } else if (m.type !== 'none') {
          const ttlOk = (m.pttl === -1 && r.pttl === -1) || (m.pttl > 0 && r.pttl > 0 && Math.abs(m.pttl - r.pttl) <= ttlToleranceMs);
          if (!ttlOk) diffs.push(`${name}: ${m.type} TTL master ${m.pttl} ms | rebuilt ${r.pttl} ms`);
        }
      });
    }
  }
  return { diffs, keysCompared };
}

/**
 * Key-by-key comparison of two nodes (straight to the redis-servers, not through proxies): every
 * db, type-aware values, TTLs within a tolerance. Returns a readable list of differences (empty
 * when equal) so a failing test shows what differs, not just that something does.
 *
 * Values are reduced to canonical entry lists (hash/set sorted, list/zset/stream in node order)
 * and compared entry by entry; big keys (100k elements) are read in one reply per key, which is
 * fine for test data sizes.
 */
import Redis from 'ioredis';

export interface NodeAddress {
  host: string;
  port: number;
  password?: string;
}

export interface CompareOptions {
  /** Allowed PTTL difference in ms (both sides volatile); default 2000. */
  ttlToleranceMs?: number;
  /** Dbs to compare; default every db of `a` (CONFIG GET databases). */
  dbs?: number[];
  /** Stop after this many differences; default 50. */
  maxDiffs?: number;
}

export interface KeyValue {
  type: string;
  /** Canonical entries (Buffers as latin1 strings so byte values survive). */
  entries: string[];
  pttl: number;
}

function connect(node: NodeAddress): Redis {
  return new Redis({ host: node.host, port: node.port, password: node.password, maxRetriesPerRequest: 1, lazyConnect: false });
}

export async function databaseCount(client: Redis): Promise<number> {
  try {
    const reply = (await client.call('CONFIG', 'GET', 'databases')) as string[];
    const n = Number(reply?.[1]);
    return Number.isInteger(n) && n > 0 ? n : 1;
  } catch {
    return 1;
  }
}

/** Every key of the selected db (SCAN; the client must already have SELECTed it). */
export async function scanKeys(client: Redis): Promise<string[]> {
  const keys = new Set<string>();
  let cursor = '0';
  do {
    const [next, batch] = (await client.callBuffer('SCAN', cursor, 'COUNT', '1000')) as [Buffer, Buffer[]];
    cursor = next.toString('latin1');
    for (const k of batch) keys.add(k.toString('latin1'));
  } while (cursor !== '0');
  return [...keys].sort();
}

const l1 = (b: Buffer): string => b.toString('latin1');

/** One key's type, canonical value and PTTL, or undefined when it does not exist. */
export async function readKey(client: Redis, key: string): Promise<KeyValue | undefined> {
  const k = Buffer.from(key, 'latin1');
  const type = String(await client.type(k));
  if (type === 'none') return undefined;
  let entries: string[];
  switch (type) {
    case 'string':
      entries = [l1((await client.getBuffer(k))!)];
      break;
    case 'hash': {
      const flat = (await client.callBuffer('HGETALL', k)) as Buffer[];
      const pairs: string[] = [];
      for (let i = 0; i < flat.length; i += 2) pairs.push(`${l1(flat[i])}=${l1(flat[i + 1])}`);
      entries = pairs.sort();
      break;
    }
    case 'list':
      entries = ((await client.lrangeBuffer(k, 0, -1)) as Buffer[]).map(l1);
      break;
    case 'set':
      entries = ((await client.smembersBuffer(k)) as Buffer[]).map(l1).sort();
      break;
    case 'zset': {
      const flat = (await client.callBuffer('ZRANGE', k, '0', '-1', 'WITHSCORES')) as Buffer[];
      entries = [];
      for (let i = 0; i < flat.length; i += 2) entries.push(`${l1(flat[i])}@${l1(flat[i + 1])}`);
      break;
    }
    case 'stream':
    case 'streams': {
      const items = (await client.callBuffer('XRANGE', k, '-', '+')) as Array<[Buffer, Buffer[]]>;
      entries = items.map(([id, fields]) => `${l1(id)} ${fields.map(l1).join(' ')}`);
      break;
    }
    default:
      entries = [`<unsupported type ${type}>`];
  }
  const pttl = Number(await client.pttl(k));
  return { type: type === 'streams' ? 'stream' : type, entries, pttl };
}

function short(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text);
}

/** The differences of one key, described for a human. */
function diffKey(db: number, key: string, a: KeyValue | undefined, b: KeyValue | undefined, tolerance: number): string[] {
  const where = `db ${db} key ${short(key)}`;
  if (!a || !b) return [`${where}: ${a ? `${a.type} only on A` : b ? `${b.type} only on B` : 'missing on both'}`];
  const out: string[] = [];
  if (a.type !== b.type) return [`${where}: type ${a.type} on A, ${b.type} on B`];
  if (a.entries.length !== b.entries.length) out.push(`${where}: ${a.type} has ${a.entries.length} entries on A, ${b.entries.length} on B`);
  const n = Math.min(a.entries.length, b.entries.length);
  for (let i = 0; i < n; i++) {
    if (a.entries[i] !== b.entries[i]) {
      out.push(`${where}: ${a.type} entry ${i} is ${short(a.entries[i])} on A, ${short(b.entries[i])} on B`);
      break;
    }
  }
  const volatileA = a.pttl >= 0;
  const volatileB = b.pttl >= 0;
  if (volatileA !== volatileB) out.push(`${where}: PTTL ${a.pttl} on A, ${b.pttl} on B`);
  else if (volatileA && Math.abs(a.pttl - b.pttl) > tolerance) out.push(`${where}: PTTL ${a.pttl} on A, ${b.pttl} on B (more than ${tolerance} ms apart)`);
  return out;
}

/** Differences between node A and node B; [] when they hold the same data in every compared db. */
export async function compareNodes(nodeA: NodeAddress, nodeB: NodeAddress, options: CompareOptions = {}): Promise<string[]> {
  const tolerance = options.ttlToleranceMs ?? 2000;
  const maxDiffs = options.maxDiffs ?? 50;
  const a = connect(nodeA);
  const b = connect(nodeB);
  const diffs: string[] = [];
  try {
    const dbs = options.dbs ?? [...Array(await databaseCount(a)).keys()];
    for (const db of dbs) {
      await a.select(db);
      await b.select(db);
      const keysA = await scanKeys(a);
      const keysB = await scanKeys(b);
      const all = [...new Set([...keysA, ...keysB])].sort();
      for (const key of all) {
        const [va, vb] = await Promise.all([readKey(a, key), readKey(b, key)]);
        diffs.push(...diffKey(db, key, va, vb, tolerance));
        if (diffs.length >= maxDiffs) return [...diffs, `(stopped after ${maxDiffs} differences)`];
      }
    }
    return diffs;
  } finally {
    a.disconnect();
    b.disconnect();
  }
}

/** Keys per db (only non-empty dbs): a cheap summary for assertions and messages. */
export async function keyCounts(node: NodeAddress): Promise<Record<number, number>> {
  const client = connect(node);
  try {
    const out: Record<number, number> = {};
    const n = await databaseCount(client);
    for (let db = 0; db < n; db++) {
      await client.select(db);
      const size = Number(await client.dbsize());
      if (size > 0) out[db] = size;
    }
    return out;
  } finally {
    client.disconnect();
  }
}

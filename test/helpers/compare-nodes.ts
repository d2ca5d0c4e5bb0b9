/**
 * Key-by-key comparison of two nodes (straight to the nodes, not through proxies): every db,
 * type-aware values, TTLs within a tolerance (1 s by default). Returns a readable list of
 * differences (empty when equal) so a failing test shows what differs, not just that something does.
 *
 * Works on redis-server and Pika alike (read-key.ts: no DUMP, keys by SCAN, absence by TYPE/EXISTS,
 * Pika's `streams` reported as `stream`); the dbs default to what node A reports (Pika: 1).
 */
import Redis from 'ioredis';
import { KeyValue, readKey, scanKeys } from './read-key';

export type { KeyValue };
export { readKey, scanKeys };

export interface NodeAddress {
  host: string;
  port: number;
  password?: string;
}

export interface CompareOptions {
  /** Allowed PTTL difference in ms (both sides volatile); default 1000. */
  ttlToleranceMs?: number;
  /** Dbs to compare; default every db of `a` (CONFIG GET databases). */
  dbs?: number[];
  /** Stop after this many differences; default 50. */
  maxDiffs?: number;
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

function short(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text);
}

/** The differences of one key, described for a human. */
function diffKey(db: number, key: string, a: KeyValue | undefined, b: KeyValue | undefined, tolerance: number): string[] {
  const where = `db ${db} key ${short(key)}`;
  if (!a && !b) return []; // listed by SCAN, gone on both sides when read: not a difference
  if (!a || !b) return [`${where}: ${a ? `${a.type} only on A` : `${b!.type} only on B`}`];
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
  const tolerance = options.ttlToleranceMs ?? 1000;
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

/** Keys per db (only non-empty dbs), counted by SCAN: a summary for assertions and messages. */
export async function keyCounts(node: NodeAddress): Promise<Record<number, number>> {
  const client = connect(node);
  try {
    const out: Record<number, number> = {};
    const n = await databaseCount(client);
    for (let db = 0; db < n; db++) {
      await client.select(db);
      // Counted by SCAN: Pika's DBSIZE is the result of its last background scan, not live.
      const size = (await scanKeys(client)).length;
      if (size > 0) out[db] = size;
    }
    return out;
  } finally {
    client.disconnect();
  }
}

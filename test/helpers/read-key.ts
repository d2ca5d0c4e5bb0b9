/**
 * Reads one key's type, value and TTL with commands both redis-server and Pika 4.0.1 answer the
 * same way (no DUMP, no OBJECT): TYPE, then a type-specific read (GET, HSCAN, LRANGE pages, SSCAN,
 * ZRANGE WITHSCORES, XRANGE), PTTL, and EXISTS last — absence is decided by TYPE/EXISTS, never by
 * PTTL -2 (Pika answers 0 for a missing key). Pika's `streams` type is reported as `stream`.
 *
 * Values are canonical entry lists (hash/set sorted, list/zset/stream in node order), Buffers as
 * latin1 strings so every byte survives.
 */
import type Redis from 'ioredis';

export interface KeyValue {
  type: string;
  entries: string[];
  /** -1: no TTL; otherwise the remaining ms. */
  pttl: number;
}

const PAGE = 1000;
const l1 = (b: Buffer): string => b.toString('latin1');

/** Every key of the client's selected db (SCAN), as latin1 strings, sorted. */
export async function scanKeys(client: Redis): Promise<string[]> {
  const keys = new Set<string>();
  let cursor = '0';
  do {
    const [next, batch] = (await client.callBuffer('SCAN', cursor, 'COUNT', String(PAGE))) as [Buffer, Buffer[]];
    cursor = next.toString('latin1');
    for (const k of batch) keys.add(l1(k));
  } while (cursor !== '0');
  return [...keys].sort();
}

/** HSCAN/SSCAN/ZSCAN over a key: the flat replies of every page. */
async function scanMembers(client: Redis, cmd: 'HSCAN' | 'SSCAN', key: Buffer): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let cursor = '0';
  do {
    const [next, batch] = (await client.callBuffer(cmd, key, cursor, 'COUNT', String(PAGE))) as [Buffer, Buffer[]];
    cursor = next.toString('latin1');
    out.push(...batch);
  } while (cursor !== '0');
  return out;
}

function pairs(flat: Buffer[], sep: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push(`${l1(flat[i])}${sep}${l1(flat[i + 1])}`);
  return out;
}

async function readEntries(client: Redis, type: string, k: Buffer): Promise<string[]> {
  switch (type) {
    case 'string': {
      const v = await client.getBuffer(k);
      return v === null ? [] : [l1(v)];
    }
    case 'hash':
      // HSCAN may repeat an element across pages; a hash field is unique, so dedupe by field.
      return [...new Set(pairs(await scanMembers(client, 'HSCAN', k), '='))].sort();
    case 'list': {
      const out: string[] = [];
      for (let start = 0; ; start += PAGE) {
        const page = (await client.lrangeBuffer(k, start, start + PAGE - 1)) as Buffer[];
        out.push(...page.map(l1));
        if (page.length < PAGE) return out;
      }
    }
    case 'set':
      return [...new Set((await scanMembers(client, 'SSCAN', k)).map(l1))].sort();
    case 'zset':
      return pairs((await client.callBuffer('ZRANGE', k, '0', '-1', 'WITHSCORES')) as Buffer[], '@');
    case 'stream': {
      const items = (await client.callBuffer('XRANGE', k, '-', '+')) as Array<[Buffer, Buffer[]]>;
      return items.map(([id, fields]) => `${l1(id)} ${fields.map(l1).join(' ')}`);
    }
    default:
      return [`<unsupported type ${type}>`];
  }
}

/** One key of the selected db, or undefined when it does not exist. */
export async function readKey(client: Redis, key: string | Buffer): Promise<KeyValue | undefined> {
  const k = typeof key === 'string' ? Buffer.from(key, 'latin1') : key;
  const raw = String(await client.type(k));
  if (raw === 'none') return undefined;
  const type = raw === 'streams' ? 'stream' : raw;
  const entries = await readEntries(client, type, k);
  const pttl = Number(await client.pttl(k));
  // Gone between TYPE and here (expired or deleted): absent, not "expires now".
  if (Number(await client.exists(k)) === 0) return undefined;
  return { type, entries, pttl: pttl < 0 ? -1 : pttl };
}

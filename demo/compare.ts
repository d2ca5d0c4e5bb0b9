/**
 * Compares two endpoints key by key, as a client sees them: the same key names in every db, and
 * for each key the same TYPE, the same value (by type) and the same TTL: a key with a TTL on the
 * master has one on the replica, and both expire at the same absolute time within 1 s (each
 * side's expiry is taken as the midpoint of its PTTL's send and reply time plus the PTTL, so the
 * moment between the two reads does not count).
 */
import Redis from 'ioredis';

/** The two absolute expiry times must agree within this (what the proxy's proof by content accepts). */
export const TTL_TOLERANCE_MS = 1000;

export interface DbComparison {
  db: number;
  masterKeys: number;
  replicaKeys: number;
  differences: string[];
  /** Keys with a TTL on the master. */
  ttlKeys: number;
  /** Of those, the ones with a TTL on the replica within TTL_TOLERANCE_MS. */
  ttlKeysMatched: number;
  /** The largest |expiry on the master - expiry on the replica| among the matched, in ms. */
  maxExpiryDeltaMs: number;
}

/** -1 (no TTL), -2 (missing) or the absolute expiry in unix ms, read through PTTL. */
async function expiryAt(client: Redis, key: Buffer): Promise<number> {
  const sent = Date.now();
  const pttl = await client.pttl(key);
  return pttl < 0 ? pttl : Math.round((sent + Date.now()) / 2 + pttl);
}

function describeExpiry(at: number): string {
  if (at === -1) return 'no TTL';
  if (at === -2) return 'missing';
  return `PTTL ~${at - Date.now()} ms`;
}

async function scanAll(client: Redis): Promise<Buffer[]> {
  const keys: Buffer[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scanBuffer(cursor, 'COUNT', 1000);
    cursor = next.toString();
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

/** A canonical text of the key's value; set members are sorted (sets have no order). */
async function readValue(client: Redis, key: Buffer, type: string): Promise<string> {
  switch (type) {
    case 'string':
      return (await client.getBuffer(key))?.toString('base64') ?? '(nil)';
    case 'hash': {
      const flat = await client.hgetallBuffer(key);
      return JSON.stringify(Object.entries(flat).map(([f, v]) => [f, v.toString('base64')]).sort());
    }
    case 'list':
      return JSON.stringify((await client.lrangeBuffer(key, 0, -1)).map((b) => b.toString('base64')));
    case 'set':
      return JSON.stringify((await client.smembersBuffer(key)).map((b) => b.toString('base64')).sort());
    case 'zset':
      return JSON.stringify((await client.zrangeBuffer(key, 0, -1, 'WITHSCORES')).map((b) => b.toString('base64')));
    case 'stream':
    case 'streams':
      return JSON.stringify(await client.xrange(key, '-', '+'));
    default:
      return `(unsupported type ${type})`;
  }
}

/** A short, readable form of a canonical value for a difference line. */
function preview(type: string, canonical: string): string {
  let text = canonical;
  if (type === 'string') text = JSON.stringify(Buffer.from(canonical, 'base64').toString('utf8'));
  else if (type === 'list' || type === 'set' || type === 'zset') {
    const items = JSON.parse(canonical) as string[];
    const decoded = items.map((b) => Buffer.from(b, 'base64').toString('utf8'));
    text = `${items.length} elements${decoded.length ? `, last ${JSON.stringify(decoded[decoded.length - 1])}` : ''}`;
  } else if (type === 'hash') text = `${(JSON.parse(canonical) as unknown[]).length} fields`;
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

export async function compareDb(master: Redis, replica: Redis, db: number, maxReported = 10): Promise<DbComparison> {
  const masterKeys = await scanAll(master);
  const replicaKeys = await scanAll(replica);
  const differences: string[] = [];
  let ttlKeys = 0;
  let ttlKeysMatched = 0;
  let maxExpiryDeltaMs = 0;
  const report = (text: string) => {
    if (differences.length < maxReported) differences.push(text);
    else if (differences.length === maxReported) differences.push('… more differences not shown');
  };
  const replicaSet = new Set(replicaKeys.map((k) => k.toString('base64')));
  const masterSet = new Set(masterKeys.map((k) => k.toString('base64')));
  for (const key of replicaKeys) if (!masterSet.has(key.toString('base64'))) report(`db${db} ${key}: only on the replica`);

  for (const key of masterKeys) {
    const name = `db${db} ${key.toString()}`;
    if (!replicaSet.has(key.toString('base64'))) {
      report(`${name}: missing on the replica`);
      continue;
    }
    const [mType, rType] = await Promise.all([master.type(key), replica.type(key)]);
    if (mType !== rType) {
      report(`${name}: type ${mType} on the master, ${rType} on the replica`);
      continue;
    }
    const [mValue, rValue] = await Promise.all([readValue(master, key, mType), readValue(replica, key, rType)]);
    if (mValue !== rValue) report(`${name}: ${mType} values differ (master ${preview(mType, mValue)}, replica ${preview(rType, rValue)})`);
    const [mAt, rAt] = await Promise.all([expiryAt(master, key), expiryAt(replica, key)]);
    if (mAt >= 0) {
      ttlKeys++;
      const delta = rAt >= 0 ? Math.abs(mAt - rAt) : Infinity;
      if (delta <= TTL_TOLERANCE_MS) {
        ttlKeysMatched++;
        maxExpiryDeltaMs = Math.max(maxExpiryDeltaMs, delta);
      } else if (rAt >= 0) report(`${name}: expires ${mAt - rAt} ms apart on the master and the replica (more than ${TTL_TOLERANCE_MS} ms)`);
      else report(`${name}: ${describeExpiry(mAt)} on the master, ${describeExpiry(rAt)} on the replica`);
    } else if (rAt !== mAt) report(`${name}: ${describeExpiry(mAt)} on the master, ${describeExpiry(rAt)} on the replica`);
  }
  return { db, masterKeys: masterKeys.length, replicaKeys: replicaKeys.length, differences, ttlKeys, ttlKeysMatched, maxExpiryDeltaMs };
}

/**
 * Compares two endpoints key by key, as a client sees them: the same key names in every db, and
 * for each key the same TYPE, the same value (by type) and the same TTL (as absolute expiry time,
 * within a tolerance because the two PTTLs are read a moment apart).
 */
import Redis from 'ioredis';

/** Two PTTL reads a few ms apart, plus clock granularity, must agree within this. */
const TTL_TOLERANCE_MS = 2000;

export interface DbComparison {
  db: number;
  masterKeys: number;
  replicaKeys: number;
  differences: string[];
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
    const [mTtl, rTtl] = await Promise.all([master.pttl(key), replica.pttl(key)]);
    const bothPersistent = mTtl === -1 && rTtl === -1;
    const bothExpiring = mTtl > 0 && rTtl > 0 && Math.abs(mTtl - rTtl) <= TTL_TOLERANCE_MS;
    if (!bothPersistent && !bothExpiring) report(`${name}: PTTL ${mTtl} on the master, ${rTtl} on the replica`);
  }
  return { db, masterKeys: masterKeys.length, replicaKeys: replicaKeys.length, differences };
}

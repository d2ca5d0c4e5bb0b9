/**
 * Loads N keys of mixed types (40% strings, 15% each hashes, lists, sets, zsets of 4 elements),
 * ~150 bytes of value per key on average, through any RESP endpoint with ioredis pipelines.
 * Only commands Pika has (SET, HMSET, RPUSH, SADD, ZADD), so the same loader works through the
 * proxy in front of any node. Content is pseudo-random but deterministic (seeded), so two runs load
 * the same data.
 */
import Redis from 'ioredis';
import { prng } from '../../test/helpers/adversarial-writers';

export interface LoadStats {
  keys: number;
  /** Bytes of values, fields and members sent (not counting key names and RESP framing). */
  valueBytes: number;
  ms: number;
  byType: Record<string, number>;
}

export interface LoadOptions {
  pipelineSize?: number;
  /** Pipelines awaited at once; 2 keeps the node busy while the next batch is built. */
  inFlight?: number;
  prefix?: string;
  seed?: number;
  onProgress?: (loaded: number) => void;
}

const POOL_SIZE = 1 << 20;
const ELEMENTS = 4;

/** Values are slices of one 1 MiB pool of printable bytes: cheap to make, not compressible. */
function valuePool(random: () => number): Buffer {
  const alphabet = Buffer.from('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789');
  const pool = Buffer.allocUnsafe(POOL_SIZE);
  for (let i = 0; i < POOL_SIZE; i++) pool[i] = alphabet[Math.floor(random() * alphabet.length)];
  return pool;
}

export function typeOfIndex(i: number): 'string' | 'hash' | 'list' | 'set' | 'zset' {
  const slot = i % 20;
  if (slot < 8) return 'string';
  if (slot < 11) return 'hash';
  if (slot < 14) return 'list';
  if (slot < 17) return 'set';
  return 'zset';
}

export async function loadMixedKeys(client: Redis, count: number, options: LoadOptions = {}): Promise<LoadStats> {
  const pipelineSize = options.pipelineSize ?? 1000;
  const inFlight = options.inFlight ?? 2;
  const prefix = options.prefix ?? 'bench';
  const random = prng(options.seed ?? 42);
  const pool = valuePool(random);
  const slice = (min: number, max: number): Buffer => {
    const length = min + Math.floor(random() * (max - min + 1));
    const start = Math.floor(random() * (POOL_SIZE - length));
    return pool.subarray(start, start + length);
  };
  const stats: LoadStats = { keys: 0, valueBytes: 0, ms: 0, byType: {} };
  const started = Date.now();
  const pending: Array<Promise<void>> = [];

  for (let first = 0; first < count; first += pipelineSize) {
    const pipeline = client.pipeline();
    const last = Math.min(count, first + pipelineSize);
    for (let i = first; i < last; i++) {
      const type = typeOfIndex(i);
      const key = `${prefix}:${type}:${i}`;
      stats.byType[type] = (stats.byType[type] ?? 0) + 1;
      if (type === 'string') {
        const value = slice(100, 200);
        stats.valueBytes += value.length;
        pipeline.set(key, value);
        continue;
      }
      const args: Array<Buffer | string | number> = [];
      for (let e = 0; e < ELEMENTS; e++) {
        const element = slice(25, 45);
        stats.valueBytes += element.length;
        if (type === 'hash') args.push(`f${e}`, element);
        else if (type === 'zset') args.push(e + random(), element);
        else args.push(Buffer.concat([Buffer.from(`${e}:`), element])); // set members stay distinct
      }
      if (type === 'hash') pipeline.hmset(key, ...(args as [string, Buffer]));
      else if (type === 'list') pipeline.rpush(key, ...(args as Buffer[]));
      else if (type === 'set') pipeline.sadd(key, ...(args as Buffer[]));
      else pipeline.zadd(key, ...(args as Array<number | Buffer>));
    }
    stats.keys = last;
    pending.push(
      pipeline.exec().then((results) => {
        for (const [err] of results ?? []) if (err) throw new Error(`loading mixed keys failed: ${err.message}`);
      }),
    );
    if (pending.length >= inFlight) await pending.shift();
    options.onProgress?.(last);
  }
  await Promise.all(pending);
  stats.ms = Date.now() - started;
  return stats;
}

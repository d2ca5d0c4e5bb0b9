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

/** One command of the mixed data set: the write of key i (and its TTL, when it has one). */
export interface MixedCommand {
  index: number;
  type: ReturnType<typeof typeOfIndex>;
  /** [name, ...args]; a key with a TTL that is not a string gets a second command, EXPIRE. */
  commands: Array<Array<string | Buffer>>;
  valueBytes: number;
  ttl: boolean;
}

export interface MixedOptions {
  prefix?: string;
  seed?: number;
  /**
   * Every `ttlEvery`-th key (index % ttlEvery === 0) gets a TTL of one to two days: strings by
   * SETEX, the others by an EXPIRE after the write (Pika deletes a key given a future PEXPIREAT,
   * so only relative TTLs are used). Off by default (the Redis benchmarks' data has no TTLs).
   */
  ttlEvery?: number;
}

/**
 * The mixed data set as commands, key by key, deterministic for a seed: what loadMixedKeys sends
 * through ioredis and writeMixedKeysResp sends as raw RESP.
 */
export function* mixedCommands(count: number, options: MixedOptions = {}): Generator<MixedCommand> {
  const prefix = options.prefix ?? 'bench';
  const random = prng(options.seed ?? 42);
  const pool = valuePool(random);
  const slice = (min: number, max: number): Buffer => {
    const length = min + Math.floor(random() * (max - min + 1));
    const start = Math.floor(random() * (POOL_SIZE - length));
    return pool.subarray(start, start + length);
  };
  for (let i = 0; i < count; i++) {
    const type = typeOfIndex(i);
    const key = `${prefix}:${type}:${i}`;
    const ttl = options.ttlEvery !== undefined && i % options.ttlEvery === 0;
    const ttlSeconds = String(86_400 + (i % 86_400));
    if (type === 'string') {
      const value = slice(100, 200);
      yield { index: i, type, commands: [ttl ? ['SETEX', key, ttlSeconds, value] : ['SET', key, value]], valueBytes: value.length, ttl };
      continue;
    }
    const args: Array<Buffer | string> = [];
    let valueBytes = 0;
    for (let e = 0; e < ELEMENTS; e++) {
      const element = slice(25, 45);
      valueBytes += element.length;
      if (type === 'hash') args.push(`f${e}`, element);
      else if (type === 'zset') args.push(String(e + random()), element);
      else args.push(Buffer.concat([Buffer.from(`${e}:`), element])); // set members stay distinct
    }
    const name = type === 'hash' ? 'HMSET' : type === 'list' ? 'RPUSH' : type === 'set' ? 'SADD' : 'ZADD';
    const commands: Array<Array<string | Buffer>> = [[name, key, ...args]];
    if (ttl) commands.push(['EXPIRE', key, ttlSeconds]);
    yield { index: i, type, commands, valueBytes, ttl };
  }
}

export async function loadMixedKeys(client: Redis, count: number, options: LoadOptions & MixedOptions = {}): Promise<LoadStats> {
  const pipelineSize = options.pipelineSize ?? 1000;
  const inFlight = options.inFlight ?? 2;
  const stats: LoadStats = { keys: 0, valueBytes: 0, ms: 0, byType: {} };
  const started = Date.now();
  const pending: Array<Promise<void>> = [];
  let pipeline = client.pipeline();
  let inPipeline = 0;
  const flush = async (): Promise<void> => {
    pending.push(
      pipeline.exec().then((results) => {
        for (const [err] of results ?? []) if (err) throw new Error(`loading mixed keys failed: ${err.message}`);
      }),
    );
    pipeline = client.pipeline();
    inPipeline = 0;
    if (pending.length >= inFlight) await pending.shift();
    options.onProgress?.(stats.keys);
  };
  for (const item of mixedCommands(count, options)) {
    stats.byType[item.type] = (stats.byType[item.type] ?? 0) + 1;
    stats.valueBytes += item.valueBytes;
    for (const [name, ...args] of item.commands) pipeline.call(name as string, ...args);
    stats.keys = item.index + 1;
    if (++inPipeline === pipelineSize) await flush();
  }
  if (inPipeline > 0) await flush();
  await Promise.all(pending);
  stats.ms = Date.now() - started;
  return stats;
}

/** RESP encoding of one command (an array of bulk strings). */
export function encodeResp(args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = typeof arg === 'string' ? Buffer.from(arg) : arg;
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/**
 * What the node behind the proxy really does, learned by trying it on a scratch key when the
 * proxy links to it (DESIGN.md §6): never from a version string. The commands the proxy emits —
 * snapshot records, log replay, verification reads — follow from this profile.
 *
 * Why probe instead of trusting the node's name: Pika 4.0.1 answers `PEXPIREAT key <future ms>`
 * with `:1` and deletes the key at once, although its command table lists PEXPIREAT. A proxy that
 * believed the table lost every key with a TTL and still reported success.
 *
 * Every probe has a safe answer that works on every node we know (PEXPIRE of the time remaining,
 * HMSET, one database): a probe that fails in an unexpected way, or whose scratch key another
 * client removed meanwhile, yields that answer instead of failing the link.
 */
import { randomBytes } from 'node:crypto';

/** Decoded reply as the probing connection gives it: Buffer, number, null, an error, or an array. */
export type ProbeReply = unknown;

/** The little the probe needs from a node connection (db 0 selected, authenticated). */
export interface ProbeConnection {
  call(args: ReadonlyArray<Buffer | string>): Promise<ProbeReply>;
}

export interface NodeProfile {
  /** From INFO server, for people only: 'pika', 'redis', 'valkey', 'kvrocks' or 'unknown'. */
  readonly product: string;
  readonly version: string;
  /**
   * How an absolute expiry is applied: `pexpireat` where the node keeps a key given a future
   * PEXPIREAT, else `pexpire` of the time remaining, computed when the command is built.
   */
  readonly expiry: 'pexpireat' | 'pexpire';
  /** `SET k v PXAT ms` parses and keeps the key. */
  readonly setPxat: boolean;
  /** `SET k v KEEPTTL` parses. */
  readonly setKeepTtl: boolean;
  /** HSET takes several field/value pairs (else HMSET is used). */
  readonly hsetPairs: boolean;
  /** PTTL of a missing key: -2 (Redis) or 0 (Pika): 0 cannot tell "missing" from "expires now". */
  readonly missingKeyPttl: number;
  /** What TYPE names a stream ('stream', 'streams'), or null without XADD. */
  readonly streamType: string | null;
  /** XRANGE gives back the ids XADD was given, so a stream can be copied as it is. */
  readonly streamsExact: boolean;
  /** DBSIZE follows writes at once (Pika's counts only after a background scan). */
  readonly dbsizeLive: boolean;
  /** Databases the node has (SELECT 0..n-1). */
  readonly databases: number;
  /** DUMP and RESTORE exist. */
  readonly dumpRestore: boolean;
  /** `HELLO 3` switches a connection to RESP3 (Pika 4.0.1 answers HELLO in RESP2 and stays there). */
  readonly resp3: boolean;
}

/** Prefix of the probe's scratch keys; the snapshot reader never records keys that carry it. */
export const PROBE_KEY_PREFIX = '__pika_sync_proxy:probe:';

/** The profile that works on every node we know, for a node that could not be probed. */
export const SAFE_PROFILE: NodeProfile = Object.freeze({
  product: 'unknown', version: '', expiry: 'pexpire', setPxat: false, setKeepTtl: false, hsetPairs: false,
  missingKeyPttl: 0, streamType: null, streamsExact: false, dbsizeLive: false, databases: 1, dumpRestore: false, resp3: false,
});

const FAR_MS = 3_600_000;

/**
 * Probes `conn`'s node. Leaves nothing behind: the scratch key is deleted at the end (and is
 * short-lived anyway: every value it holds has a TTL when that works).
 */
export async function probeNodeProfile(conn: ProbeConnection): Promise<NodeProfile> {
  const key = `${PROBE_KEY_PREFIX}${randomBytes(6).toString('hex')}`;
  const call = (...args: string[]): Promise<ProbeReply> => conn.call(args).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
  try {
    const info = textOf(await call('INFO', 'server'));
    const product = /pika_version:/.test(info) ? 'pika' : /valkey_version:/.test(info) ? 'valkey' : /kvrocks_version:/.test(info) ? 'kvrocks' : /redis_version:/.test(info) ? 'redis' : 'unknown';
    const version = (/(?:pika|valkey|kvrocks|redis)_version:([^\r\n]+)/.exec(info)?.[1] ?? '').trim();

    // A future PEXPIREAT must keep the key with about that much time left.
    await call('SET', key, 'v');
    await call('PEXPIREAT', key, String(Date.now() + FAR_MS));
    const pttlAfterAt = await call('PTTL', key);
    const expiry = typeof pttlAfterAt === 'number' && pttlAfterAt > FAR_MS - 60_000 ? 'pexpireat' : 'pexpire';

    const setPxat = isOk(await call('SET', key, 'v', 'PXAT', String(Date.now() + FAR_MS))) && (await call('EXISTS', key)) === 1;
    const setKeepTtl = isOk(await call('SET', key, 'v', 'KEEPTTL'));

    await call('DEL', key);
    const missingPttl = await call('PTTL', key);
    const missingKeyPttl = typeof missingPttl === 'number' ? missingPttl : 0;

    const hsetPairs = (await call('HSET', key, 'a', '1', 'b', '2')) === 2;
    await call('DEL', key);

    const xadd = await call('XADD', key, '5-1', 'f', 'v');
    let streamType: string | null = null;
    let streamsExact = false;
    if (!(xadd instanceof Error)) {
      streamType = textOf(await call('TYPE', key)) || null;
      const range = await call('XRANGE', key, '-', '+');
      streamsExact = Array.isArray(range) && range.length === 1 && Array.isArray(range[0]) && textOf(range[0][0]) === '5-1';
    }
    await call('DEL', key);

    const dbsizeLive = await probeDbsize(call, key);
    const databases = await probeDatabases(call);
    const dump = await call('DUMP', key);
    const restore = await call('RESTORE', key, '0', 'not-a-dump-payload');
    const dumpRestore = !isUnknownCommand(dump) && !isUnknownCommand(restore);
    const resp3 = await probeResp3(call);
    return Object.freeze({ product, version, expiry, setPxat, setKeepTtl, hsetPairs, missingKeyPttl, streamType, streamsExact, dbsizeLive, databases, dumpRestore, resp3 });
  } finally {
    await call('DEL', key);
  }
}

/** DBSIZE moves with a SET and a DEL of the scratch key (twice, so another writer rarely fools it). */
async function probeDbsize(call: (...args: string[]) => Promise<ProbeReply>, key: string): Promise<boolean> {
  for (let i = 0; i < 2; i++) {
    const before = await call('DBSIZE');
    await call('SET', key, 'v');
    const after = await call('DBSIZE');
    await call('DEL', key);
    if (typeof before !== 'number' || after !== before + 1) return false;
  }
  return true;
}

/**
 * HELLO 3 answered with `proto 3` (a RESP3 map, which decodes to the same flat list), then back to
 * RESP2 for the rest of the connection's life. Pika answers `proto 2` and stays in RESP2.
 */
async function probeResp3(call: (...args: string[]) => Promise<ProbeReply>): Promise<boolean> {
  const reply = await call('HELLO', '3');
  if (!Array.isArray(reply)) return false;
  const i = reply.findIndex((v) => textOf(v) === 'proto');
  const proto = i >= 0 ? reply[i + 1] : undefined;
  if (proto !== 3) return false;
  await call('HELLO', '2');
  return true;
}

/** CONFIG GET databases, checked by SELECTing the last one (then back to 0). */
async function probeDatabases(call: (...args: string[]) => Promise<ProbeReply>): Promise<number> {
  const reply = await call('CONFIG', 'GET', 'databases');
  const n = Array.isArray(reply) ? Number(textOf(reply[1])) : NaN;
  if (!Number.isInteger(n) || n < 1) return 1;
  const ok = isOk(await call('SELECT', String(n - 1)));
  await call('SELECT', '0');
  return ok ? n : 1;
}

function textOf(reply: ProbeReply): string {
  return Buffer.isBuffer(reply) ? reply.toString('utf8') : typeof reply === 'string' ? reply : '';
}

function isOk(reply: ProbeReply): boolean {
  return textOf(reply) === 'OK';
}

function isUnknownCommand(reply: ProbeReply): boolean {
  return reply instanceof Error && /unknown command|unknown subcommand/i.test(reply.message);
}

/** One line for INFO and SYNCPROXY STATUS: `expiry=pexpire,hset_pairs=0,...`. */
export function describeProfile(p: NodeProfile): string {
  const flag = (b: boolean): string => (b ? '1' : '0');
  return [
    `product=${p.product}`, `version=${p.version || '?'}`, `expiry=${p.expiry}`, `set_pxat=${flag(p.setPxat)}`, `set_keepttl=${flag(p.setKeepTtl)}`,
    `hset_pairs=${flag(p.hsetPairs)}`, `missing_key_pttl=${p.missingKeyPttl}`, `stream_type=${p.streamType ?? 'none'}`, `streams_exact=${flag(p.streamsExact)}`,
    `dbsize_live=${flag(p.dbsizeLive)}`, `databases=${p.databases}`, `dump_restore=${flag(p.dumpRestore)}`, `resp3=${flag(p.resp3)}`,
  ].join(',');
}

const PEXPIRE = Buffer.from('PEXPIRE');

/** `name` is PEXPIREAT in any case (the form snapshots and the write log carry expiries in). */
export function isPexpireat(name: Buffer | string | undefined): boolean {
  if (name === undefined || name.length !== 9) return false;
  return (typeof name === 'string' ? name : name.toString('latin1')).toUpperCase() === 'PEXPIREAT';
}

/**
 * A command as this node must receive it: `PEXPIREAT key ms` becomes `PEXPIRE key <ms - now>`
 * where the node does not honour PEXPIREAT (a remaining time of 0 or less deletes the key, as an
 * expiry in the past does). The remaining time is computed when the command is built, so the
 * expiry lands later than the master's by the time the command waits to be executed (the
 * pipeline's queue, usually milliseconds). Everything else is returned as it is.
 */
export function toNodeForm(args: Buffer[], profile: NodeProfile, nowMs = Date.now()): Buffer[] {
  if (profile.expiry === 'pexpireat' || args.length !== 3 || !isPexpireat(args[0])) return args;
  const at = Number(args[2].toString());
  if (!Number.isFinite(at)) return args; // the node answers the malformed number with its own error
  return [PEXPIRE, args[1], Buffer.from(String(Math.round(at - nowMs)))];
}

/** `--node-expiry`: learn the form (auto), or force one (an operator's override; tests use it). */
export type ExpiryChoice = 'auto' | 'pexpireat' | 'pexpire';

export function withExpiryOverride(profile: NodeProfile, choice: ExpiryChoice): NodeProfile {
  return choice === 'auto' || choice === profile.expiry ? profile : Object.freeze({ ...profile, expiry: choice });
}

/**
 * The log form of XCLAIM and XAUTOCLAIM (pure; log-rewrite.ts). Both claim only pending entries
 * idle for at least min-idle-time, judged by the node's clock against each entry's delivery time;
 * replayed as sent on a replica (other delivery times, later) they would claim other entries. So
 * the log carries what the master's node did, from its reply (Redis 7.0 semantics):
 *
 * - XCLAIM: first the command with every id and a min-idle-time no entry reaches, which claims
 *   nothing but does what XCLAIM does regardless of idle time — removes from the group the
 *   pending entries whose stream entry was deleted, and applies LASTID; then, when the master
 *   claimed any, the command with min-idle-time 0 and exactly the claimed ids (its RETRYCOUNT,
 *   FORCE, JUSTID options kept: they set the same delivery counts).
 * - XAUTOCLAIM: XCLAIM with min-idle-time 0 of the claimed ids (JUSTID when it had it: no
 *   delivery count increment), and XACK of the ids its reply says were deleted (removed from the
 *   pending list, which is what XAUTOCLAIM does with them).
 *
 * A claim sets the claimed entries' delivery time: now, `IDLE ms` before now, or `TIME ms`. Now is
 * the replay's on a replica (later by the replica's lag, minutes after an outage), so the logged
 * claim carries it as `TIME <ms>` taken when the master answered, as relative TTLs become
 * PEXPIREAT: a replica's entries are as idle as the master's, and a min-idle-time XAUTOCLAIM
 * after a failover reclaims them on schedule.
 *
 * XREADGROUP replays as sent (the group's state decides what it delivers, the same on a replica),
 * followed, for the entries it delivered into the pending list, by `XCLAIM key group consumer 0
 * <ids> JUSTID TIME <ms>` (same owner, no delivery count change): the delivery time the master set.
 *
 * An XAUTOCLAIM that claimed and removed nothing is not logged.
 */
import { upperName as upper } from '../resp/command-name';
import type { Decoded } from '../resp/decode';

const B = (s: string): Buffer => Buffer.from(s);
/** A min-idle-time no pending entry reaches (ms; 2^53 - 1, which the node parses as a long long). */
const NEVER_IDLE_ENOUGH = B('9007199254740991');
const ZERO = B('0');
const TIME = B('TIME');
const XCLAIM_OPTIONS = new Set(['IDLE', 'TIME', 'RETRYCOUNT', 'FORCE', 'JUSTID', 'LASTID']);

/** XCLAIM key group consumer min-idle-time id [id ...] [IDLE ms] [TIME ms] [RETRYCOUNT n] [FORCE] [JUSTID] [LASTID id] */
export function rewriteXclaim(args: Buffer[], reply: Decoded, nowMs: number): Buffer[][] | null {
  if (args.length < 6 || !Array.isArray(reply)) return null; // refused: nothing happened
  let end = 5;
  while (end < args.length && !XCLAIM_OPTIONS.has(upper(args[end]))) end++;
  const head = args.slice(1, 4); // key group consumer
  const ids = args.slice(5, end);
  const options = args.slice(end);
  const lastId = lastIdOption(options);
  const out: Buffer[][] = [[args[0], ...head, NEVER_IDLE_ENOUGH, ...ids, ...lastId]];
  const claimed = claimedIds(reply);
  if (claimed.length > 0) out.push([args[0], ...head, ZERO, ...claimed, ...withDeliveryTime(options, nowMs)]);
  return out;
}

/**
 * XCLAIM's options with its IDLE / TIME replaced by one `TIME <ms>`: the delivery time the
 * master's node set (as Redis reads them, the last of IDLE and TIME counts; neither: now).
 */
function withDeliveryTime(options: Buffer[], nowMs: number): Buffer[] {
  const kept: Buffer[] = [];
  let deliveredAt = nowMs;
  for (let i = 0; i < options.length; i++) {
    const opt = upper(options[i]);
    if ((opt === 'IDLE' || opt === 'TIME') && i + 1 < options.length) {
      const n = Number(options[++i].toString('latin1'));
      deliveredAt = opt === 'IDLE' ? nowMs - n : n;
    } else kept.push(options[i]);
  }
  // As Redis (t_stream.c xclaimCommand): a delivery time before 0 or in the future is now.
  if (!(deliveredAt >= 0 && deliveredAt <= nowMs)) deliveredAt = nowMs;
  return [...kept, TIME, B(String(Math.round(deliveredAt)))];
}

/** XAUTOCLAIM key group consumer min-idle-time start [COUNT count] [JUSTID] → [next, claimed, deleted] */
export function rewriteXautoclaim(args: Buffer[], reply: Decoded, nowMs: number): Buffer[][] | null {
  if (args.length < 6 || !Array.isArray(reply) || reply.length < 2) return null;
  const justId = args.slice(6).some((a) => upper(a) === 'JUSTID');
  const claimed = Array.isArray(reply[1]) ? claimedIds(reply[1]) : [];
  const deleted = Array.isArray(reply[2]) ? reply[2].filter((d): d is Buffer => Buffer.isBuffer(d)) : [];
  const out: Buffer[][] = [];
  if (claimed.length > 0) out.push([B('XCLAIM'), args[1], args[2], args[3], ZERO, ...claimed, ...(justId ? [B('JUSTID')] : []), TIME, B(String(Math.round(nowMs)))]);
  if (deleted.length > 0) out.push([B('XACK'), args[1], args[2], ...deleted]);
  return out.length > 0 ? out : null;
}

/**
 * XREADGROUP GROUP group consumer [COUNT n] [BLOCK ms] [NOACK] STREAMS key [key ...] id [id ...]
 * → [[key, [[id, fields | nil], ...]], ...] (RESP3: the map flattened to key, entries, key, …).
 */
export function rewriteXreadgroup(args: Buffer[], reply: Decoded, nowMs: number): Buffer[][] | null {
  if (reply instanceof Error) return null; // refused: nothing happened
  const out: Buffer[][] = [args];
  if (args.length < 7 || !Array.isArray(reply)) return out; // nothing delivered (the consumer may be new)
  for (let i = 4; i < args.length; i++) {
    const opt = upper(args[i]);
    if (opt === 'STREAMS') break;
    if (opt === 'NOACK') return out; // no pending entries made
  }
  const flat = reply.length > 0 && !Array.isArray(reply[0]);
  const time = B(String(Math.round(nowMs)));
  for (let i = 0; i < reply.length; i += flat ? 2 : 1) {
    const pair = flat ? [reply[i], reply[i + 1]] : reply[i];
    if (!Array.isArray(pair)) continue;
    const [key, entries] = pair;
    if (!Buffer.isBuffer(key) || !Array.isArray(entries)) continue;
    // An entry deleted since its delivery comes back as [id, nil] from the history and stays
    // pending; an XCLAIM of it would remove it from the pending list, so it is left out.
    const ids = entries.filter((e): e is Decoded[] => Array.isArray(e) && Buffer.isBuffer(e[0]) && e[1] !== null).map((e) => e[0] as Buffer);
    if (ids.length > 0) out.push([B('XCLAIM'), key, args[2], args[3], ZERO, ...ids, B('JUSTID'), TIME, time]);
  }
  return out;
}

/** The ids of a claim reply: JUSTID's ids, or the entries' ids ([id, fields]; nil for a deleted one in older versions). */
function claimedIds(reply: Decoded[]): Buffer[] {
  const ids: Buffer[] = [];
  for (const item of reply) {
    if (Buffer.isBuffer(item)) ids.push(item);
    else if (Array.isArray(item) && Buffer.isBuffer(item[0])) ids.push(item[0]);
  }
  return ids;
}

function lastIdOption(options: Buffer[]): Buffer[] {
  for (let i = 0; i + 1 < options.length; i++) if (upper(options[i]) === 'LASTID') return [options[i], options[i + 1]];
  return [];
}

/**
 * The log form of XCLAIM and XAUTOCLAIM (pure; log-rewrite.ts). Both claim only pending entries
 * idle for at least min-idle-time, judged by the node's clock against each entry's delivery time;
 * replayed as sent on a replica (other delivery times, later) they would claim other entries. So
 * the log carries what the master's node did, from its reply (Redis 7.0 semantics):
 *
 * - XCLAIM: first the command with every id and a min-idle-time no entry reaches, which claims
 *   nothing but does what XCLAIM does regardless of idle time — removes from the group the
 *   pending entries whose stream entry was deleted, and applies LASTID; then, when the master
 *   claimed any, the command with min-idle-time 0 and exactly the claimed ids (its IDLE, TIME,
 *   RETRYCOUNT, FORCE, JUSTID options kept: they set the same delivery counts).
 * - XAUTOCLAIM: XCLAIM with min-idle-time 0 of the claimed ids (JUSTID when it had it: no
 *   delivery count increment), and XACK of the ids its reply says were deleted (removed from the
 *   pending list, which is what XAUTOCLAIM does with them).
 *
 * An XAUTOCLAIM that claimed and removed nothing is not logged.
 */
import { upperName as upper } from '../resp/command-name';
import type { Decoded } from '../resp/decode';

const B = (s: string): Buffer => Buffer.from(s);
/** A min-idle-time no pending entry reaches (ms; 2^53 - 1, which the node parses as a long long). */
const NEVER_IDLE_ENOUGH = B('9007199254740991');
const ZERO = B('0');
const XCLAIM_OPTIONS = new Set(['IDLE', 'TIME', 'RETRYCOUNT', 'FORCE', 'JUSTID', 'LASTID']);

/** XCLAIM key group consumer min-idle-time id [id ...] [IDLE ms] [TIME ms] [RETRYCOUNT n] [FORCE] [JUSTID] [LASTID id] */
export function rewriteXclaim(args: Buffer[], reply: Decoded): Buffer[][] | null {
  if (args.length < 6 || !Array.isArray(reply)) return null; // refused: nothing happened
  let end = 5;
  while (end < args.length && !XCLAIM_OPTIONS.has(upper(args[end]))) end++;
  const head = args.slice(1, 4); // key group consumer
  const ids = args.slice(5, end);
  const options = args.slice(end);
  const lastId = lastIdOption(options);
  const out: Buffer[][] = [[args[0], ...head, NEVER_IDLE_ENOUGH, ...ids, ...lastId]];
  const claimed = claimedIds(reply);
  if (claimed.length > 0) out.push([args[0], ...head, ZERO, ...claimed, ...options]);
  return out;
}

/** XAUTOCLAIM key group consumer min-idle-time start [COUNT count] [JUSTID] → [next, claimed, deleted] */
export function rewriteXautoclaim(args: Buffer[], reply: Decoded): Buffer[][] | null {
  if (args.length < 6 || !Array.isArray(reply) || reply.length < 2) return null;
  const justId = args.slice(6).some((a) => upper(a) === 'JUSTID');
  const claimed = Array.isArray(reply[1]) ? claimedIds(reply[1]) : [];
  const deleted = Array.isArray(reply[2]) ? reply[2].filter((d): d is Buffer => Buffer.isBuffer(d)) : [];
  const out: Buffer[][] = [];
  if (claimed.length > 0) out.push([B('XCLAIM'), args[1], args[2], args[3], ZERO, ...claimed, ...(justId ? [B('JUSTID')] : [])]);
  if (deleted.length > 0) out.push([B('XACK'), args[1], args[2], ...deleted]);
  return out.length > 0 ? out : null;
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

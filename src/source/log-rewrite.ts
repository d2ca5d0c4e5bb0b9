/**
 * Turns an executed write into the commands a replica must replay to reach the same state
 * (pure). Replay happens later and on another node, so anything that depends on the clock or on
 * randomness is rewritten with the outcome the master's node reported:
 *
 * - relative expirations (EXPIRE, PEXPIRE, EXPIREAT in seconds, SETEX, PSETEX, SET EX/PX/EXAT,
 *   GETEX) become an absolute PEXPIREAT computed from `nowMs`; RESTORE's relative TTL becomes
 *   an absolute one (ABSTTL);
 * - SPOP becomes SREM of the members the node returned; XADD with `*` gets the id it produced;
 * - Pika's DELVX becomes DEL when it deleted;
 * - XADD/XTRIM with approximate trimming (`~`) get their exact outcome (stream-trims.ts);
 * - XCLAIM and XAUTOCLAIM, whose min-idle-time is judged by the node's clock against delivery
 *   times, claim on the replica exactly the entries the master's node claimed (stream-claims.ts);
 * - a conditional write whose reply shows it did nothing is not logged (`null`): replaying a
 *   rewritten form could otherwise change the replica (e.g. a PEXPIREAT after a refused SET NX).
 *
 * INCRBYFLOAT/HINCRBYFLOAT are logged unchanged: the increment is applied to the same value on
 * the replica, and the alternative (SET ... KEEPTTL) does not exist on Pika.
 */
import { lowerName, upperName } from '../resp/command-name';
import { Decoded, decodeReply } from '../resp/decode';
import { afterImageCommands, isCapturedScript, isReadBack, readBacksAfter } from './script-images';
import { exactTrim, isApproxTrim } from './stream-trims';
import { rewriteXautoclaim, rewriteXclaim, rewriteXreadgroup } from './stream-claims';

type Reply = () => Decoded;

const upper = (b: Buffer | undefined): string => (b ? b.toString('latin1').toUpperCase() : '');
const B = (s: string): Buffer => Buffer.from(s);

/** The commands `rewrite` may change (lower case); every other write replays as it is. */
const REWRITTEN = new Set(['expire', 'pexpire', 'expireat', 'pexpireat', 'setex', 'psetex', 'set', 'getex', 'spop', 'xadd', 'xclaim', 'xautoclaim', 'xreadgroup', 'delvx', 'restore']);

/**
 * Whether a write replays exactly as the client sent it: most writes, and a plain SET. `name` is
 * the command name in lower case, `argc` its argument count (name included).
 */
export function replaysAsSent(name: string, argc: number): boolean {
  // Remembered for the last name: pipelines repeat one.
  if (name !== lastName) {
    lastRewritten = REWRITTEN.has(name);
    lastName = name;
  }
  return !lastRewritten || (name === 'set' && argc <= 3);
}

let lastName = '';
let lastRewritten = false;

/** Replay commands for one executed write, or null when nothing must be replayed. */
export function toLogCommands(args: Buffer[], replyRaw: Buffer, nowMs: number): Buffer[][] | null {
  // The hot path replays the write as it is, without a reply thunk.
  if (replaysAsSent(lowerName(args[0]), args.length)) return [args];
  let decoded: { v: Decoded } | undefined;
  return rewrite(args, () => (decoded ??= { v: decodeReply(replyRaw) }).v, nowMs);
}

/**
 * MULTI/EXEC: `queued` holds every command queued between MULTI and EXEC, aligned with the EXEC
 * reply's elements. Commands answered with an error are dropped, the rest rewritten; `isWrite`
 * (default: every command) leaves out reads. SELECT inside the transaction is kept so the replay
 * writes to the same databases. Null when EXEC was aborted (nil) or nothing remains.
 */
export function execToLogCommands(
  queued: Buffer[][],
  execReplyRaw: Buffer,
  nowMs: number,
  isWrite: (args: Buffer[]) => boolean = () => true,
): Buffer[][] | null {
  const reply = decodeReply(execReplyRaw);
  if (!Array.isArray(reply)) return null;
  const out: Buffer[][] = [];
  for (let i = 0; i < queued.length; i++) {
    const args = queued[i];
    const sub = reply[i];
    // A captured script is logged as its keys' after-images (from the read-backs after it), even
    // when it failed: a runtime error does not undo the writes made before it (script-images.ts).
    if (isCapturedScript(args)) {
      const readBacks = readBacksAfter(queued, i);
      const keys = queued.slice(i + 1, i + 1 + readBacks).filter((_, j) => j % 2 === 0).map((dump) => dump[1]);
      out.push(...afterImageCommands(keys, reply.slice(i + 1, i + 1 + readBacks), nowMs));
      i += readBacks;
      continue;
    }
    if (sub === undefined || sub instanceof Error) continue;
    // An approximate trim: its exact outcome from the first-entry read right behind it.
    if (isApproxTrim(args) && i + 1 < queued.length && isReadBack(queued[i + 1])) {
      const first = reply[i + 1];
      const cmds = isWrite(args) ? rewrite(args, () => sub, nowMs) : null;
      if (cmds) out.push(...cmds.map((c) => exactTrim(c, first)));
      i++;
      continue;
    }
    if (upperName(args[0]) === 'SELECT') {
      out.push(args);
      continue;
    }
    if (!isWrite(args)) continue;
    const cmds = rewrite(args, () => sub, nowMs);
    if (cmds) out.push(...cmds);
  }
  return out.length > 0 ? out : null;
}

function rewrite(args: Buffer[], reply: Reply, nowMs: number): Buffer[][] | null {
  const name = upperName(args[0]);
  switch (name) {
    case 'EXPIRE':
    case 'PEXPIRE':
    case 'EXPIREAT':
    case 'PEXPIREAT': {
      if (args.length < 3) return [args];
      if (reply() !== 1) return null; // not set (missing key or NX/XX/GT/LT refused)
      const n = Number(args[2].toString('latin1'));
      const abs = name === 'EXPIRE' ? nowMs + n * 1000 : name === 'PEXPIRE' ? nowMs + n : name === 'EXPIREAT' ? n * 1000 : n;
      return [pexpireat(args[1], abs)];
    }
    case 'SETEX':
    case 'PSETEX': {
      if (args.length !== 4) return [args];
      const n = Number(args[2].toString('latin1'));
      return [[B('SET'), args[1], args[3]], pexpireat(args[1], nowMs + (name === 'SETEX' ? n * 1000 : n))];
    }
    case 'SET':
      return rewriteSet(args, reply, nowMs);
    case 'GETEX':
      return rewriteGetex(args, reply, nowMs);
    case 'SPOP': {
      const r = reply();
      const members = Array.isArray(r) ? r : r === null || r instanceof Error ? [] : [r];
      const bufs = members.filter((m): m is Buffer => Buffer.isBuffer(m));
      return bufs.length > 0 ? [[B('SREM'), args[1], ...bufs]] : null;
    }
    case 'XADD':
      return rewriteXadd(args, reply);
    case 'XCLAIM':
      return rewriteXclaim(args, reply(), nowMs);
    case 'RESTORE':
      return rewriteRestore(args, reply, nowMs);
    // Pika's own DELVX key value deletes the key when it holds that value (1; -1 when it holds
    // another, 0 when missing): logged as DEL, which every node has.
    case 'DELVX':
      return args.length === 3 && reply() === 1 ? [[B('DEL'), args[1]]] : null;
    case 'XAUTOCLAIM':
      return rewriteXautoclaim(args, reply(), nowMs);
    case 'XREADGROUP':
      return rewriteXreadgroup(args, reply(), nowMs);
    default:
      return [args];
  }
}

function pexpireat(key: Buffer, absMs: number): Buffer[] {
  return [B('PEXPIREAT'), key, B(String(Math.round(absMs)))];
}

const SET = B('SET');

function rewriteSet(args: Buffer[], reply: Reply, nowMs: number): Buffer[][] | null {
  // The hot path: a plain SET replays as it is, without decoding the reply.
  if (args.length <= 3) return [args];
  const kept: Buffer[] = [SET, args[1], args[2]];
  let nx = false;
  let xx = false;
  let get = false;
  let expireAt: number | undefined;
  for (let i = 3; i < args.length; i++) {
    const opt = upper(args[i]);
    const num = (): number => Number(args[++i]?.toString('latin1'));
    if (opt === 'NX') nx = true;
    else if (opt === 'XX') xx = true;
    else if (opt === 'GET') get = true;
    else if (opt === 'EX') expireAt = nowMs + num() * 1000;
    else if (opt === 'PX') expireAt = nowMs + num();
    else if (opt === 'EXAT') expireAt = num() * 1000;
    else if (opt === 'PXAT') expireAt = num();
    else kept.push(args[i]); // KEEPTTL and anything unknown stay as they were
  }
  // Whether the node performed the SET: with GET the reply is the old value, otherwise OK/nil.
  const performed = !nx && !xx ? true : get ? (nx ? reply() === null : reply() !== null) : reply() !== null && !(reply() instanceof Error);
  if (!performed) return null;
  // NX/XX are dropped: the condition held on the master, and GET only shaped the reply.
  return expireAt === undefined ? [kept] : [kept, pexpireat(args[1], expireAt)];
}

function rewriteGetex(args: Buffer[], reply: Reply, nowMs: number): Buffer[][] | null {
  if (reply() === null) return null; // missing key: nothing changed
  for (let i = 2; i < args.length; i++) {
    const opt = upper(args[i]);
    const n = Number(args[i + 1]?.toString('latin1'));
    if (opt === 'PERSIST') return [[B('PERSIST'), args[1]]];
    if (opt === 'EX') return [pexpireat(args[1], nowMs + n * 1000)];
    if (opt === 'PX') return [pexpireat(args[1], nowMs + n)];
    if (opt === 'EXAT') return [pexpireat(args[1], n * 1000)];
    if (opt === 'PXAT') return [pexpireat(args[1], n)];
  }
  return null; // plain GETEX is a read
}

/**
 * RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]: a TTL relative to when the
 * master ran it would expire the key later on a replica that replays it later (after a link
 * outage, minutes): it becomes the absolute time, with ABSTTL. Not logged when refused.
 */
function rewriteRestore(args: Buffer[], reply: Reply, nowMs: number): Buffer[][] | null {
  if (args.length < 4 || reply() instanceof Error) return null;
  const ttl = Number(args[2].toString('latin1'));
  if (!(ttl > 0) || args.slice(4).some((a) => upper(a) === 'ABSTTL')) return [args];
  return [[args[0], args[1], B(String(Math.round(nowMs + ttl))), ...args.slice(3), B('ABSTTL')]];
}

/** XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] id field value ... */
function rewriteXadd(args: Buffer[], reply: Reply): Buffer[][] | null {
  let i = 2;
  for (;;) {
    const opt = upper(args[i]);
    if (opt === 'NOMKSTREAM') i++;
    else if (opt === 'MAXLEN' || opt === 'MINID') {
      i++;
      if (args[i] && (args[i].equals(B('=')) || args[i].equals(B('~')))) i++;
      i++;
    } else if (opt === 'LIMIT') i += 2;
    else break;
  }
  if (i >= args.length) return [args];
  const r = reply();
  if (r === null) return null; // NOMKSTREAM on a missing stream
  if (!args[i].equals(B('*')) || !Buffer.isBuffer(r)) return [args];
  const out = args.slice();
  out[i] = r;
  return [out];
}

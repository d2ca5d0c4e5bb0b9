/**
 * How a script's (EVAL, EVALSHA, FCALL) effect reaches the write log (pure: no I/O).
 *
 * A script may do anything its code says, depend on the clock or on randomness, or stop halfway
 * with a runtime error after some writes. Replaying it on a replica is not exact, so the proxy logs
 * what it did instead: the after-image of every key it declares (numkeys keys). The data path sends
 * `MULTI; <script>; DUMP k; PTTL k; ...; EXEC` as one contiguous batch on the ordered connection,
 * so the read-backs see each key right after the script and before any other write; the log gets
 * `DEL k` for a key that is gone, else `RESTORE k 0 <dump> REPLACE` (+ `PEXPIREAT` for a TTL).
 *
 * A script that writes keys it did not declare cannot be captured this way (README, "Scripts").
 */
import { SyncProxyError } from '../errors';
import type { Decoded } from '../resp/decode';

const B = (s: string): Buffer => Buffer.from(s);
const DUMP = B('DUMP');
const PTTL = B('PTTL');
const DEL = B('DEL');
const RESTORE = B('RESTORE');
const REPLACE = B('REPLACE');
const ZERO = B('0');
const PEXPIREAT = B('PEXPIREAT');

/** Script commands whose effect is logged as after-images (lower case). */
const SCRIPT_WRITES = new Set(['eval', 'evalsha', 'fcall']);

export function isScriptWrite(name: string): boolean {
  return SCRIPT_WRITES.has(name);
}

/**
 * Scripts whose effect is read back, and their read-back commands, marked by identity (not by
 * shape, so a client's own `DUMP k` queued in a transaction is never mistaken for one).
 */
const capturedScripts = new WeakSet<Buffer[]>();
const readBackMarks = new WeakSet<Buffer[]>();

/**
 * Marks `script` as captured and returns its read-backs, to be sent right after it: two per
 * declared key, DUMP then PTTL (none for a script that declares no key: nothing is logged).
 */
export function captureScript(script: Buffer[], keys: readonly Buffer[]): Buffer[][] {
  capturedScripts.add(script);
  const out: Buffer[][] = [];
  for (const key of keys) {
    const dump = [DUMP, key];
    const pttl = [PTTL, key];
    readBackMarks.add(dump);
    readBackMarks.add(pttl);
    out.push(dump, pttl);
  }
  return out;
}

export function isCapturedScript(args: Buffer[]): boolean {
  return capturedScripts.has(args);
}

/** Marks a read the data path adds after a write of the client's (kept out of EXEC's reply to it). */
export function markReadBack(args: Buffer[]): Buffer[] {
  readBackMarks.add(args);
  return args;
}

export function isReadBack(args: Buffer[]): boolean {
  return readBackMarks.has(args);
}

/**
 * The replay commands for the after-images: `replies` holds DUMP's and PTTL's replies for each
 * key in turn. A key with a nil DUMP (or PTTL -2) no longer exists; PTTL -1 means no expiry.
 */
export function afterImageCommands(keys: readonly Buffer[], replies: readonly Decoded[], nowMs: number): Buffer[][] {
  const out: Buffer[][] = [];
  keys.forEach((key, i) => {
    const dump = replies[2 * i];
    const pttl = replies[2 * i + 1];
    if (dump instanceof Error || pttl instanceof Error) {
      // DUMP/PTTL of an existing key do not fail: this node is not what the proxy probed.
      throw new SyncProxyError('BACKEND_ERROR_REPLY', `reading back a script's key failed: ${(dump instanceof Error ? dump : (pttl as Error)).message}`);
    }
    if (!Buffer.isBuffer(dump) || pttl === -2) {
      out.push([DEL, key]);
      return;
    }
    out.push([RESTORE, key, ZERO, dump, REPLACE]);
    if (typeof pttl === 'number' && pttl >= 0) out.push([PEXPIREAT, key, B(String(nowMs + pttl))]);
  });
  return out;
}

/** In a transaction's queued commands, the number of read-back entries right after `queued[i]`. */
export function readBacksAfter(queued: readonly Buffer[][], i: number): number {
  let n = 0;
  while (i + 1 + n < queued.length && isReadBack(queued[i + 1 + n])) n++;
  return n;
}

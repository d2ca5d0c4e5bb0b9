/**
 * Replies the proxy makes itself when it refuses a command or reports a failure (pure).
 */
import { SyncProxyError, describeError } from '../errors';
import * as encode from '../resp/encode';
import { DebugEffect, debugEffect } from './command-table';

export const READONLY_ERROR = encode.error("READONLY You can't write against a read only replica.");

export function errorReply(err: unknown): Buffer {
  if (err instanceof SyncProxyError) return encode.error(`ERR ${describeError(err)}`);
  return encode.error(`ERR ${err instanceof Error ? err.message : String(err)}`);
}

/** CONFIG SET requirepass (or masterauth) on the node would lock the proxy out of its own node. */
export function changesNodeAuth(args: readonly Buffer[]): boolean {
  if (args[1]?.toString().toLowerCase() !== 'set') return false;
  return args.slice(2).some((a, i) => i % 2 === 0 && ['requirepass', 'masterauth', 'masteruser'].includes(a.toString().toLowerCase()));
}

export function refusalReason(name: string): string {
  if (name === 'monitor') return 'it would take over the shared node connection';
  if (name === 'pkpatternmatchdel') return 'the keys it deletes are not in its reply, so it cannot be logged for replicas (delete them with SCAN and DEL/UNLINK)';
  if (name === 'pksetexat') return 'Pika 4.0.1 deletes the key instead of setting it, whatever the time given; use SETEX key seconds value';
  if (name.startsWith('slots')) return 'Codis slot migration moves keys out of the node behind the write log';
  return 'it acts on the node behind the proxy';
}

const DEBUG_REASONS: Record<Exclude<DebugEffect, 'pass' | 'reload'>, string> = {
  data: 'it changes data outside the write log (replicas would diverge)',
  diverge: 'it lets the node accept RESTORE payloads its replicas would refuse (replicas would diverge)',
  stop: 'it stops the node',
};

/** A client's word as it may appear in an error line: printable, bounded. */
function printable(text: string): string {
  return text.slice(0, 64).replace(/[^\x21-\x7e]/g, '?');
}

/** A subcommand name as it may appear in an error line. */
function shown(arg: Buffer): string {
  return printable(arg.toString('latin1', 0, 64)).toUpperCase();
}

/** A command the table does not know that the node says writes (unknown-commands.ts). */
export function unknownWriteRefusal(name: string): Buffer {
  return encode.error(`ERR '${printable(name)}' is a write on this node that pika-sync-proxy cannot replicate (it is not in its command table): refused, so that replicas do not silently diverge`);
}

/** DEBUG <subcommand>: null when it passes to the node (DEBUG_SUBCOMMANDS), else the refusal. */
export function debugRefusal(args: readonly Buffer[]): Buffer | null {
  const effect = debugEffect(args[1]);
  if (effect === 'pass') return null;
  // DEBUG RELOAD saves the dataset first, then loads that file back (NOFLUSH MERGE: into the same
  // data): the same data. Outside MULTI the session runs RELOAD NOSAVE and LOADAOF on terms
  // (debug-commands.ts); inside a transaction they are refused.
  if (effect === 'reload' && reloadKeepsData(args)) return null;
  const reason = effect ? DEBUG_REASONS[effect === 'reload' ? 'data' : effect] : 'it is not a subcommand the proxy knows to leave the data unchanged';
  const where = effect === 'reload' ? ' inside a transaction' : '';
  return encode.error(`ERR DEBUG ${shown(args[1])} is refused by pika-sync-proxy${where}: ${reason}`);
}

/**
 * The refusal of an admin command that must not reach the node as sent; null when it may.
 * `req.args` is read only for the commands checked (a Request makes its views on demand).
 */
export function adminRefusal(name: string, req: { readonly args: readonly Buffer[] }): Buffer | null {
  if (name === 'config' && changesNodeAuth(req.args)) {
    return encode.error('ERR CONFIG SET of requirepass/masterauth/masteruser is not allowed through pika-sync-proxy: the proxy authenticates to its node with --backend-password');
  }
  if (name === 'debug') return debugRefusal(req.args);
  return null;
}

/** DEBUG RELOAD without NOSAVE: it saves first, so what it loads back is the data it had. */
export function reloadKeepsData(args: readonly Buffer[]): boolean {
  const words = args.slice(1).map((a) => a.toString('latin1').toLowerCase());
  return words[0] === 'reload' && !words.includes('nosave');
}

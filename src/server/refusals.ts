/**
 * Replies the proxy makes itself when it refuses a command or reports a failure (pure).
 */
import { SyncProxyError, describeError } from '../errors';
import * as encode from '../resp/encode';

export const READONLY_ERROR = encode.error("READONLY You can't write against a read only replica.");

export function errorReply(err: unknown): Buffer {
  if (err instanceof SyncProxyError) return encode.error(`ERR ${describeError(err)}`);
  return encode.error(`ERR ${err instanceof Error ? err.message : String(err)}`);
}

/** CONFIG SET requirepass (or masterauth) on the node would lock the proxy out of its own node. */
export function changesNodeAuth(args: Buffer[]): boolean {
  if (args[1]?.toString().toLowerCase() !== 'set') return false;
  return args.slice(2).some((a, i) => i % 2 === 0 && ['requirepass', 'masterauth', 'masteruser'].includes(a.toString().toLowerCase()));
}

export function refusalReason(name: string): string {
  if (['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro', 'function', 'script'].includes(name)) {
    return 'scripts cannot be replicated through the write log';
  }
  if (name === 'monitor') return 'it would take over the shared node connection';
  return 'it acts on the node behind the proxy';
}

/**
 * The shapes of the node's replies the key reader expects, each checked: an error reply or a reply
 * of another shape is an explicit error (MALFORMED_RESPONSE via the reader's `malformedReply`,
 * SNAPSHOT_BUILD_FAILED for a type the snapshot cannot hold), never a silently empty value.
 */
import { SyncProxyError } from '../errors';
import { BulkArray, Reply, bulkItems } from '../resp/reply-reader';
import { expectNoError, malformedReply as malformed } from './reader-connection';
import type { KeyType } from './types';

/** TYPE's answers (Pika 4.0.1 says 'streams') and the snapshot's key types. */
const TYPES: Record<string, KeyType> = { string: 'string', hash: 'hash', list: 'list', set: 'set', zset: 'zset', stream: 'stream', streams: 'stream' };


/**
 * The absolute expiry a PTTL reply means: -1 without a TTL, null for a key that is gone. PTTL 0 is
 * "expires now" on Redis and "missing" on Pika: a missing key shows as an empty read.
 */
export function expiryOf(reply: Reply, now: number): number | null {
  expectNoError(reply, 'PTTL');
  if (typeof reply !== 'number') throw new SyncProxyError('MALFORMED_RESPONSE', 'PTTL answered a non-integer');
  if (reply === -2) return null;
  return reply >= 0 ? now + reply : -1;
}

/** The type a TYPE reply names, null for a key that does not exist. */
export function typeOf(reply: Reply): KeyType | null {
  expectNoError(reply, 'TYPE');
  const name = typeof reply === 'string' ? reply : String(reply);
  if (name === 'none') return null;
  const type = TYPES[name];
  if (!type) throw new SyncProxyError('SNAPSHOT_BUILD_FAILED', `key of unsupported type '${name}' in the node`);
  return type;
}

/** The values of an MGET of `count` keys: a bulk per key, null for a key gone since its probe. */
export function mgetValues(reply: Reply, count: number): Reply[] {
  expectNoError(reply, 'MGET');
  const values: Reply[] | undefined = reply instanceof BulkArray ? reply.items() : Array.isArray(reply) ? reply : undefined;
  if (!values || values.length !== count || !values.every((v) => v === null || Buffer.isBuffer(v))) throw malformed('MGET');
  return values;
}

export function bulkOf(reply: Reply, what: string): Buffer {
  if (!Buffer.isBuffer(reply)) throw malformed(what);
  return reply;
}

const EMPTY = new BulkArray(Buffer.alloc(0), 0, 0, 0);

/** An array of bulks in its packed form (an empty array is not packed by the reader). */
export function packedOf(reply: Reply, what: string): BulkArray {
  expectNoError(reply, what);
  if (reply instanceof BulkArray) return reply;
  if (Array.isArray(reply) && reply.length === 0) return EMPTY;
  throw malformed(what);
}

export function bulksOf(reply: Reply, what: string): Buffer[] {
  expectNoError(reply, what);
  const items = bulkItems(reply);
  if (!items) throw malformed(what);
  return items;
}

export function scanPageOf(reply: Reply, what: string): [string, BulkArray] {
  if (!Array.isArray(reply) || reply.length !== 2 || !Buffer.isBuffer(reply[0])) throw malformed(what);
  return [reply[0].toString('latin1'), packedOf(reply[1], what)];
}

export type StreamEntry = [Buffer, Buffer[]];

export function streamEntriesOf(reply: Reply): StreamEntry[] {
  expectNoError(reply, 'XRANGE');
  // An XRANGE reply is never packed as a whole: its entries are arrays (an empty reply is []).
  if (!Array.isArray(reply)) throw malformed('XRANGE');
  return reply.map((entry): StreamEntry => {
    if (!Array.isArray(entry) || entry.length !== 2 || !Buffer.isBuffer(entry[0])) throw malformed('XRANGE');
    return [entry[0], bulksOf(entry[1], 'XRANGE')];
  });
}

/** The smallest id after `id` (portable: Pika may lack exclusive `(` ranges). */
export function nextStreamId(id: string): string {
  const [ms, seq] = id.split('-').map((p) => BigInt(p));
  return seq === 0xffff_ffff_ffff_ffffn ? `${ms + 1n}-0` : `${ms}-${seq + 1n}`;
}

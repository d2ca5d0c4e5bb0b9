/**
 * A stream's state beyond its entries, read from a node and written into the stream's key record
 * after its XADDs, as commands the replica's node replays:
 *
 *   XGROUP CREATE key psp.mkstream 0 MKSTREAM; XGROUP DESTROY key psp.mkstream   (empty stream only)
 *   XSETID key <last-generated-id> ENTRIESADDED <n> MAXDELETEDID <id>
 *   per group:    XGROUP CREATE key <group> <last-delivered-id> [ENTRIESREAD <n>]
 *   per consumer: XGROUP CREATECONSUMER key <group> <consumer>
 *   per pending:  XCLAIM key <group> <consumer> 0 <id> RETRYCOUNT <deliveries> FORCE JUSTID TIME <ms>
 *
 * Without it a replica had no consumer groups: it answered NOGROUP and failed to replay the
 * master's next XREADGROUP or XACK. A pending entry's delivery time travels as a Unix time (TIME:
 * the read's time minus the idle time XPENDING gave, as TTLs travel as PEXPIREAT), so on the
 * replica it keeps growing idle from when the master delivered it, and XAUTOCLAIM / XCLAIM with a
 * min-idle-time reclaim it on schedule after a failover. It depends on the clock of whoever reads,
 * so the proof by content, which digests these same commands read from both nodes, leaves TIME out
 * (content-digest.ts) and compares all the rest; consumers' seen times are not carried.
 *
 * Needs Redis 7.0's stream fields (XINFO STREAM `entries-added`, XSETID ENTRIESADDED): a node
 * without them gets the older rule — a stream with consumer groups fails the build with
 * UNSUPPORTED_DATA, as does a pending entry whose stream entry was deleted (XCLAIM cannot
 * recreate it): never a confirmation without them.
 */
import { SyncProxyError } from '../errors';
import { BulkArray, NodeErrorReply, Reply } from '../resp/reply-reader';
import { ReaderConnection, expectNoError, malformedReply as malformed } from './reader-connection';
import type { RecordSink } from './snapshot-writer';

/** Pending entries read per XPENDING page. */
const PENDING_PAGE = 1000;
const TEMP_GROUP = 'psp.mkstream';
/** The last option of a pending entry's XCLAIM: its delivery time (the proof leaves it out). */
export const XCLAIM_TIME = 'TIME';

interface Group {
  name: Buffer;
  lastDeliveredId: Buffer;
  entriesRead: Buffer | null;
}

/**
 * Writes the state of stream `key` (whose entries, `entries` of them, are already in the record)
 * through `sink`; `begin` opens the record (an empty stream has no XADD to open it). False when
 * the key is gone.
 */
export async function writeStreamState(conn: ReaderConnection, sink: RecordSink, db: number, key: Buffer, entries: number, begin: () => void): Promise<boolean> {
  const [info, groupsReply] = await conn.batch([['XINFO', 'STREAM', key], ['XINFO', 'GROUPS', key]]);
  if (isNoSuchKey(info) || isNoSuchKey(groupsReply)) return entries > 0;
  const stream = fieldsOf(info, 'XINFO STREAM');
  const groups = listOf(groupsReply, 'XINFO GROUPS').map((g): Group => {
    const f = fieldsOf(g, 'XINFO GROUPS');
    return { name: bulk(f, 'name'), lastDeliveredId: bulk(f, 'last-delivered-id'), entriesRead: optional(f, 'entries-read') };
  });
  const entriesAdded = stream.get('entries-added');
  if (entriesAdded === undefined) {
    // No Redis 7.0 stream fields: the entries are copied, the groups could not be.
    if (groups.length > 0) throw unsupported(db, key, `has ${groups.length} consumer group(s), and this node does not give the stream fields (XINFO STREAM entries-added, Redis 7.0) a snapshot needs to carry them`);
    return entries > 0;
  }
  begin();
  if (entries === 0) {
    sink.command(['XGROUP', 'CREATE', key, TEMP_GROUP, '0', 'MKSTREAM']);
    sink.command(['XGROUP', 'DESTROY', key, TEMP_GROUP]);
  }
  sink.command(['XSETID', key, bulk(stream, 'last-generated-id'), 'ENTRIESADDED', text(entriesAdded), 'MAXDELETEDID', bulk(stream, 'max-deleted-entry-id')]);
  for (const group of groups) {
    const create: Array<Buffer | string> = ['XGROUP', 'CREATE', key, group.name, group.lastDeliveredId];
    if (group.entriesRead) create.push('ENTRIESREAD', group.entriesRead);
    sink.command(create);
    const consumers = listOf(await conn.call(['XINFO', 'CONSUMERS', key, group.name]), 'XINFO CONSUMERS');
    for (const c of consumers) sink.command(['XGROUP', 'CREATECONSUMER', key, group.name, bulk(fieldsOf(c, 'XINFO CONSUMERS'), 'name')]);
    await writePending(conn, sink, db, key, group.name);
  }
  return true;
}

/** The group's pending entries, page by page, each checked to still be in the stream. */
async function writePending(conn: ReaderConnection, sink: RecordSink, db: number, key: Buffer, group: Buffer): Promise<void> {
  for (let start = '-'; ; ) {
    const sentAt = Date.now();
    const page = listOf(await conn.call(['XPENDING', key, group, start, '+', String(PENDING_PAGE)]), 'XPENDING');
    // The node measured the idle times somewhere between the send and the reply.
    const readAt = Math.round((sentAt + Date.now()) / 2);
    if (page.length === 0) return;
    const pending = page.map((p) => {
      const parts = Array.isArray(p) ? p : [];
      const [id, consumer, idleMs, deliveries] = parts;
      if (!Buffer.isBuffer(id) || !Buffer.isBuffer(consumer) || typeof idleMs !== 'number' || typeof deliveries !== 'number') throw malformed('XPENDING');
      return { id, consumer, deliveredAt: Math.max(0, readAt - idleMs), deliveries };
    });
    const present = await conn.batch(pending.map((p) => ['XRANGE', key, p.id, p.id]));
    pending.forEach((p, i) => {
      const found = present[i];
      if (!Array.isArray(found) || found.length === 0) {
        throw unsupported(db, key, `group ${JSON.stringify(group.toString())} has pending entry ${p.id.toString()} whose stream entry was deleted; a replica's node cannot recreate it (XCLAIM needs the entry): acknowledge it (XACK) or replicate without the stream`);
      }
      sink.command(['XCLAIM', key, group, p.consumer, '0', p.id, 'RETRYCOUNT', String(p.deliveries), 'FORCE', 'JUSTID', XCLAIM_TIME, String(p.deliveredAt)]);
    });
    if (page.length < PENDING_PAGE) return;
    start = `(${pending[pending.length - 1].id.toString('latin1')}`;
  }
}

function isNoSuchKey(reply: Reply): boolean {
  return reply instanceof NodeErrorReply && /no such key/i.test(reply.message);
}

function listOf(reply: Reply, what: string): Reply[] {
  expectNoError(reply, what);
  if (reply instanceof BulkArray) return reply.items();
  if (!Array.isArray(reply)) throw malformed(what);
  return reply;
}

/** A flat field/value array (RESP2 maps) as a map by field name. */
function fieldsOf(reply: Reply, what: string): Map<string, Reply> {
  const items = listOf(reply, what);
  const fields = new Map<string, Reply>();
  for (let i = 0; i + 1 < items.length; i += 2) {
    const name = items[i];
    if (!Buffer.isBuffer(name) && typeof name !== 'string') throw malformed(what);
    fields.set(name.toString(), items[i + 1]);
  }
  return fields;
}

function bulk(fields: Map<string, Reply>, name: string): Buffer {
  const value = fields.get(name);
  if (Buffer.isBuffer(value)) return value;
  if (typeof value === 'string') return Buffer.from(value);
  throw malformed(`the ${name} field`);
}

function optional(fields: Map<string, Reply>, name: string): Buffer | null {
  const value = fields.get(name);
  if (value === null || value === undefined) return null;
  return typeof value === 'number' ? Buffer.from(String(value)) : bulk(fields, name);
}

function text(value: Reply): string {
  if (typeof value === 'number') return String(value);
  if (Buffer.isBuffer(value) || typeof value === 'string') return value.toString();
  throw malformed('XINFO STREAM entries-added');
}

function unsupported(db: number, key: Buffer, what: string): SyncProxyError {
  return new SyncProxyError('UNSUPPORTED_DATA', `stream key ${JSON.stringify(key.toString('utf8').slice(0, 200))} in db ${db} ${what}`);
}

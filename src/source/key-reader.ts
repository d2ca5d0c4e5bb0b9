/**
 * Reads keys from the node into snapshot records with the commands Pika has (DESIGN.md §6).
 *
 * A batch of keys costs at most three pipelined round trips: one MGET of every key (a string's
 * value, nil for keys of other types) with a PTTL per key; TYPE of the keys MGET had no value
 * for; the first page of each of those (LRANGE 0..PAGE-1; HSCAN / SSCAN / ZSCAN from cursor 0
 * with COUNT PAGE; XRANGE with COUNT PAGE). PTTL is left out in a db the builder proved to hold no
 * key with a TTL (`dbsWithoutExpiries`). Most of the node's work per key is command dispatch, so
 * fewer commands per key is what makes a build faster: a string costs no command of its own. A
 * key whose first page is its whole value (cursor 0, or fewer than PAGE items) is written from
 * that reply; a bigger one is paged on (so a big key is streamed to the writer and never held
 * whole). No length command is needed: a key being read is marked in the copy-on-write gate, so
 * no client write changes it meanwhile.
 *
 * Each reader has its own raw connections (one per db, so concurrent reads never race on SELECT)
 * that do not reconnect: a node that goes away fails the build instead of stalling it.
 */
import type { Logger } from 'pino';
import { SyncProxyError } from '../errors';
import { BulkArray, Reply } from '../resp/reply-reader';
import type { CommandEncoder } from '../resp/command-encoder';
import { BatchReplies, NodeAddress, ReaderConnection, expectNoError } from './reader-connection';
import { bulkOf, expiryOf, mgetValues, nextStreamId, packedOf, scanPageOf, streamEntriesOf, typeOf } from './key-replies';
import type { RecordSink } from './snapshot-writer';
import { writeStreamState } from './stream-state';
import type { KeyType } from './types';

export type { NodeAddress } from './reader-connection';

/** Elements per command in a record, and the page size of reads. */
export const PAGE = 1000;
const PAGE_END = Buffer.from(String(PAGE - 1));
const PAGE_COUNT = Buffer.from(String(PAGE));
const ZERO = Buffer.from('0');

const NAME = {
  SET: Buffer.from('SET'),
  HMSET: Buffer.from('HMSET'),
  RPUSH: Buffer.from('RPUSH'),
  SADD: Buffer.from('SADD'),
  ZADD: Buffer.from('ZADD'),
  XADD: Buffer.from('XADD'),
  PEXPIREAT: Buffer.from('PEXPIREAT'),
  TYPE: Buffer.from('TYPE'),
  PTTL: Buffer.from('PTTL'),
  GET: Buffer.from('GET'),
  MGET: Buffer.from('MGET'),
  LRANGE: Buffer.from('LRANGE'),
  XRANGE: Buffer.from('XRANGE'),
  COUNT: Buffer.from('COUNT'),
};
const SCAN_OF = { hash: 'HSCAN', set: 'SSCAN', zset: 'ZSCAN' } as const;
const SCAN_NAME = { hash: Buffer.from('HSCAN'), set: Buffer.from('SSCAN'), zset: Buffer.from('ZSCAN') } as const;

interface Probe {
  key: Buffer;
  type: KeyType;
  expireAtMs: number;
}

/** Runs `fn` with exclusive use of the snapshot writer (one batch of records at a time). */
export type WithSink = <T>(fn: (sink: RecordSink) => Promise<T> | T) => Promise<T>;

export class KeyReader {
  private conns = new Map<number, Promise<ReaderConnection>>();
  private closed = false;
  /** Keys whose record was written (a key may be counted twice when read twice). */
  keysRead = 0;
  /**
   * Dbs in which no key had a TTL when the build started (set by the builder before any key is
   * read): their probes skip PTTL. A key that gets a TTL later is written after the build started,
   * so the copy-on-write gate reads it before that write, without a TTL, which is its state then.
   */
  dbsWithoutExpiries: ReadonlySet<number> = new Set();
  /**
   * False where the node's XRANGE does not give back the ids XADD was given (Pika 4.0.1, learned
   * by the node profile): a stream there cannot be copied exactly, so meeting one fails the build
   * with UNSUPPORTED_DATA instead of recording a stream with other ids.
   */
  streamsCopyable = true;

  constructor(private readonly node: NodeAddress, private readonly logger: Logger) {}

  /** The reader's connection to `db` (one connect shared by concurrent callers). */
  connection(db: number): Promise<ReaderConnection> {
    if (this.closed) return Promise.reject(new SyncProxyError('SNAPSHOT_BUILD_FAILED', 'key reader closed'));
    let ready = this.conns.get(db);
    if (!ready) {
      ready = ReaderConnection.connect(this.node, db);
      ready.catch((err: unknown) => this.logger.debug({ err: (err as Error).message, db }, 'snapshot reader connection failed'));
      this.conns.set(db, ready);
    }
    return ready;
  }

  /**
   * Reads `keys` of `db` and writes one record per existing key through `withSink`. Resolves with
   * the bytes of the keys' first pages (the caller sizes its batches by them).
   */
  async readKeys(db: number, keys: Buffer[], withSink: WithSink): Promise<number> {
    const conn = await this.connection(db);
    const ttls = !this.dbsWithoutExpiries.has(db);
    // 1. One MGET of every key (a string's value, nil for other types), and PTTL per key in a db with TTLs.
    let enc = conn.commands();
    enc.arrayHeader(1 + keys.length);
    enc.bulk(NAME.MGET);
    for (const k of keys) enc.bulk(k);
    if (ttls) for (const k of keys) encodeKeyCommand(enc, NAME.PTTL, k);
    const sentAt = Date.now();
    const first = await conn.sendEncoded(1 + (ttls ? keys.length : 0));
    const values = mgetValues(first[0], keys.length);
    // The node measured each PTTL somewhere between the send and the last reply: the midpoint
    // keeps the absolute expiry within half the batch's round trip (the reply time alone made
    // every expiry late by the whole round trip, a second on a loaded node).
    const now = Math.round((sentAt + Date.now()) / 2);
    const probes: (Probe | null)[] = new Array(keys.length).fill(null);
    /** Keys MGET had no value for, and their expiry. */
    const others: Array<{ i: number; expireAtMs: number }> = [];
    for (let i = 0; i < keys.length; i++) {
      const expireAtMs = ttls ? expiryOf(first[1 + i], now) : -1;
      if (expireAtMs === null) continue;
      if (values[i] !== null) probes[i] = { key: keys[i], type: 'string', expireAtMs };
      else others.push({ i, expireAtMs });
    }
    // 2. TYPE of the keys MGET had no value for; 3. their first pages.
    let pages: BatchReplies = [];
    if (others.length > 0) {
      enc = conn.commands();
      for (const { i } of others) encodeKeyCommand(enc, NAME.TYPE, keys[i]);
      const types = await conn.sendEncoded(others.length);
      enc = conn.commands();
      let reads = 0;
      others.forEach(({ i, expireAtMs }, j) => {
        const type = typeOf(types[j]);
        if (type === null) return;
        if (type === 'stream' && !this.streamsCopyable) {
          throw new SyncProxyError('UNSUPPORTED_DATA', `stream key ${JSON.stringify(keys[i].toString('utf8').slice(0, 200))} in db ${db}: this node's XRANGE gives back other ids than the stream was written with (Pika 4.0.1), so it cannot be copied exactly; remove or convert the stream, or replicate without it`);
        }
        const probe: Probe = { key: keys[i], type, expireAtMs };
        probes[i] = probe;
        encodeFirstRead(enc, probe);
        reads++;
      });
      pages = await conn.sendEncoded(reads);
    }
    await withSink(async (sink) => {
      let nextPage = 0;
      for (let i = 0; i < keys.length; i++) {
        const p = probes[i];
        if (!p) continue;
        const reply = values[i] !== null ? values[i] : pages[nextPage++];
        if (await this.writeRecord(conn, sink, db, p, reply)) this.keysRead++;
      }
    });
    return (first.bytes ?? 0) + (pages.bytes ?? 0);
  }

  async close(): Promise<void> {
    this.closed = true;
    const conns = [...this.conns.values()];
    this.conns.clear();
    for (const ready of conns) {
      ready.then(
        (c) => c.close(),
        () => undefined,
      );
    }
  }

  /**
   * Writes the record of `p` from its first page `reply`, paging on for a big key. False when the
   * key turned out absent (vanished or expired since the probe): no record then.
   */
  private async writeRecord(conn: ReaderConnection, sink: RecordSink, db: number, p: Probe, reply: Reply): Promise<boolean> {
    const k = p.key;
    expectNoError(reply, `reading a ${p.type}`);
    let begun = false;
    // PSP.KEY goes out with the first element, so a key that vanished leaves no record.
    const begin = (): void => {
      if (!begun) sink.beginKey(db, k, p.type, p.expireAtMs);
      begun = true;
    };
    switch (p.type) {
      case 'string': {
        if (reply === null) return false;
        begin();
        sink.command([NAME.SET, k, bulkOf(reply, 'GET')]);
        break;
      }
      case 'list': {
        let items = packedOf(reply, 'LRANGE');
        for (let start = 0; ; ) {
          if (items.count > 0) {
            begin();
            writePacked(sink, NAME.RPUSH, k, items, 1, false);
          }
          if (items.count < PAGE) break;
          start += PAGE;
          items = packedOf(await conn.call(['LRANGE', k, String(start), String(start + PAGE - 1)]), 'LRANGE');
        }
        break;
      }
      case 'stream': {
        let entries = streamEntriesOf(reply);
        let written = 0;
        for (;;) {
          if (entries.length > 0) begin();
          for (const [id, fields] of entries) {
            const args: Buffer[] = [NAME.XADD, k, id];
            for (const f of fields) args.push(f);
            sink.command(args);
          }
          written += entries.length;
          if (entries.length < PAGE) break;
          const start = nextStreamId(entries[entries.length - 1][0].toString('latin1'));
          entries = streamEntriesOf(await conn.call(['XRANGE', k, start, '+', 'COUNT', PAGE_COUNT]));
        }
        // Its last id, consumer groups and pending entries (stream-state.ts).
        if (!(await writeStreamState(conn, sink, db, k, written, begin))) return false;
        break;
      }
      default: {
        const scan = SCAN_OF[p.type];
        const name = p.type === 'hash' ? NAME.HMSET : p.type === 'set' ? NAME.SADD : NAME.ZADD;
        const width = p.type === 'set' ? 1 : 2;
        let page = reply;
        for (;;) {
          const [cursor, items] = scanPageOf(page, scan);
          if (items.count % width !== 0) throw new SyncProxyError('MALFORMED_RESPONSE', `${scan} answered an odd number of items`);
          if (items.count > 0) {
            begin();
            writePacked(sink, name, k, items, width, p.type === 'zset');
          }
          if (cursor === '0') break;
          page = await conn.call([scan, k, cursor, 'COUNT', PAGE_COUNT]);
          expectNoError(page, scan);
        }
      }
    }
    if (!begun) return false;
    if (p.expireAtMs >= 0) sink.command([NAME.PEXPIREAT, k, String(p.expireAtMs)]);
    return true;
  }
}

function encodeKeyCommand(enc: CommandEncoder, name: Buffer, key: Buffer): void {
  enc.arrayHeader(2);
  enc.bulk(name);
  enc.bulk(key);
}

/** The first read of a key that is not a string: its whole value when small, its first page when big. */
function encodeFirstRead(enc: CommandEncoder, p: Probe): void {
  switch (p.type) {
    case 'string':
      // Only a string MGET had no value for (it cannot change while being read): read it alone.
      encodeKeyCommand(enc, NAME.GET, p.key);
      return;
    case 'list':
      enc.arrayHeader(4);
      enc.bulk(NAME.LRANGE);
      enc.bulk(p.key);
      enc.bulk(ZERO);
      enc.bulk(PAGE_END);
      return;
    case 'stream':
      enc.command([NAME.XRANGE, p.key, '-', '+', 'COUNT', PAGE_COUNT]);
      return;
    default:
      enc.arrayHeader(5);
      enc.bulk(SCAN_NAME[p.type]);
      enc.bulk(p.key);
      enc.bulk(ZERO);
      enc.bulk(NAME.COUNT);
      enc.bulk(PAGE_COUNT);
  }
}

/**
 * `name key` commands of at most PAGE elements (`width` bulks each) from a packed page: copied
 * in one piece when it fits one command and needs no reordering, else element by element.
 */
function writePacked(sink: RecordSink, name: Buffer, key: Buffer, page: BulkArray, width: number, swapPairs: boolean): void {
  if (!swapPairs && page.count <= PAGE * width) {
    sink.encodedElements(name, key, page.raw, page.count);
    return;
  }
  const items = page.items();
  for (let i = 0; i < items.length; i += PAGE * width) sink.elements(name, key, items, i, Math.min(items.length, i + PAGE * width), swapPairs);
}

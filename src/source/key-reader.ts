/**
 * Reads keys from the node into snapshot records with the commands Pika has (DESIGN.md §6):
 * TYPE + PTTL per key, then GET / HGETALL / LRANGE / SMEMBERS / ZRANGE WITHSCORES / XRANGE for
 * small keys, pages (HSCAN, SSCAN, ZSCAN, LRANGE windows, XRANGE with COUNT) for big ones, so a
 * big key is streamed to the writer and never held whole. Keys and values are Buffers.
 *
 * Each reader has its own connections (one per db, so concurrent reads never race on SELECT)
 * that do not reconnect: a node that goes away fails the build instead of stalling it.
 */
import Redis from 'ioredis';
import type { Logger } from 'pino';
import { SyncProxyError } from '../errors';
import type { RecordSink } from './snapshot-writer';
import type { KeyType } from './types';

export interface NodeAddress {
  host: string;
  port: number;
  password?: string;
}

/** Elements per command in a record, and the size up to which a key is read in one command. */
export const PAGE = 1000;
const COMMAND_TIMEOUT_MS = 60_000;
const B = (s: string | number): Buffer => Buffer.from(String(s));

const LENGTH_COMMAND: Record<Exclude<KeyType, 'string'>, string> = { hash: 'HLEN', list: 'LLEN', set: 'SCARD', zset: 'ZCARD', stream: 'XLEN' };
const ADD_COMMAND: Record<Exclude<KeyType, 'string' | 'stream'>, string> = { hash: 'HMSET', list: 'RPUSH', set: 'SADD', zset: 'ZADD' };

interface Probe {
  key: Buffer;
  type: KeyType;
  expireAtMs: number;
}

/** Runs `fn` with exclusive use of the snapshot writer (records are written one at a time). */
export type WithSink = <T>(fn: (sink: RecordSink) => Promise<T>) => Promise<T>;

export class KeyReader {
  private conns = new Map<number, Promise<Redis>>();
  private opened: Redis[] = [];
  private closed = false;
  /** Keys whose record was written (a key may be counted twice when read twice). */
  keysRead = 0;

  constructor(private readonly node: NodeAddress, private readonly logger: Logger) {}

  /** The reader's connection to `db` (one connect shared by concurrent callers). */
  connection(db: number): Promise<Redis> {
    if (this.closed) return Promise.reject(new SyncProxyError('SNAPSHOT_BUILD_FAILED', 'key reader closed'));
    let ready = this.conns.get(db);
    if (!ready) {
      const conn = new Redis({
        host: this.node.host, port: this.node.port, password: this.node.password, db,
        lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableReadyCheck: false,
        enableOfflineQueue: false, commandTimeout: COMMAND_TIMEOUT_MS, connectionName: 'pika-sync-proxy-snapshot',
      });
      conn.on('error', (err) => this.logger.debug({ err: err.message, db }, 'snapshot reader connection error'));
      this.opened.push(conn);
      ready = conn.connect().then(
        () => conn,
        (err: Error) => {
          throw new SyncProxyError('BACKEND_UNAVAILABLE', `snapshot reader cannot connect to the node: ${err.message}`, { cause: err });
        },
      );
      this.conns.set(db, ready);
    }
    return ready;
  }

  /**
   * Reads `keys` of `db` and writes one record per existing key through `withSink`. `onDone` is
   * called for every key once it is settled (written, or absent); keys are settled in order.
   */
  async readKeys(db: number, keys: Buffer[], withSink: WithSink, onDone: (key: Buffer) => void): Promise<void> {
    const conn = await this.connection(db);
    const probes = await this.probe(conn, keys);
    const small = await Promise.all(probes.map((p) => (p ? this.readSmall(conn, p) : null)));
    for (let i = 0; i < keys.length; i++) {
      const p = probes[i];
      const value = small[i];
      if (p && value !== 'absent') {
        await withSink(async (sink) => {
          await sink.beginKey(db, p.key, p.type, p.expireAtMs);
          if (value === 'big') await this.streamBig(conn, p, sink);
          else for (const cmd of value ?? []) await sink.command(cmd);
          if (p.expireAtMs >= 0) await sink.command([B('PEXPIREAT'), p.key, B(p.expireAtMs)]);
        });
        this.keysRead++;
      }
      onDone(keys[i]);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const conn of this.opened) conn.disconnect();
    this.opened = [];
    this.conns.clear();
  }

  /** TYPE + PTTL for every key (pipelined); null for a key that does not exist. */
  private async probe(conn: Redis, keys: Buffer[]): Promise<(Probe | null)[]> {
    const replies = await Promise.all(keys.flatMap((k) => [conn.callBuffer('TYPE', k), conn.callBuffer('PTTL', k)]));
    const now = Date.now();
    return keys.map((key, i) => {
      const typeName = String(replies[2 * i]);
      const pttl = Number(replies[2 * i + 1]);
      if (typeName === 'none' || pttl === -2) return null;
      const type = (typeName === 'streams' ? 'stream' : typeName) as KeyType;
      if (!['string', 'hash', 'list', 'set', 'zset', 'stream'].includes(type)) {
        throw new SyncProxyError('SNAPSHOT_BUILD_FAILED', `key of unsupported type '${typeName}' in the node`);
      }
      // PTTL 0 is "expires now" on Redis and "missing" on Pika: a missing key shows as an empty read.
      return { key, type, expireAtMs: pttl >= 0 ? now + pttl : -1 };
    });
  }

  /** The record's commands for a small key, 'big' for a key to page, 'absent' when it vanished. */
  private async readSmall(conn: Redis, p: Probe): Promise<Buffer[][] | 'big' | 'absent'> {
    const k = p.key;
    if (p.type === 'string') {
      const v = (await conn.callBuffer('GET', k)) as Buffer | null;
      return v === null ? 'absent' : [[B('SET'), k, v]];
    }
    const length = Number(await conn.callBuffer(LENGTH_COMMAND[p.type], k));
    if (length === 0) return 'absent';
    if (length > PAGE) return 'big';
    switch (p.type) {
      case 'hash':
        return chunked('HMSET', k, (await conn.callBuffer('HGETALL', k)) as Buffer[], 2);
      case 'list':
        return chunked('RPUSH', k, (await conn.callBuffer('LRANGE', k, 0, -1)) as Buffer[], 1);
      case 'set':
        return chunked('SADD', k, (await conn.callBuffer('SMEMBERS', k)) as Buffer[], 1);
      case 'zset':
        return chunked('ZADD', k, swapPairs((await conn.callBuffer('ZRANGE', k, 0, -1, 'WITHSCORES')) as Buffer[]), 2);
      case 'stream':
        return xadds(k, (await conn.callBuffer('XRANGE', k, '-', '+')) as StreamEntry[]);
    }
  }

  private async streamBig(conn: Redis, p: Probe, sink: RecordSink): Promise<void> {
    const k = p.key;
    const emit = async (cmds: Buffer[][] | 'absent'): Promise<void> => {
      if (cmds !== 'absent') for (const c of cmds) await sink.command(c);
    };
    if (p.type === 'list') {
      for (let start = 0; ; start += PAGE) {
        const items = (await conn.callBuffer('LRANGE', k, start, start + PAGE - 1)) as Buffer[];
        if (items.length > 0) await emit(chunked('RPUSH', k, items, 1));
        if (items.length < PAGE) return;
      }
    }
    if (p.type === 'stream') {
      let start = '-';
      for (;;) {
        const entries = (await conn.callBuffer('XRANGE', k, start, '+', 'COUNT', PAGE)) as StreamEntry[];
        if (entries.length === 0) return;
        await emit(entries.map(([id, fields]) => [B('XADD'), k, id, ...fields]));
        if (entries.length < PAGE) return;
        start = nextStreamId(entries[entries.length - 1][0].toString());
      }
    }
    const scan = p.type === 'hash' ? 'HSCAN' : p.type === 'set' ? 'SSCAN' : 'ZSCAN';
    const addCommand = ADD_COMMAND[p.type as 'hash' | 'set' | 'zset'];
    let cursor = '0';
    do {
      const [next, items] = (await conn.callBuffer(scan, k, cursor, 'COUNT', PAGE)) as [Buffer, Buffer[]];
      cursor = next.toString();
      const args = p.type === 'zset' ? swapPairs(items) : items;
      if (args.length > 0) await emit(chunked(addCommand, k, args, p.type === 'set' ? 1 : 2));
    } while (cursor !== '0');
  }
}

type StreamEntry = [Buffer, Buffer[]];

/** `name key a1 a2 ...` commands of at most PAGE elements (an element is `width` arguments). */
function chunked(name: string, key: Buffer, flat: Buffer[], width: number): Buffer[][] | 'absent' {
  if (flat.length === 0) return 'absent';
  const out: Buffer[][] = [];
  for (let i = 0; i < flat.length; i += PAGE * width) out.push([B(name), key, ...flat.slice(i, i + PAGE * width)]);
  return out;
}

/** ZRANGE/ZSCAN give member, score; ZADD wants score, member. */
function swapPairs(items: Buffer[]): Buffer[] {
  const out: Buffer[] = new Array(items.length);
  for (let i = 0; i + 1 < items.length; i += 2) {
    out[i] = items[i + 1];
    out[i + 1] = items[i];
  }
  return out;
}

function xadds(key: Buffer, entries: StreamEntry[]): Buffer[][] | 'absent' {
  if (entries.length === 0) return 'absent';
  return entries.map(([id, fields]) => [B('XADD'), key, id, ...fields]);
}

/** The smallest id after `id` (portable: Pika may lack exclusive `(` ranges). */
export function nextStreamId(id: string): string {
  const [ms, seq] = id.split('-').map((p) => BigInt(p));
  return seq === 0xffff_ffff_ffff_ffffn ? `${ms + 1n}-0` : `${ms}-${seq + 1n}`;
}

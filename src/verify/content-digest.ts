/**
 * Digests of a dataset's content per key-hash range (pure: no I/O), for the proof by content: the
 * replica computes one from the snapshot it loaded and one from its node, and a sync is confirmed
 * only when they agree (./verify-load.ts). The same records feed both sides: the snapshot file's
 * commands (SET, HMSET, RPUSH, SADD, ZADD, XADD) and what src/source/key-reader.ts reads from a
 * node, through the RecordSink interface the snapshot writer also implements.
 *
 * A key's digest covers its db, key, type, whether it has a TTL, and its value: two 32-bit lanes
 * (CRC32C and CRC32 from @node-rs/crc32, native) of the key and of each element, summed mod 2^32.
 * Summing makes hash, set and zset digests independent of the order a node returns their
 * elements in; list and stream elements are hashed with their index, so order counts there. A
 * range sums the digests of its keys. The expiry itself is compared with a tolerance (the replica
 * applies it later than the master by the load's latency): as a per-range sum, and key by key when
 * a range is examined (ranges that differ are examined key by key: ./range-compare.ts).
 *
 * Keys whose expiry is at or before `cutoffMs` are left out on both sides: they may have expired.
 */
import { crc32, crc32c } from '@node-rs/crc32';
import { isPexpireat } from '../backend/node-profile';
import { BulkArray } from '../resp/reply-reader';
import type { RecordSink } from '../source/snapshot-writer';
import type { KeyType } from '../source/types';
import { XCLAIM_TIME } from '../source/stream-state';

/** Key-hash ranges compared separately (a power of two). */
export const RANGES = 1024;

export interface KeyEntry {
  db: number;
  key: Buffer;
  type: KeyType;
  expireAtMs: number;
  a: number;
  b: number;
}

/** The aggregate of one range: compared exactly, except `expirySumS` (with a tolerance). */
export interface RangeDigest {
  keys: number;
  a: number;
  b: number;
  volatile: number;
  /** Sum of the expiries of the range's keys with a TTL, in seconds. */
  expirySumS: number;
}

const TYPE_CODE: Record<KeyType, number> = { string: 1, hash: 2, list: 3, set: 4, zset: 5, stream: 6 };
const GOLDEN = 0x9e3779b1;

export class ContentDigest implements RecordSink {
  readonly keys = new Uint32Array(RANGES);
  readonly laneA = new Uint32Array(RANGES);
  readonly laneB = new Uint32Array(RANGES);
  readonly volatile = new Uint32Array(RANGES);
  readonly expirySumS = new Float64Array(RANGES);
  /** Keys of the ranges in `collect`, for a key-by-key comparison. */
  readonly collected: KeyEntry[] = [];
  private current?: { db: number; key: Buffer; type: KeyType; expireAtMs: number; range: number; seedA: number; seedB: number; a: number; b: number; index: number };

  /** `collect`: ranges whose keys are kept one by one (none by default). */
  constructor(readonly cutoffMs: number, private readonly collect: ReadonlySet<number> = new Set()) {}

  /** Takes another side's aggregates (and collected keys) as computed elsewhere (a master's answer). */
  absorb(ranges: ReadonlyArray<RangeDigest & { range: number }>, keys: readonly KeyEntry[] = []): void {
    for (const d of ranges) {
      const r = d.range;
      this.keys[r] = d.keys;
      this.laneA[r] = d.a;
      this.laneB[r] = d.b;
      this.volatile[r] = d.volatile;
      this.expirySumS[r] = d.expirySumS;
    }
    this.collected.push(...keys);
  }

  beginKey(db: number, key: Buffer, type: KeyType, expireAtMs: number): void {
    this.endKey();
    const header = TYPE_CODE[type] | (expireAtMs >= 0 ? 0x10 : 0) | (db << 8);
    const seedA = crc32c(key, header);
    const seedB = crc32(key, header);
    this.current = { db, key: Buffer.from(key), type, expireAtMs, range: rangeOf(db, key), seedA, seedB, a: seedA, b: seedB, index: 0 };
  }

  command(args: ReadonlyArray<Buffer | string>): void {
    // The expiry came with beginKey; the record's PEXPIREAT repeats it.
    if (isPexpireat(args[0])) return;
    const items = withoutDeliveryTime(args).slice(2).map((x) => (typeof x === 'string' ? Buffer.from(x) : x));
    this.add(items, false);
  }

  elements(_name: Buffer, _key: Buffer, items: readonly Buffer[], from: number, to: number, swapPairs: boolean): void {
    // swapPairs: a ZSCAN page (member, score) about to be written as ZADD (score, member).
    this.add(items.slice(from, to), swapPairs);
  }

  encodedElements(_name: Buffer, _key: Buffer, encoded: Buffer, count: number): void {
    this.add(new BulkArray(encoded, 0, encoded.length, count).items(), false);
  }

  /** Closes the last key; call once after the last record. */
  finish(): void {
    this.endKey();
  }

  /** The aggregate of range `r`. */
  range(r: number): RangeDigest {
    return { keys: this.keys[r], a: this.laneA[r], b: this.laneB[r], volatile: this.volatile[r], expirySumS: this.expirySumS[r] };
  }

  /** Keys counted (expired ones left out). */
  get totalKeys(): number {
    return this.keys.reduce((n, k) => n + k, 0);
  }

  /** A record's command arguments after the key: its elements in the command's own layout. */
  private add(items: readonly Buffer[], memberFirst: boolean): void {
    const k = this.current;
    if (!k || items.length === 0) return;
    switch (k.type) {
      case 'string':
        k.a = (k.a + crc32c(items[0], k.seedA)) >>> 0;
        k.b = (k.b + crc32(items[0], k.seedB)) >>> 0;
        return;
      case 'set':
        for (const m of items) this.element(k, m, k.seedA, k.seedB);
        return;
      case 'hash':
        for (let i = 0; i + 1 < items.length; i += 2) this.element(k, items[i + 1], crc32c(items[i], k.seedA), crc32(items[i], k.seedB));
        return;
      case 'zset':
        for (let i = 0; i + 1 < items.length; i += 2) {
          const [member, score] = memberFirst ? [items[i], items[i + 1]] : [items[i + 1], items[i]];
          this.element(k, canonicalScore(score), crc32c(member, k.seedA), crc32(member, k.seedB));
        }
        return;
      case 'list':
        for (const e of items) {
          const salt = Math.imul(++k.index, GOLDEN) >>> 0;
          this.element(k, e, (k.seedA ^ salt) >>> 0, (k.seedB ^ salt) >>> 0);
        }
        return;
      case 'stream': {
        // One XADD: id, then field/value pairs; the entry is hashed whole, with its index.
        const salt = Math.imul(++k.index, GOLDEN) >>> 0;
        let a = (k.seedA ^ salt) >>> 0;
        let b = (k.seedB ^ salt) >>> 0;
        for (const part of items) {
          a = crc32c(part, a);
          b = crc32(part, b);
        }
        k.a = (k.a + a) >>> 0;
        k.b = (k.b + b) >>> 0;
      }
    }
  }

  private element(k: NonNullable<ContentDigest['current']>, value: Buffer, seedA: number, seedB: number): void {
    k.a = (k.a + crc32c(value, seedA)) >>> 0;
    k.b = (k.b + crc32(value, seedB)) >>> 0;
  }

  private endKey(): void {
    const k = this.current;
    this.current = undefined;
    if (!k || (k.expireAtMs >= 0 && k.expireAtMs <= this.cutoffMs)) return;
    const r = k.range;
    this.keys[r]++;
    this.laneA[r] = (this.laneA[r] + k.a) >>> 0;
    this.laneB[r] = (this.laneB[r] + k.b) >>> 0;
    if (k.expireAtMs >= 0) {
      this.volatile[r]++;
      this.expirySumS[r] += k.expireAtMs / 1000;
    }
    if (this.collect.has(r)) this.collected.push({ db: k.db, key: k.key, type: k.type, expireAtMs: k.expireAtMs, a: k.a, b: k.b });
  }
}

/** The range of a key (by db and bytes). */
export function rangeOf(db: number, key: Buffer): number {
  return crc32c(key, db) & (RANGES - 1);
}

/** A score as one spelling for every node: Redis writes "1.5", "inf"; another node may not. */
function canonicalScore(score: Buffer): Buffer {
  const text = score.toString('latin1');
  const n = /^[+-]?inf(inity)?$/i.test(text) ? (text.startsWith('-') ? -Infinity : Infinity) : Number(text);
  return Buffer.from(Number.isNaN(n) ? text : String(n));
}

/**
 * A pending stream entry's XCLAIM without its trailing `TIME <ms>` (stream-state.ts): the delivery
 * time is the reader's clock minus the node's idle time, different at every read of the same state.
 */
function withoutDeliveryTime(args: ReadonlyArray<Buffer | string>): ReadonlyArray<Buffer | string> {
  const n = args.length;
  // Cheap first (this runs for every record command): a 4-byte next-to-last argument.
  if (n < 2 || args[n - 2].length !== XCLAIM_TIME.length || String(args[n - 2]) !== XCLAIM_TIME || String(args[0]).toUpperCase() !== 'XCLAIM') return args;
  return args.slice(0, n - 2);
}

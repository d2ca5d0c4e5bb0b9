/**
 * The proof by content in isolation (pure code): digests agree exactly when the content agrees,
 * whatever order a node returns unordered elements in; differences are named key by key; keys
 * that expire around the check are not differences. And the expiry form a node is sent.
 */
import { expect } from 'chai';
import { NodeProfile, SAFE_PROFILE, toNodeForm } from '../src/backend/node-profile';
import type { KeyType } from '../src/source/types';
import { ContentDigest, RANGES } from '../src/verify/content-digest';
import { DatasetSide, compareContent } from '../src/verify/verify-content';

interface Rec {
  db?: number;
  key: string;
  type: KeyType;
  ttlMs?: number;
  cmds: string[][];
}

const b = (s: string): Buffer => Buffer.from(s);
const T0 = Date.now() + 3_600_000;

function feed(digest: ContentDigest, records: Rec[]): void {
  for (const r of records) {
    digest.beginKey(r.db ?? 0, b(r.key), r.type, r.ttlMs === undefined ? -1 : r.ttlMs);
    for (const c of r.cmds) digest.command(c.map(b));
  }
  digest.finish();
}

function side(records: Rec[]): DatasetSide {
  return async (digest) => feed(digest, records);
}

function ranges(records: Rec[]): string {
  const d = new ContentDigest(0);
  feed(d, records);
  return JSON.stringify(Array.from({ length: RANGES }, (_, r) => d.range(r)));
}

const DATA: Rec[] = [
  { key: 's', type: 'string', cmds: [['SET', 's', 'v']] },
  { key: 'h', type: 'hash', cmds: [['HMSET', 'h', 'f1', 'a', 'f2', 'b']] },
  { key: 'set', type: 'set', cmds: [['SADD', 'set', 'x', 'y', 'z']] },
  { key: 'z', type: 'zset', cmds: [['ZADD', 'z', '1.5', 'm1', '2', 'm2']] },
  { key: 'l', type: 'list', cmds: [['RPUSH', 'l', 'a', 'b', 'c']] },
  { key: 't', type: 'string', ttlMs: T0, cmds: [['SET', 't', 'v'], ['PEXPIREAT', 't', String(T0)]] },
];

describe('content digest (proof by content)', () => {
  it('equal content gives equal digests, in any element order and page split of hashes, sets and zsets', () => {
    const reordered: Rec[] = [
      DATA[5], DATA[0],
      { key: 'h', type: 'hash', cmds: [['HMSET', 'h', 'f2', 'b'], ['HMSET', 'h', 'f1', 'a']] },
      { key: 'set', type: 'set', cmds: [['SADD', 'set', 'z', 'x'], ['SADD', 'set', 'y']] },
      { key: 'z', type: 'zset', cmds: [['ZADD', 'z', '2.0', 'm2', '1.50', 'm1']] },
      { key: 'l', type: 'list', cmds: [['RPUSH', 'l', 'a'], ['RPUSH', 'l', 'b', 'c']] },
    ];
    expect(ranges(reordered)).to.equal(ranges(DATA));
  });

  it('a changed value, list order, type, db or TTL presence changes the digest', () => {
    const base = ranges(DATA);
    const variants: Rec[][] = [
      DATA.map((r) => (r.key === 's' ? { ...r, cmds: [['SET', 's', 'w']] } : r)),
      DATA.map((r) => (r.key === 'l' ? { ...r, cmds: [['RPUSH', 'l', 'b', 'a', 'c']] } : r)),
      DATA.map((r) => (r.key === 'set' ? { ...r, type: 'list' as KeyType } : r)),
      DATA.map((r) => (r.key === 'h' ? { ...r, db: 1 } : r)),
      DATA.map((r) => (r.key === 's' ? { ...r, ttlMs: T0 } : r)),
      DATA.filter((r) => r.key !== 't'),
    ];
    for (const v of variants) expect(ranges(v)).to.not.equal(base);
  });

  it("a pending stream entry's delivery time (XCLAIM … TIME) is no difference; its owner and delivery count are", () => {
    const stream = (claim: string[]): Rec[] => [...DATA, { key: 'x', type: 'stream', cmds: [['XADD', 'x', '1-1', 'f', 'v'], ['XGROUP', 'CREATE', 'x', 'g', '1-1'], claim] }];
    const claim = (consumer: string, deliveries: string, time: string): string[] => ['XCLAIM', 'x', 'g', consumer, '0', '1-1', 'RETRYCOUNT', deliveries, 'FORCE', 'JUSTID', 'TIME', time];
    const base = ranges(stream(claim('alice', '2', '1700000000000')));
    expect(ranges(stream(claim('alice', '2', '1700000000517')))).to.equal(base);
    expect(ranges(stream(claim('bob', '2', '1700000000000')))).to.not.equal(base);
    expect(ranges(stream(claim('alice', '3', '1700000000000')))).to.not.equal(base);
  });

  it('names each differing key: missing, value, TTL lost, TTL moved, unexpected', async () => {
    const node: Rec[] = [
      { key: 's', type: 'string', cmds: [['SET', 's', 'other']] },
      DATA[1], DATA[2], DATA[3],
      { key: 't', type: 'string', cmds: [['SET', 't', 'v']] },
      { key: 'extra', type: 'string', cmds: [['SET', 'extra', '1']] },
    ];
    const report = await compareContent(side(DATA), side(node));
    const problems = Object.fromEntries(report.differences.map((d) => [d.key, d.problem]));
    expect(report.differingKeys).to.equal(4);
    expect(problems.s).to.match(/value differs/);
    expect(problems.l).to.match(/missing on the node/);
    expect(problems.t).to.match(/no TTL on the node/);
    expect(problems.extra).to.match(/not expected/);

    const moved = await compareContent(side(DATA), side(DATA.map((r) => (r.key === 't' ? { ...r, ttlMs: T0 + 5000 } : r))));
    expect(moved.differences.map((d) => d.problem)).to.deep.equal([`expires ${new Date(T0 + 5000).toISOString()} on the node, ${new Date(T0).toISOString()} expected`]);
  });

  it('equal datasets: no differing range; expired keys and an expiry a few ms later are no differences', async () => {
    const past = Date.now() - 10;
    const reference = [...DATA, { key: 'gone', type: 'string' as KeyType, ttlMs: past, cmds: [['SET', 'gone', 'v']] }];
    const node = DATA.map((r) => (r.key === 't' ? { ...r, ttlMs: T0 + 40 } : r));
    const report = await compareContent(side(reference), side(node));
    expect(report).to.include({ differingKeys: 0, differingRanges: 0, keys: DATA.length });
  });
});

describe('node profile: the expiry form a node is sent', () => {
  const pika: NodeProfile = { ...SAFE_PROFILE, expiry: 'pexpire' };
  const redis: NodeProfile = { ...SAFE_PROFILE, expiry: 'pexpireat' };

  it('PEXPIREAT becomes PEXPIRE of the time remaining where PEXPIREAT is not honoured', () => {
    const now = 1_000_000;
    expect(toNodeForm([b('PEXPIREAT'), b('k'), b('1005000')], pika, now).map(String)).to.deep.equal(['PEXPIRE', 'k', '5000']);
    expect(toNodeForm([b('pexpireat'), b('k'), b('999000')], pika, now).map(String)).to.deep.equal(['PEXPIRE', 'k', '-1000']);
    expect(toNodeForm([b('PEXPIREAT'), b('k'), b('1005000')], redis, now).map(String)).to.deep.equal(['PEXPIREAT', 'k', '1005000']);
    expect(toNodeForm([b('SET'), b('k'), b('v')], pika, now).map(String)).to.deep.equal(['SET', 'k', 'v']);
  });
});

/**
 * Loads through several load lanes for test/replication-loader.test.ts, on redis-server and on
 * Pika alike: a snapshot whose keys need their commands in order (a big list over several RPUSH
 * and files, expiries after the key's last part), what the node shows while the lanes are open,
 * and the proof by content the replica itself runs (src/verify) against the snapshot files.
 */
import { silentLogger } from '../src/logger';
import { LoadResult, SnapshotLoader } from '../src/replication/loader';
import type { NodeAddress } from '../src/replication/node-pipeline';
import type { Manifest } from '../src/source/types';
import { digestNode, digestSnapshotFiles } from '../src/verify/dataset-readers';
import { ContentReport, compareContent } from '../src/verify/verify-content';
import type { TestRecord } from './replication-fixture';

/** What the test read from the node while the load's lanes were open (before the counting). */
export interface DuringLoad {
  loadConnections: number;
  /** Load connections whose last command was a write (-1: not known on this node). */
  writers: number;
}

export interface LaneLoadObserved {
  result: LoadResult;
  during: DuringLoad;
  content: ContentReport;
  expectedKeys: number;
}

/**
 * Per db: plain strings, strings with a TTL, hashes of three HMSETs (every third with a TTL), three
 * lists of 900 elements over nine RPUSHes, two sets of 2,000 members, and a zset of 1,500 members
 * over three ZADDs with a TTL: the big ones span the 16 KiB files of the tests (PSP.PART).
 */
export function laneLoadRecords(dbs: readonly number[]): TestRecord[] {
  const future = String(Date.now() + 3_600_000 + 60_000);
  const records: TestRecord[] = [];
  for (const db of dbs) {
    for (let i = 0; i < 300; i++) records.push({ db, key: `s-${i}`, type: 'string', commands: [['SET', `s-${i}`, `value-${i}`]] });
    for (let i = 0; i < 60; i++) records.push({ db, key: `ttl-${i}`, type: 'string', expireAtMs: Number(future), commands: [['SET', `ttl-${i}`, `t${i}`], ['PEXPIREAT', `ttl-${i}`, future]] });
    for (let i = 0; i < 40; i++) {
      const key = `hash-${i}`;
      const commands = [0, 1, 2].map((part) => ['HMSET', key, `f${part}a`, `v${i}`, `f${part}b`, `w${i}`]);
      if (i % 3 === 0) commands.push(['PEXPIREAT', key, future]);
      records.push({ db, key, type: 'hash', expireAtMs: i % 3 === 0 ? Number(future) : undefined, commands });
    }
    for (let j = 0; j < 3; j++) {
      const key = `list-big-${j}`;
      const commands = Array.from({ length: 9 }, (_, part) => ['RPUSH', key, ...Array.from({ length: 100 }, (_, e) => `e${part * 100 + e}`)]);
      records.push({ db, key, type: 'list', commands });
    }
    for (let j = 0; j < 2; j++) {
      const key = `set-big-${j}`;
      const members = Array.from({ length: 2000 }, (_, m) => `member-${j}-${m}`);
      records.push({ db, key, type: 'set', commands: [['SADD', key, ...members.slice(0, 1000)], ['SADD', key, ...members.slice(1000)]] });
    }
    const zkey = 'zset-big-ttl';
    const zadds = [0, 1, 2].map((part) => ['ZADD', zkey, ...Array.from({ length: 500 }, (_, m) => [String(part * 500 + m), `z-${part * 500 + m}`]).flat()]);
    records.push({ db, key: zkey, type: 'zset', expireAtMs: Number(future), commands: [...zadds, ['PEXPIREAT', zkey, future]] });
  }
  return records;
}

/**
 * Loads `manifest` (files in `dir`/<snapshot id>) through `connections` lanes (0 = auto), calls
 * `observe` while every file is loaded and the lanes are still open, then finishes (counts) and
 * compares the node's content with the snapshot files, as the replica does before it confirms.
 */
export async function loadThroughLanes(node: NodeAddress, dir: string, manifest: Manifest, connections: number, observe: () => Promise<DuringLoad>): Promise<LaneLoadObserved> {
  const signal = new AbortController().signal;
  const logger = silentLogger();
  const files = manifest.files.map((f) => ({ name: f.name, path: `${dir}/${manifest.snapshotId}/${f.name}` }));
  const loader = await SnapshotLoader.connect({ node, logger, signal, connections });
  let result: LoadResult;
  let during: DuringLoad;
  try {
    await loader.begin(manifest);
    for (const file of files) await loader.loadFile(file, signal);
    await loader.drain();
    during = await observe();
    result = await loader.finish();
  } finally {
    loader.close();
  }
  const dbs = Array.from({ length: Math.max(1, result.profile.databases) }, (_, i) => i);
  const content = await compareContent(
    (digest) => digestSnapshotFiles(files, digest, signal),
    (digest, onlyRanges) => digestNode(node, dbs, digest, logger, signal, onlyRanges),
  );
  const expectedKeys = manifest.dbs.reduce((sum, d) => sum + d.records, 0);
  return { result, during, content, expectedKeys };
}

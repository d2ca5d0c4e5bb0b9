/**
 * End-to-end exactness of the master side (DESIGN.md invariant 5), through the REAL proxy:
 * base data of every type in several dbs (with TTLs and big keys) is written through the proxy,
 * adversarial writers keep writing while a snapshot is built (GetMeta on the sync port), the
 * dataset is rebuilt on a fresh node from the snapshot files (GetChunk) and the write log
 * (StreamLog from logOffset + 1), and both nodes are compared key by key.
 *
 * Runs on every node kind (NODE_KINDS: real redis-server, real Pika 4.0.1: db 0 only, no streams,
 * no RENAME/LMOVE/SET PXAT…) and a Pika-profile redis-server (no RENAME/LMOVE in the mix there).
 */
import { expect } from 'chai';
import Redis from 'ioredis';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { encodeArgs } from '../src/resp/request-parser';
import type { Manifest } from '../src/source/types';
import { SyncClient } from '../src/sync/sync-client';
import { BASE_DBS, WriterStats, loadBaseData, runWriter } from './helpers/adversarial-writers';
import { diffNodes } from './helpers/dataset-diff';
import { PipelinedNode } from './helpers/pipelined-node';
import { TestProxy, startTestProxy } from './helpers/proxy-fixture';
import { NODE_KINDS, NodeKind, TestNode, dataDbs, startNode } from './helpers/nodes';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';
import { TEST_REPLICA, loadSnapshotFiles, replayLog } from './helpers/snapshot-replay';

const WRITERS = 5;
const MAX_OPS_PER_WRITER = 40_000;
/** Writers keep going this long after the manifest is ready (writes after the snapshot). */
const WRITE_AFTER_MANIFEST_MS = 700;
const TTL_TOLERANCE_MS = 2000;
/** Node semantics the random mix runs into; anything else (e.g. a proxy error) fails the test. */
const EXPECTED_ERRORS = [/WRONGTYPE/, /no such key/, /index out of range/, /is not an integer/];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function buildState(probe: RespClient): Promise<{ state: string; db?: number }> {
  const info = await probe.text('INFO', 'proxy');
  const line = /snapshot_build:(.*)\r\n/.exec(info)?.[1] ?? '{}';
  return JSON.parse(line) as { state: string; db?: number };
}

async function lastLogOffset(probe: RespClient): Promise<number> {
  const info = await probe.text('INFO', 'proxy');
  return Number(/write_log_last_offset:(\d+)/.exec(info)?.[1]);
}

/** GetMeta, polling while the master answers SNAPSHOT_BUILDING. */
async function fetchManifest(client: SyncClient): Promise<Manifest & { masterOffset: number }> {
  for (let attempt = 0; attempt < 120; attempt++) {
    try {
      return await client.getMeta({ waitMs: 500, replica: TEST_REPLICA });
    } catch (err) {
      if (!(err instanceof SyncProxyError) || err.code !== 'SNAPSHOT_BUILDING') throw err;
    }
  }
  throw new Error('the snapshot build did not finish in time');
}

function unexpectedErrors(all: WriterStats[]): string[] {
  const out: string[] = [];
  for (const s of all) for (const [text, n] of s.errors) if (!EXPECTED_ERRORS.some((re) => re.test(text))) out.push(`${n}x ${text}`);
  return out;
}

/** The node kind (real redis-server, its Pika profile, real Pika) and what it allows. */
interface Variant {
  kind: NodeKind;
  pikaProfile: boolean;
  /** --node-connections (default: auto, 8 lanes on Pika, 1 on redis-server). */
  lanes?: number;
}

function scenario({ kind, pikaProfile, lanes }: Variant): void {
  let master: TestNode | undefined;
  let rebuilt: TestNode | undefined;
  let proxy: TestProxy | undefined;
  let sync: SyncClient | undefined;
  const clients: { disconnect(): void }[] = [];
  const probes: RespClient[] = [];

  afterEach(async () => {
    for (const c of clients) c.disconnect();
    for (const p of probes) p.close();
    sync?.close();
    await proxy?.stop();
    await master?.stop();
    await rebuilt?.stop();
  });

  it('snapshot + write log rebuild the node exactly while clients keep writing', async function () {
    this.timeout(120_000);
    master = await startNode(kind, { pikaProfile });
    rebuilt = await startNode(kind, { pikaProfile });
    const pika = kind === 'pika';
    // Pika: one db (the writers never SELECT another), no streams (the proxy refuses to copy them).
    const dbs = pika ? dataDbs('pika') : BASE_DBS;
    proxy = await startTestProxy(master, ['--snapshot-file-size', '512kb', ...(lanes ? ['--node-connections', String(lanes)] : [])]);
    const probe = await RespClient.connect(proxy.port);
    probes.push(probe);
    sync = new SyncClient({ host: '127.0.0.1', port: proxy.syncPort, rpcTimeoutMs: 30_000, logger: silentLogger() });

    // 1. Base data through the proxy.
    // Pika: one db, so 12k strings there for a build as long as redis's three dbs.
    const baseKeys = await loadBaseData(proxy.port, dbs, !pika, pika ? 12_000 : 3000);
    expect(baseKeys).to.be.greaterThan(pika ? 16_000 : 19_000);

    // 2. Adversarial writers.
    let stop = false;
    const seed = Date.now() % 100_000;
    const writers = Array.from({ length: WRITERS }, (_, i) =>
      runWriter({ port: proxy!.port, seed: seed + i, maxOps: MAX_OPS_PER_WRITER, redisOnly: kind === 'redis' && !pikaProfile, dbs, streams: !pika, shouldStop: () => stop }),
    );
    const writersDone = Promise.all(writers);
    writersDone.catch(() => undefined);
    await sleep(200);

    // 3. A snapshot build while they write; FLUSHDB of db 5 once, while the build scans (Pika has
    //    only db 0, where a FLUSHDB would leave little to compare: a DEL of 500 base keys instead).
    const manifestPromise = fetchManifest(sync);
    manifestPromise.catch(() => undefined);
    let flushedMidBuild = false;
    let seenBuild = false;
    for (let i = 0; i < 5000 && !flushedMidBuild; i++) {
      const status = await buildState(probe);
      if (status.state !== 'idle') seenBuild = true;
      if (status.state === 'scanning') {
        const flusher = await RespClient.connect(proxy.port);
        probes.push(flusher);
        if (pika) {
          expect(await flusher.text('DEL', ...Array.from({ length: 500 }, (_, j) => `str:${2000 + j}`))).to.match(/^:\d+\r\n$/);
        } else {
          expect(await flusher.text('SELECT', '5')).to.equal('+OK\r\n');
          expect(await flusher.text('FLUSHDB')).to.equal('+OK\r\n');
        }
        flushedMidBuild = true;
      } else if (status.state === 'idle' && seenBuild) break; // finished before we saw it scanning
      else await sleep(2);
    }
    const manifest = await manifestPromise;
    expect(flushedMidBuild, 'FLUSHDB of db 5 (Pika: a DEL) was sent while the build was scanning').to.equal(true);
    await sleep(WRITE_AFTER_MANIFEST_MS);
    stop = true;
    const stats = await writersDone;
    expect(await probe.text('PING')).to.equal('+PONG\r\n');
    const finalOffset = await lastLogOffset(probe);

    const ops = stats.reduce((s, w) => s + w.ops, 0);
    expect(unexpectedErrors(stats), 'error replies other than node semantics').to.deep.equal([]);
    // The scenario is only meaningful when writes landed during the build and after it. (A build
    // is 0.3-1 s; on a loaded 2-core machine one CI run saw 47 entries during a Pika build.)
    expect(manifest.masterOffset - manifest.logOffset, 'log entries written during the build').to.be.greaterThan(20);
    expect(finalOffset - manifest.masterOffset, 'log entries written after the manifest').to.be.greaterThan(50);
    expect(manifest.files.length, 'several snapshot files').to.be.greaterThan(1);

    // 4. Rebuild on a fresh node from the sync service only.
    const target = await PipelinedNode.connect(rebuilt.port);
    clients.push({ disconnect: () => target.close() });
    // Pika deletes a key on PEXPIREAT: expiries reach it as PEXPIRE of the time left (as the loader does).
    const expiry = pika ? 'pexpire' : 'pexpireat';
    const records = await loadSnapshotFiles(sync, manifest, target, expiry);
    for (const { db, records: n } of manifest.dbs) expect(records.get(db) ?? 0, `records of db ${db}`).to.equal(n);
    const replay = await replayLog(sync, manifest, target, finalOffset, expiry);
    expect(replay.applied).to.equal(finalOffset);
    expect(replay.heartbeatOffset).to.equal(finalOffset);

    // 5. Key by key in every db.
    const a = master.client();
    const b = rebuilt.client();
    clients.push(a, b);
    const { diffs, keysCompared } = await diffNodes(a, b, pika ? dataDbs('pika') : Array.from({ length: 16 }, (_, i) => i), TTL_TOLERANCE_MS);
    const summary =
      `${diffs.length} differing key(s) of ${keysCompared} (seed ${seed}, ${ops} writer ops, snapshot at offset ${manifest.logOffset}, ` +
      `manifest at ${manifest.masterOffset}, final ${finalOffset}):\n  ${diffs.slice(0, 40).join('\n  ')}`;
    expect(diffs, summary).to.deep.equal([]);
    // redis: db 5 was flushed mid-build; dbs 0 and 2 keep ~13k keys. Pika: db 0 keeps ~16k.
    expect(keysCompared).to.be.greaterThan(12_000);
    // Base data dbs are all in the snapshot.
    for (const db of dbs.filter((d) => d !== 5)) expect(records.get(db) ?? 0, `records of db ${db}`).to.be.greaterThan(5000);
  });
}

/**
 * Two deterministic cases behind failures the scenario found (SELECT inside MULTI). redis-server
 * only: they need a second database, and Pika has one (`SELECT 2` fails).
 */
function selectInsideMulti(): void {
  let master: RedisServer | undefined;
  let rebuilt: RedisServer | undefined;
  let proxy: TestProxy | undefined;
  let sync: SyncClient | undefined;
  const closers: (() => void)[] = [];

  afterEach(async () => {
    for (const c of closers) c();
    sync?.close();
    await proxy?.stop();
    await master?.stop();
    await rebuilt?.stop();
  });

  it("another client's write right after a transaction that SELECTs stays in its own db", async () => {
    master = await RedisServer.start();
    proxy = await startTestProxy(master);
    const a = await RespClient.connect(proxy.port);
    const b = await RespClient.connect(proxy.port);
    closers.push(() => a.close(), () => b.close());
    expect(await b.text('PING')).to.equal('+PONG\r\n');
    // A's transaction and B's write are dispatched before EXEC's reply comes back.
    a.send(Buffer.concat([['MULTI'], ['SELECT', '2'], ['SET', 'tx:key', 'a'], ['EXEC']].map((c) => encodeArgs(c))));
    b.send(encodeArgs(['SET', 'plain:key', 'b']));
    for (let i = 0; i < 4; i++) await a.read();
    expect((await b.read()).toString()).to.equal('+OK\r\n');
    const db0 = master.client(0);
    const db2 = master.client(2);
    closers.push(() => db0.disconnect(), () => db2.disconnect());
    expect(await db2.get('tx:key')).to.equal('a');
    expect(await db0.get('plain:key'), 'B wrote in db 0').to.equal('b');
    expect(await db2.exists('plain:key')).to.equal(0);
  });

  it('a transaction that SELECTs another db during a build is copied-on-write in that db', async function () {
    this.timeout(60_000);
    master = await RedisServer.start();
    rebuilt = await RedisServer.start();
    proxy = await startTestProxy(master);
    // Many keys in db 0 so the scanner is still there when the transaction writes db 2.
    const loader = new Redis({ port: proxy.port, enableReadyCheck: false, maxRetriesPerRequest: 0 });
    closers.push(() => loader.disconnect());
    const p = loader.pipeline();
    for (let i = 0; i < 40_000; i++) p.set(`fill:${i}`, 'x');
    p.select(2);
    p.rpush('tx:list', 'base');
    await p.exec();
    const probe = await RespClient.connect(proxy.port);
    const tx = await RespClient.connect(proxy.port);
    closers.push(() => probe.close(), () => tx.close());
    sync = new SyncClient({ host: '127.0.0.1', port: proxy.syncPort, rpcTimeoutMs: 30_000, logger: silentLogger() });
    const manifestPromise = fetchManifest(sync);
    manifestPromise.catch(() => undefined);
    let status = await buildState(probe);
    for (let i = 0; i < 5000 && (status.state !== 'scanning' || status.db === undefined); i++) status = await buildState(probe);
    expect(status, 'the build scans db 0').to.include({ state: 'scanning', db: 0 });
    tx.send(Buffer.concat([['MULTI'], ['SELECT', '2'], ['RPUSH', 'tx:list', 'during-build'], ['EXEC']].map((c) => encodeArgs(c))));
    for (let i = 0; i < 4; i++) await tx.read();
    const manifest = await manifestPromise;
    const finalOffset = await lastLogOffset(probe);
    const target = await PipelinedNode.connect(rebuilt.port);
    closers.push(() => target.close());
    await loadSnapshotFiles(sync, manifest, target);
    await replayLog(sync, manifest, target, finalOffset);
    const m = master.client();
    const r = rebuilt.client();
    closers.push(() => m.disconnect(), () => r.disconnect());
    const { diffs } = await diffNodes(m, r, [0, 2], TTL_TOLERANCE_MS);
    expect(diffs).to.deep.equal([]);
    expect(await r.lrange('tx:list', 0, -1)).to.deep.equal(['base', 'during-build']);
  });
}

describe('master exactness through the real proxy', function () {
  for (const kind of NODE_KINDS) describe(kind, () => scenario({ kind, pikaProfile: false }));
  describe('Pika-profile redis-server node (portable commands only)', () => scenario({ kind: 'redis', pikaProfile: true }));
  describe('redis-server through 4 lanes (writes spanning lanes run exclusive)', () => scenario({ kind: 'redis', pikaProfile: false, lanes: 4 }));
  describe('SELECT inside MULTI (redis-server: needs a second db)', () => selectInsideMulti());
});

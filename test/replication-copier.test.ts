import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { CopyStats, copySnapshot, emptyCopyStats } from '../src/replication/copier';
import { ProgressRecord } from '../src/replication/staging';
import type { ChunkAnswer, SyncClientLike } from '../src/replication/sync-api';
import { Throttle } from '../src/replication/throttle';
import { RetryPolicy } from '../src/retry';
import type { Manifest } from '../src/source/types';
import { SyncClient } from '../src/sync/sync-client';
import { FakeMaster, TestRecord, tempDir } from './replication-fixture';

const REPLICA = { runId: 'r'.repeat(40), host: '127.0.0.1', port: 1 };

function records(n: number): TestRecord[] {
  return Array.from({ length: n }, (_, i) => ({ db: 0, key: `k${i}`, type: 'string' as const, commands: [['SET', `k${i}`, `${i}-${'y'.repeat(300)}`]] }));
}

/** The real gRPC client with a hook on every chunk answer (fault injection at the client boundary). */
function hooked(client: SyncClient, hook: (answer: ChunkAnswer, n: number) => ChunkAnswer): SyncClientLike & { fetched: Map<string, number>; calls: number } {
  let n = 0;
  const fetched = new Map<string, number>();
  const wrapper = {
    fetched,
    calls: 0,
    getMeta: client.getMeta.bind(client),
    streamLog: client.streamLog.bind(client),
    close: () => client.close(),
    async getChunk(req: Parameters<SyncClient['getChunk']>[0]): Promise<ChunkAnswer> {
      wrapper.calls++;
      const answer = hook(await client.getChunk(req), ++n);
      fetched.set(req.file, (fetched.get(req.file) ?? 0) + answer.data.length);
      return answer;
    },
  };
  return wrapper;
}

async function expectCode(p: Promise<unknown>, code: string): Promise<SyncProxyError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, `expected ${code}`).to.be.instanceOf(SyncProxyError);
  expect((err as SyncProxyError).code, (err as Error).message).to.equal(code);
  return err as SyncProxyError;
}

describe('replication copier (real SyncServer and SyncClient)', function () {
  let master: FakeMaster;
  let client: SyncClient;
  let dataDir: string;
  let manifest: Manifest;

  const copy = (c: SyncClientLike, stats: CopyStats = emptyCopyStats(), signal = new AbortController().signal, m: Manifest = manifest, extra: { throttle?: number; workers?: number } = {}) =>
    copySnapshot({
      client: c, manifest: m, masterRunId: master.runId, dataDir, workers: extra.workers ?? 3, chunkSize: 4096, throttle: new Throttle(extra.throttle ?? 0),
      chunkRetry: new RetryPolicy({ maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20 }), replica: REPLICA, logger: silentLogger(), signal, stats,
    });
  const staging = (): string => path.join(dataDir, 'replica', 'staging');
  const progress = async (): Promise<ProgressRecord> => JSON.parse(await fsp.readFile(path.join(dataDir, 'replica', 'progress.json'), 'utf8')) as ProgressRecord;
  const sameAsMaster = async (m: Manifest = manifest): Promise<void> => {
    for (const f of m.files) {
      const ours = await fsp.readFile(path.join(staging(), m.snapshotId, f.name));
      const theirs = await fsp.readFile(path.join(master.store.dir, m.snapshotId, f.name));
      expect(ours.equals(theirs), f.name).to.equal(true);
    }
  };

  beforeEach(async () => {
    master = await FakeMaster.start();
    manifest = await master.store.publish(records(400), { logId: master.log.logId, logOffset: 0, fileSize: 20 * 1024 });
    client = new SyncClient({ host: '127.0.0.1', port: master.syncPort, rpcTimeoutMs: 5000, logger: silentLogger() });
    dataDir = await tempDir('psp-copier-');
  });
  afterEach(async () => {
    client.close();
    await master.stop();
    await fsp.rm(dataDir, { recursive: true, force: true });
  });

  it('copies every file with parallel workers and positioned writes; files equal the master, progress marks them complete', async () => {
    expect(manifest.files.length).to.be.greaterThan(3);
    const stats = emptyCopyStats();
    const result = await copy(client, stats);
    await sameAsMaster();
    expect(result.files.map((f) => f.name)).to.deep.equal(manifest.files.map((f) => f.name));
    expect(stats).to.include({ bytesTotal: manifest.totalBytes, bytesDone: manifest.totalBytes, filesDone: manifest.files.length, chunkRetries: 0 });
    const p = await progress();
    expect(p.snapshotId).to.equal(manifest.snapshotId);
    expect(Object.values(p.files).every((f) => f.complete)).to.equal(true);
    const leftovers = (await fsp.readdir(path.join(staging(), manifest.snapshotId))).filter((n) => n.endsWith('.partial'));
    expect(leftovers).to.deep.equal([]);
  });

  it('a chunk whose data does not match its CRC32C is fetched again and counted in chunkRetries', async () => {
    const stats = emptyCopyStats();
    const corrupting = hooked(client, (a, n) => (n === 2 ? { ...a, data: Buffer.from(a.data).fill(0x41, 0, 10) } : a));
    await copy(corrupting, stats);
    expect(stats.chunkRetries).to.equal(1);
    await sameAsMaster();
  });

  it('a chunk corrupted on every fetch fails after the bounded refetches with CHECKSUM_MISMATCH (retryable) listing each try', async () => {
    const always = hooked(client, (a) => (a.file === manifest.files[1].name ? { ...a, data: Buffer.from(a.data).fill(0x41, 0, 10) } : a));
    const err = await expectCode(copy(always), 'CHECKSUM_MISMATCH');
    expect(err.retryable).to.equal(true);
    expect(err.message).to.match(/failed after 3 fetches: \[1\] CHECKSUM_MISMATCH.*\[3\] CHECKSUM_MISMATCH/);
  });

  it('end of file before the manifest size, or a chunk past it, is SIZE_MISMATCH', async () => {
    await expectCode(copy(hooked(client, (a) => ({ ...a, eof: true }))), 'SIZE_MISMATCH');
  });

  it('a chunk from another snapshot id is SNAPSHOT_CHANGED, and so is the snapshot vanishing mid-copy', async () => {
    await expectCode(copy(hooked(client, (a, n) => (n === 3 ? { ...a, snapshotId: 'another' } : a))), 'SNAPSHOT_CHANGED');
    let served = 0;
    master.store.onChunk = async () => {
      if (++served === 4) await master.store.publish(records(5), { logId: master.log.logId, logOffset: 0 });
    };
    await expectCode(copy(client), 'SNAPSHOT_CHANGED');
  });

  it('hostile file names or snapshot ids are refused before anything is written', async () => {
    for (const name of ['../evil', 'a/b', '/etc/passwd', 'x\0y', '..', 'c:\\x', 'dir\\file']) {
      const hostile: Manifest = { ...manifest, files: [{ name, size: 1, crc32c: 0 }], totalBytes: 1 };
      await expectCode(copy(client, emptyCopyStats(), new AbortController().signal, hostile), 'HOSTILE_FILE_NAME');
    }
    await expectCode(copy(client, emptyCopyStats(), new AbortController().signal, { ...manifest, snapshotId: '../../outside' }), 'HOSTILE_FILE_NAME');
    expect(await fsp.readdir(dataDir)).to.deep.equal([]);
  });

  it('resumes after an interruption: complete files re-verified from disk, partial files continue at their verified offset', async () => {
    const abort = new AbortController();
    const stopper = hooked(client, (a, n) => {
      if (n === 14) abort.abort(new SyncProxyError('SYNC_ABORTED', 'test: process killed'));
      return a;
    });
    await expectCode(copy(stopper, emptyCopyStats(), abort.signal, manifest, { workers: 1 }), 'SYNC_ABORTED');
    const saved = await progress();
    const verified = Object.values(saved.files).reduce((s, f) => s + f.verifiedBytes, 0);
    expect(verified).to.be.greaterThan(0).and.lessThan(manifest.totalBytes);
    const completeNames = Object.entries(saved.files).filter(([, f]) => f.complete).map(([n]) => n);
    expect(completeNames.length).to.be.greaterThan(0);
    const partial = Object.entries(saved.files).find(([, f]) => !f.complete && f.verifiedBytes > 0);
    expect(partial, 'a partially copied file with verified bytes').to.not.equal(undefined);

    const stats = emptyCopyStats();
    const counting = hooked(client, (a) => a);
    await copy(counting, stats);
    await sameAsMaster();
    expect(stats.resumedBytes).to.equal(verified);
    const fetchedAgain = [...counting.fetched.values()].reduce((s, n) => s + n, 0);
    expect(fetchedAgain).to.equal(manifest.totalBytes - verified);
    for (const name of completeNames) expect(counting.fetched.has(name), name).to.equal(false);
  });

  it('a complete file that no longer matches its CRC on disk is fetched again', async () => {
    await copy(client);
    const victim = path.join(staging(), manifest.snapshotId, manifest.files[0].name);
    const handle = await fsp.open(victim, 'r+');
    await handle.write(Buffer.from('garbage'), 0, 7, 100);
    await handle.close();
    const counting = hooked(client, (a) => a);
    await copy(counting);
    expect([...counting.fetched.keys()]).to.deep.equal([manifest.files[0].name]);
    await sameAsMaster();
  });

  it('progress for another snapshot id wipes the staging directory', async () => {
    await copy(client);
    const old = manifest;
    const next = await master.store.publish(records(30), { logId: master.log.logId, logOffset: 0 });
    await copy(client, emptyCopyStats(), new AbortController().signal, next);
    expect(await fsp.readdir(staging())).to.deep.equal([next.snapshotId]);
    expect((await progress()).snapshotId).to.equal(next.snapshotId);
    expect(old.snapshotId).to.not.equal(next.snapshotId);
  });
});

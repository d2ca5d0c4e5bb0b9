import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type Redis from 'ioredis';
import { loadConfig } from '../src/config';
import { silentLogger } from '../src/logger';
import { ReplicationManager } from '../src/replication/replication-manager';
import { freePort } from './helpers/ports';
import { RedisServer } from './helpers/redis-server';
import { FakeMaster, TestRecord, tempDir, waitFor } from './replication-fixture';

const EMPTY_MASTER_VIEW = { logId: 'x', firstOffset: 1, lastOffset: 0, replicas: [] };

function records(n: number, prefix = 'key'): TestRecord[] {
  const out: TestRecord[] = [];
  for (let i = 0; i < n; i++) out.push({ db: i % 2, key: `${prefix}:${i}`, type: 'string', commands: [['SET', `${prefix}:${i}`, `value-${i}-${'x'.repeat(200)}`]] });
  out.push({ db: 0, key: 'hash', type: 'hash', commands: [['HMSET', 'hash', 'f1', 'a', 'f2', 'b']] });
  return out;
}

describe('replication manager: SLAVEOF through a real SyncServer into a real redis-server', function () {
  let node: RedisServer;
  let nodeClient: Redis;
  let master: FakeMaster | undefined;
  let manager: ReplicationManager | undefined;
  let dataDir: string;
  let selfPort: number;

  const makeManager = (extra: string[] = [], runId = 'b'.repeat(40)): ReplicationManager => {
    const config = loadConfig(
      ['--port', '0', '--backend', `127.0.0.1:${node.port}`, '--data-dir', dataDir, '--sync-retry-base-ms', '50', '--sync-retry-max-ms', '200',
        '--sync-max-attempts', '3', '--sync-chunk-size', '4096', '--sync-workers', '3', '--sync-progress-interval-ms', '100', ...extra],
      {},
    );
    return new ReplicationManager({ config, logger: silentLogger(), runId, self: { host: '127.0.0.1', port: selfPort } });
  };

  beforeEach(async () => {
    node = await RedisServer.start();
    nodeClient = node.client();
    dataDir = await tempDir('psp-replica-');
    selfPort = await freePort();
  });
  afterEach(async () => {
    await manager?.stop();
    manager = undefined;
    await master?.stop();
    master = undefined;
    nodeClient.disconnect();
    await node.stop();
    await fsp.rm(dataDir, { recursive: true, force: true });
  });

  it('gates reads until the full sync is confirmed, then streams the write log (single and MULTI entries)', async () => {
    master = await FakeMaster.start();
    master.append(0, ['SET', 'before-snapshot', '1']);
    await master.store.publish(records(300), { logId: master.log.logId, logOffset: master.log.lastOffset, fileSize: 16 * 1024 });
    master.store.building = true;
    await nodeClient.set('old', 'data');
    manager = makeManager();
    const roles: string[] = [];
    manager.onRoleChange((r) => roles.push(r));

    expect(await manager.slaveof('127.0.0.1', master.port, false)).to.equal('started');
    expect(manager.role).to.equal('replica');
    expect(roles).to.deep.equal(['replica']);
    await waitFor('fetching_meta', () => manager!.state === 'fetching_meta');
    expect(manager.readGate()).to.match(/^MASTERDOWN full sync not confirmed: fetching_meta \(attempt 1\/3\)$/);
    // writes on the master while the snapshot "builds" come after its log offset
    master.append(0, ['SET', 'after-snapshot', '2']);
    master.store.building = false;

    await waitFor('streaming', () => manager!.state === 'streaming').catch((e) => {
      throw new Error(`${(e as Error).message}: ${manager!.statusText()}`);
    });
    expect(manager.readGate()).to.equal(null);
    expect(await manager.slaveof('127.0.0.1', master.port, false)).to.equal('already');
    expect(await nodeClient.exists('old')).to.equal(0);
    expect(await nodeClient.get('key:0')).to.match(/^value-0-/);
    expect(await nodeClient.hgetall('hash')).to.deep.equal({ f1: 'a', f2: 'b' });
    expect(await nodeClient.get('after-snapshot')).to.equal('2');
    expect(await nodeClient.exists('before-snapshot')).to.equal(0); // not in the snapshot, before its offset

    master.append(1, ['SET', 'live', 'x']);
    master.append(0, ['INCR', 'counter'], ['INCR', 'counter']);
    const db1 = node.client(1);
    await waitFor('live write applied', async () => (await db1.get('live')) === 'x');
    db1.disconnect();
    await waitFor('MULTI entry applied', async () => (await nodeClient.get('counter')) === '2');

    const info = manager.infoReplication(EMPTY_MASTER_VIEW);
    expect(info.startsWith('# Replication\r\nrole:slave\r\n')).to.equal(true);
    expect(info).to.include(`master_port:${master.port}\r\n`).and.include('master_link_status:up').and.include('sync_confirmed:1').and.include('sync_state:streaming');
    expect(info).to.include(`master_sync_total_bytes:${master.store.current!.totalBytes}`).and.include('master_sync_perc:100.00');
    await waitFor('slave_repl_offset 4', () => manager!.infoReplication(EMPTY_MASTER_VIEW).includes('slave_repl_offset:4\r\n'));
    expect(manager.infoReplication(EMPTY_MASTER_VIEW)).to.include('master_repl_offset:4\r\n');
    expect(manager.roleReply(EMPTY_MASTER_VIEW)).to.deep.equal(['slave', '127.0.0.1', master.port, 'connected', 4]);
    const status = manager.status() as Record<string, unknown>;
    expect(status).to.include({ state: 'streaming', confirmed: true, failedAttempts: 0, filesTotal: master.store.current!.files.length });
    expect((status.phases as Array<{ state: string }>).map((p) => p.state)).to.include.members(['connecting', 'fetching_meta', 'copying', 'verifying', 'loading', 'catching_up', 'streaming']);
    expect(manager.statusText()).to.match(/phase: copying start=\S+ end=\S+ duration_ms=\d+/);
    // staging is removed after confirmation
    await waitFor('staging removed', async () => !(await fsp.stat(path.join(dataDir, 'replica', 'staging')).then(() => true, () => false)));

    await manager.noOne();
    expect(manager.role).to.equal('master');
    expect(manager.state).to.equal('none');
    expect(manager.readGate()).to.equal(null);
    expect(roles).to.deep.equal(['replica', 'master']);
    expect(await fsp.stat(path.join(dataDir, 'replica', 'role.json')).then(() => true, () => false)).to.equal(false);
    expect(await nodeClient.get('key:0')).to.match(/^value-0-/); // a confirmed dataset stays
  });

  it('a bare redis-server as master is a fatal NOT_A_SYNC_PROXY: failed after 1 attempt, reads refused', async () => {
    const bare = await RedisServer.start();
    try {
      manager = makeManager();
      await manager.slaveof('127.0.0.1', bare.port, false);
      await waitFor('failed', () => manager!.state === 'failed');
      expect(manager.readGate()).to.match(/^MASTERDOWN full sync failed after 1 attempt: .*NOT_A_SYNC_PROXY.*must be a pika-sync-proxy/);
      expect(manager.infoReplication(EMPTY_MASTER_VIEW)).to.include('sync_confirmed:0').and.include('master_link_status:down').and.include('last_sync_error:NOT_A_SYNC_PROXY');
      // failed + same master: SLAVEOF starts again instead of answering 'already'
      expect(await manager.slaveof('127.0.0.1', bare.port, false)).to.equal('started');
    } finally {
      await manager?.stop();
      await bare.stop();
    }
  });

  it('wrong masterauth is a fatal AUTH_FAILED; protocol 2 is PROTOCOL_VERSION_MISMATCH; our own run id is SELF_REPLICATION', async () => {
    master = await FakeMaster.start({ password: 'secret' });
    manager = makeManager(['--masterauth', 'wrong']);
    await manager.slaveof('127.0.0.1', master.port, false);
    await waitFor('failed', () => manager!.state === 'failed');
    expect(manager.readGate()).to.match(/failed after 1 attempt: .*AUTH_FAILED/);
    expect(manager.readGate()).to.not.include('wrong');
    await manager.stop();
    await master.stop();

    master = await FakeMaster.start({ protocol: 2 });
    manager = makeManager();
    await manager.slaveof('127.0.0.1', master.port, false);
    await waitFor('failed', () => manager!.state === 'failed');
    expect(manager.readGate()).to.match(/PROTOCOL_VERSION_MISMATCH/);
    await manager.stop();
    await master.stop();

    master = await FakeMaster.start({ runId: 'c'.repeat(40) });
    manager = makeManager([], 'c'.repeat(40));
    await manager.slaveof('127.0.0.1', master.port, false);
    await waitFor('failed', () => manager!.state === 'failed');
    expect(manager.readGate()).to.match(/SELF_REPLICATION/);
  });

  it('SLAVEOF to its own address is refused at once with SELF_REPLICATION', async () => {
    manager = makeManager();
    for (const host of ['127.0.0.1', 'localhost', '::1', '0.0.0.0']) {
      const err = await manager.slaveof(host, selfPort, false).then(() => undefined, (e: unknown) => e as { code: string });
      expect(err?.code).to.equal('SELF_REPLICATION');
    }
    expect(manager.role).to.equal('master');
  });

  it('an unreachable master is retried with backoff, then failed with every attempt in the error chain', async () => {
    const deadPort = await freePort();
    manager = makeManager();
    await manager.slaveof('127.0.0.1', deadPort, false);
    await waitFor('backoff', () => manager!.state === 'backoff' && manager!.readGate()!.includes('backoff'));
    await waitFor('failed', () => manager!.state === 'failed');
    expect(manager.readGate()).to.match(/^MASTERDOWN full sync failed after 3 attempts: .*MASTER_UNREACHABLE/);
    const status = manager.status() as { errors: Array<{ code: string }>; finalError: string };
    expect(status.errors.map((e) => e.code)).to.deep.equal(['MASTER_UNREACHABLE', 'MASTER_UNREACHABLE', 'MASTER_UNREACHABLE']);
    expect(status.finalError).to.match(/RETRIES_EXHAUSTED: full sync failed after 3 attempts: \[1\] MASTER_UNREACHABLE.*\[3\] MASTER_UNREACHABLE/);
  });

  it('LOG_OFFSET_GONE after a confirmed sync (master log reset) runs a new full sync and gates reads again', async () => {
    master = await FakeMaster.start();
    await master.store.publish(records(50, 'first'), { logId: master.log.logId, logOffset: 0 });
    manager = makeManager(['--replica-serve-stale-data', 'no']);
    await manager.slaveof('127.0.0.1', master.port, false);
    await waitFor('streaming', () => manager!.state === 'streaming');
    master.store.building = true;
    master.log.reset('test: master restarted');
    await waitFor('gated again', () => /^MASTERDOWN full sync not confirmed/.test(manager!.readGate() ?? ''));
    await master.store.publish(records(20, 'second'), { logId: master.log.logId, logOffset: 0 });
    master.store.building = false;
    await waitFor('streaming again', () => manager!.state === 'streaming' && manager!.readGate() === null);
    expect(await nodeClient.exists('first:0')).to.equal(0);
    expect(await nodeClient.get('second:0')).to.match(/^value-0/);
    expect(manager.infoReplication(EMPTY_MASTER_VIEW)).to.include('last_sync_error:LOG_OFFSET_GONE');
  });

  it('SLAVEOF NO ONE during an unconfirmed load flushes the node; a restarted manager resumes from role.json', async () => {
    master = await FakeMaster.start();
    await master.store.publish(records(400), { logId: master.log.logId, logOffset: 0, fileSize: 8 * 1024 });
    manager = makeManager();
    await manager.slaveof('127.0.0.1', master.port, false);
    await manager.stop();
    expect(await fsp.readFile(path.join(dataDir, 'replica', 'role.json'), 'utf8')).to.include(`"port":${master.port}`);

    manager = makeManager();
    await manager.start();
    expect(manager.role).to.equal('replica');
    await waitFor('streaming after restart', () => manager!.state === 'streaming');
    expect(await nodeClient.get('key:398')).to.match(/^value-398/);

    // a new sync whose load begins but never confirms (the master's log stream is refused)
    await master.store.publish(records(10, 'partial'), { logId: 'a-log-id-the-master-does-not-have', logOffset: 0 });
    expect(await manager.slaveof('127.0.0.1', master.port, true)).to.equal('started');
    await waitFor('loaded but not confirmed', async () => (await nodeClient.exists('partial:0')) === 1 && manager!.readGate() !== null);
    await manager.noOne();
    expect(await nodeClient.dbsize()).to.equal(0);
  });
  it('copy and load overlap: verified files are loaded while the last file is still being copied (state copying, reads gated), then confirmed', async () => {
    master = await FakeMaster.start();
    const manifest = await master.store.publish(records(600), { logId: master.log.logId, logOffset: master.log.lastOffset, fileSize: 8 * 1024 });
    expect(manifest.files.length).to.be.greaterThan(4);
    const last = manifest.files[manifest.files.length - 1].name;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    master.store.onChunk = async (file) => {
      if (file === last) await released;
    };
    manager = makeManager();
    await manager.slaveof('127.0.0.1', master.port, false);
    // key:0 is in the first file: loaded while the last file waits
    await waitFor('first file loaded during the copy', async () => (await nodeClient.exists('key:0')) === 1);
    expect(manager.state).to.equal('copying');
    const gate = manager.readGate();
    expect(gate).to.match(/^MASTERDOWN full sync not confirmed: copying \d+% .*loaded \d+%, attempt 1\/3\)$/);
    release();
    await waitFor('streaming', () => manager!.state === 'streaming');
    expect(manager.readGate()).to.equal(null);
    const status = manager.status() as { load: { dbs: Array<{ db: number; records: number; nodeKeys: number }> }; phases: Array<{ state: string; reason: string }> };
    expect(status.load.dbs.map((d) => d.records).reduce((a, b) => a + b, 0)).to.equal(601);
    expect(status.phases.find((p) => p.state === 'loading')!.reason).to.match(/\(\d+\/\d+ files loaded during the copy\)/);
    expect(await nodeClient.dbsize()).to.equal(301);
  });

  it('snapshot changed after files of the old snapshot were loaded: the node is flushed, only the new snapshot is loaded and confirmed', async () => {
    master = await FakeMaster.start();
    const old = await master.store.publish(records(600, 'old'), { logId: master.log.logId, logOffset: master.log.lastOffset, fileSize: 8 * 1024 });
    const last = old.files[old.files.length - 1].name;
    let replaced = false;
    master.store.onChunk = async (file) => {
      if (replaced || file !== last) return;
      replaced = true;
      await waitFor('old snapshot partly loaded', async () => (await nodeClient.exists('old:0')) === 1);
      // the old snapshot disappears: the replica's next chunk of it is SNAPSHOT_NOT_FOUND -> SNAPSHOT_CHANGED
      await master!.store.publish(records(50, 'new'), { logId: master!.log.logId, logOffset: master!.log.lastOffset, fileSize: 8 * 1024 });
    };
    manager = makeManager();
    await manager.slaveof('127.0.0.1', master.port, false);
    await waitFor('streaming', () => manager!.state === 'streaming');
    const status = manager.status() as { snapshotChanges: number };
    expect(status.snapshotChanges).to.equal(1);
    expect(await nodeClient.exists('old:0')).to.equal(0);
    expect(await nodeClient.get('new:0')).to.match(/^value-0/);
    const db1 = node.client(1);
    expect((await nodeClient.dbsize()) + (await db1.dbsize())).to.equal(51);
    db1.disconnect();
  });

  it('SLAVEOF NO ONE while files are loaded during the copy flushes the node (nothing partial stays)', async () => {
    master = await FakeMaster.start();
    const manifest = await master.store.publish(records(600), { logId: master.log.logId, logOffset: master.log.lastOffset, fileSize: 8 * 1024 });
    const last = manifest.files[manifest.files.length - 1].name;
    master.store.onChunk = async (file) => {
      if (file === last) await new Promise(() => undefined); // the last file never arrives
    };
    manager = makeManager();
    await manager.slaveof('127.0.0.1', master.port, false);
    await waitFor('first file loaded during the copy', async () => (await nodeClient.exists('key:0')) === 1);
    expect(manager.state).to.equal('copying');
    await manager.noOne();
    expect(await nodeClient.dbsize()).to.equal(0);
    const db1 = node.client(1);
    expect(await db1.dbsize()).to.equal(0);
    db1.disconnect();
  });
});

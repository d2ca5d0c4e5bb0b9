/**
 * Faults while the snapshot is copied or loaded: the link cut mid-file, corrupted bytes, the
 * snapshot removed under the copy, either proxy SIGKILLed, the replica's node killed during the
 * load, a full staging disk. The copy is throttled (--sync-throttle) so "mid-copy" is a wide,
 * reliable window; every wait polls SYNCPROXY STATUS. Both nodes of each scenario are of one kind,
 * on every kind (NODE_KINDS: real redis-server and real Pika); key counts are taken by SCAN.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, promises as fsp, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config';
import { silentLogger } from '../src/logger';
import { ReplicationManager } from '../src/replication/replication-manager';
import { FaultProxy } from './helpers/fault-proxy';
import { FaultedMaster, Replica, SyncStatus, countKeys, infoReplication, readReply, replicaFlags, seed, waitBackendUp } from './faults-fixture';
import { NODE_KINDS, startNode } from './helpers/nodes';

const KEYS = 2000;
const VALUE = 300;

/** Slow enough that a fault can land mid-copy (~650 KB at 256 KB/s), patient enough to recover. */
const COPY_FLAGS = { 'sync-throttle': '256kb', 'sync-workers': '2', 'sync-max-attempts': '10', 'sync-retry-base-ms': '100', 'sync-retry-max-ms': '800' };

const copiedAtLeast = (fraction: number) => (s: SyncStatus): boolean => s.state === 'copying' && s.bytesTotal > 0 && s.bytesRead >= s.bytesTotal * fraction;
const confirmed = (s: SyncStatus): boolean => s.confirmed && s.state === 'streaming';

/** While a retryable fault lasts: the cause is named in STATUS and INFO, reads are refused. */
async function expectExplicitFault(replica: Replica, code: RegExp): Promise<void> {
  const s = await replica.waitStatus('an attempt failed', (x) => x.errors.length >= 1);
  expect(s.errors[0].code, JSON.stringify(s.errors)).to.match(code);
  expect(s.errors[0].retryable).to.equal(true);
  expect(s.confirmed).to.equal(false);
  expect(s.lastError).to.match(code);
  const info = await infoReplication(replica.client);
  expect(info).to.include({ sync_confirmed: '0', master_link_status: 'down' });
  expect(info.last_sync_error).to.match(code);
  expect(await readReply(replica.client)).to.match(/^MASTERDOWN full sync not confirmed: /);
}

for (const kind of NODE_KINDS) describe(kind, () => {
  describe('faults during the copy and the load (CLI replica and master)', function () {
    this.timeout(90_000);
    let master: FaultedMaster;
    let replica: Replica | undefined;

    before(async () => {
      master = await FaultedMaster.start(['--snapshot-file-size', '64kb'], kind);
      await seed(master.client, KEYS, 'k', VALUE);
    });
    after(async () => {
      await master?.stop();
    });
    afterEach(async () => {
      await replica?.stop();
      replica = undefined;
      await master.resp.setMode('pass');
      await master.sync.setMode('pass');
    });

    /** The replica holds exactly the master's data, read through the replica proxy. */
    async function expectSameData(r: Replica): Promise<void> {
      expect(await countKeys(r.client)).to.equal(KEYS + 1);
      for (const i of [0, 1, KEYS / 2, KEYS - 1]) expect(await r.client.get(`k:${i}`)).to.equal(await master.client.get(`k:${i}`));
      expect(await r.client.hgetall('k:hash')).to.deep.equal({ f1: 'a', f2: 'b' });
      // nothing lost on the master
      expect(await countKeys(master.client)).to.equal(KEYS + 1);
    }

    it('4. connection cut mid-file: the copy resumes from the last verified chunk, not from zero', async () => {
      replica = await Replica.start(replicaFlags(COPY_FLAGS), { kind });
      const before = master.sync.counters.bytesDown;
      await replica.slaveof('127.0.0.1', master.port);
      const mid = await replica.waitStatus('a third copied', copiedAtLeast(0.33));
      await master.sync.setMode({ mode: 'cut-after', bytes: 1500, direction: 'down', once: true });
      expect(await readReply(replica.client)).to.match(/^MASTERDOWN full sync not confirmed: (copying|backoff|connecting|fetching_meta)/);
      const s = await replica.waitStatus('confirmed', confirmed);
      expect(master.sync.counters.cuts).to.be.at.least(1);
      // resumed: one chunk refetched within the attempt, or verified bytes kept by the next attempt
      expect(s.chunkRetries + s.bytesResumed, JSON.stringify(s)).to.be.greaterThan(0);
      const fetched = master.sync.counters.bytesDown - before;
      expect(fetched, `fetched ${fetched} of ${mid.bytesTotal}`).to.be.lessThan(mid.bytesTotal * 2);
      await expectSameData(replica);
    });

    it('4b. link down long enough to fail the attempt: the next attempt keeps the verified bytes (bytesResumed > 0)', async () => {
      replica = await Replica.start(replicaFlags(COPY_FLAGS), { kind });
      const before = master.sync.counters.bytesDown;
      await replica.slaveof('127.0.0.1', master.port);
      const mid = await replica.waitStatus('40% copied', copiedAtLeast(0.4));
      await master.sync.setMode('refuse');
      master.sync.cutAll();
      await expectExplicitFault(replica, /^MASTER_(UNREACHABLE|CONNECTION_LOST|TIMEOUT)\b/);
      await master.sync.setMode('pass');
      const s = await replica.waitStatus('confirmed', confirmed);
      expect(s.bytesResumed, JSON.stringify(s)).to.be.at.least(Math.floor(mid.bytesTotal * 0.2));
      expect(master.sync.counters.bytesDown - before).to.be.lessThan(mid.bytesTotal * 2);
      await expectSameData(replica);
    });

    it('4c. network partition mid-copy (blackhole): chunk calls time out, explicit MASTER_TIMEOUT, resumes once healed', async () => {
      replica = await Replica.start(replicaFlags({ ...COPY_FLAGS, 'sync-rpc-timeout-ms': '300', 'sync-snapshot-wait-ms': '1000' }), { kind });
      await replica.slaveof('127.0.0.1', master.port);
      await replica.waitStatus('a third copied', copiedAtLeast(0.33));
      await master.sync.setMode('blackhole');
      await expectExplicitFault(replica, /^MASTER_TIMEOUT\b/);
      await master.sync.setMode('pass');
      master.sync.cutAll(); // the held connection is stale; a real partition would reset it too
      const s = await replica.waitStatus('confirmed', confirmed);
      expect(s.bytesResumed + s.chunkRetries).to.be.greaterThan(0);
      await expectSameData(replica);
    });

    it('5. corrupted chunk bytes: checksum mismatch detected, the chunk fetched again and counted, sync confirms', async () => {
      replica = await Replica.start(replicaFlags({ ...COPY_FLAGS, 'sync-workers': '1' }), { kind });
      await replica.slaveof('127.0.0.1', master.port);
      await replica.waitStatus('a quarter copied', copiedAtLeast(0.25));
      // With one worker and a throttle, the next response starts at a message boundary; 2000 bytes
      // into it is inside a 4 KB chunk's data.
      await master.sync.setMode({ mode: 'corrupt', afterBytes: 2000, count: 1, direction: 'down', once: true });
      const s = await replica.waitStatus('confirmed', confirmed);
      expect(master.sync.counters.corruptedBytes).to.equal(1);
      expect(s.chunkRetries).to.be.at.least(1);
      const refetch = replica.proxy.logEntries().find((e) => e.msg && String(e.msg).startsWith('chunk fetch failed, fetching again'));
      expect(refetch, 'a refetch is logged').to.not.equal(undefined);
      expect(refetch!.code).to.equal('CHECKSUM_MISMATCH');
      await expectSameData(replica);
    });

    it('9. replica proxy SIGKILLed mid-copy, then restarted: resumes from its persisted progress', async () => {
      replica = await Replica.start(replicaFlags(COPY_FLAGS), { kind });
      const before = master.sync.counters.bytesDown;
      await replica.slaveof('127.0.0.1', master.port);
      const mid = await replica.waitStatus('half copied', copiedAtLeast(0.5));
      await replica.proxy.kill('SIGKILL');
      await replica.restart();
      await waitBackendUp(replica.client);
      expect(await readReply(replica.client)).to.match(/^MASTERDOWN full sync not confirmed: /);
      const s = await replica.waitStatus('confirmed after the restart', confirmed);
      expect(s.snapshotId).to.equal(mid.snapshotId);
      expect(s.bytesResumed, JSON.stringify(s)).to.be.at.least(Math.floor(mid.bytesTotal * 0.25));
      expect(master.sync.counters.bytesDown - before).to.be.lessThan(mid.bytesTotal * 2);
      expect(replica.proxy.logs()).to.include('resuming replication recorded before the restart');
      await expectSameData(replica);
    });

    it('10. replica node killed during the load: explicit LOAD_FAILED/BACKEND_* failure, retried, confirms once the node is back', async () => {
      // The replica reaches its node through a fault proxy that throttles the load so it lasts.
      // A restarted redis-server comes back empty, a restarted Pika with what it had loaded: the
      // retried sync must end with exactly the master's data either way.
      const node = await startNode(kind);
      const link = await FaultProxy.start({ target: { host: node.host, port: node.port } });
      try {
        replica = await Replica.start(replicaFlags({ ...COPY_FLAGS, 'sync-throttle': '0' }), { backend: { host: link.host, port: link.port }, kind });
        await link.setMode({ mode: 'throttle', bytesPerSec: 100 * 1024 });
        await replica.slaveof('127.0.0.1', master.port);
        await replica.waitStatus('loading', (s) => s.state === 'loading');
        await node.kill();
        await expectExplicitFault(replica, /^(LOAD_FAILED|BACKEND_UNAVAILABLE|BACKEND_CONNECTION_LOST)\b/);
        await link.setMode('pass');
        await node.restart();
        const s = await replica.waitStatus('confirmed once the node is back', confirmed);
        expect(s.confirmed).to.equal(true);
        await expectSameData(replica);
      } finally {
        await replica?.stop();
        replica = undefined;
        await link.stop();
        await node.stop();
      }
    });

    it('11. staging disk full (small tmpfs as --data-dir): fatal DISK_FULL, says so, no retry', async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-tmpfs-'));
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', dir]);
      try {
        replica = await Replica.start(replicaFlags(COPY_FLAGS), { dataDir: dir, kind });
        await replica.slaveof('127.0.0.1', master.port);
        const s = await replica.waitStatus('failed', (x) => x.state === 'failed');
        expect(s.errors.map((e) => e.code)).to.deep.equal(['DISK_FULL']);
        expect(s.lastError).to.match(/^DISK_FULL: /).and.match(/ENOSPC|no space/i);
        expect(s.finalError).to.match(/stopped by a fatal error after 1 attempt: \[1\] DISK_FULL/);
        expect(await readReply(replica.client)).to.match(/^MASTERDOWN full sync failed after 1 attempt: DISK_FULL: /);
        expect(await countKeys(master.client)).to.equal(KEYS + 1);
      } finally {
        await replica?.stop();
        replica = undefined;
        execFileSync('umount', ['-l', dir]);
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('8. master proxy SIGKILLed mid-copy, then restarted: the replica recovers by itself', async () => {
      replica = await Replica.start(replicaFlags(COPY_FLAGS), { kind });
      await replica.slaveof('127.0.0.1', master.port);
      const mid = await replica.waitStatus('a third copied', copiedAtLeast(0.33));
      await master.proxy.kill('SIGKILL');
      await expectExplicitFault(replica, /^MASTER_(UNREACHABLE|CONNECTION_LOST|TIMEOUT)\b/);
      await master.restart();
      const s = await replica.waitStatus('confirmed after the master restart', confirmed);
      // the restarted master serves a new snapshot (its old one is gone): the copy starts over
      expect(s.snapshotId).to.not.equal(mid.snapshotId);
      await expectSameData(replica);
    });
  });

  describe('fault: the snapshot removed on the master mid-copy', function () {
    this.timeout(90_000);
    let master: FaultedMaster | undefined;
    let replica: Replica | undefined;
    after(async () => {
      await replica?.stop();
      await master?.stop();
    });

    it('7. snapshot replaced mid-copy: restart from the meta, counted and reported, then confirmed', async () => {
      // A master whose snapshots are stale after 1 s, so the next GetMeta builds a new one.
      master = await FaultedMaster.start(['--snapshot-file-size', '64kb', '--snapshot-max-age-ms', '1000'], kind);
      await seed(master.client, KEYS, 'k', VALUE);
      replica = await Replica.start(replicaFlags(COPY_FLAGS), { kind });
      await replica.slaveof('127.0.0.1', master.port);
      const mid = await replica.waitStatus('a fifth copied', copiedAtLeast(0.2));
      // Past --snapshot-max-age-ms the master's next GetMeta builds a new snapshot (a clock, not a poll).
      await new Promise((r) => setTimeout(r, 1000));
      await fsp.rm(path.join(master.proxy.dataDir, 'snapshots', mid.snapshotId!), { recursive: true, force: true });
      const s = await replica.waitStatus('confirmed on the new snapshot', confirmed);
      expect(s.snapshotChanges).to.be.at.least(1);
      expect(s.snapshotId).to.not.equal(mid.snapshotId);
      const info = await replica.client.info('replication');
      expect(info).to.match(/sync_snapshot_changes:[1-9]/);
      expect(replica.proxy.logs()).to.include('snapshot changed during the copy');
      expect(await countKeys(replica.client)).to.equal(KEYS + 1);
      expect(await countKeys(master.client)).to.equal(KEYS + 1);
    });
  });
});

describe('restart window: a restarted replica gates reads before its sync resumes', () => {
  it('role.json makes the manager a replica from construction: reads MASTERDOWN and role replica (so writes get READONLY) before start()', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'psp-restart-'));
    try {
      await fsp.mkdir(path.join(dataDir, 'replica'), { recursive: true });
      await fsp.writeFile(path.join(dataDir, 'replica', 'role.json'), JSON.stringify({ host: '127.0.0.1', port: 1 }));
      const config = loadConfig(['--port', '0', '--backend', '127.0.0.1:1', '--data-dir', dataDir], {});
      const manager = new ReplicationManager({ config, logger: silentLogger(), runId: 'd'.repeat(40), self: { host: '127.0.0.1', port: 2 } });
      // what the server consults for every client command, before start() ran
      expect(manager.role).to.equal('replica');
      expect(manager.readGate()).to.match(/^MASTERDOWN full sync not confirmed: /);
      const roles: string[] = [];
      manager.onRoleChange((r) => roles.push(r));
      await manager.start();
      expect(roles).to.deep.equal(['replica']);
      expect(manager.readGate()).to.match(/^MASTERDOWN /);
      await manager.stop();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

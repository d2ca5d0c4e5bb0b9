/**
 * The replica side across crashes and restarts, through real CLI processes: a replica proxy
 * SIGKILLed mid-copy resumes from its persisted progress without fetching completed files again,
 * and a master whose snapshot disappears mid-copy (its proxy restarted) makes the replica fetch the
 * new meta and copy the new snapshot, counted in sync_snapshot_changes. On every node kind
 * (NODE_KINDS: real redis-server and real Pika).
 */
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { NODE_KINDS } from './helpers/nodes';
import { Cleanup, FAST_RETRY, expectNodesEqual, proxyClient, replInfo, seed, sleep, syncStatus, waitCaughtUp, waitConfirmed, waitFor } from './replica-e2e-fixture';

interface Progress {
  snapshotId: string;
  files: Record<string, { size: number; verifiedBytes: number; complete: boolean }>;
}

for (const kind of NODE_KINDS) describe(kind, () => {
  describe('replica end to end: crash, restart and snapshot replacement', function () {
    this.timeout(60_000);
    const cleanup = Cleanup.perTest();

    it('a replica SIGKILLed mid-copy resumes on restart: completed files are not fetched again, the sync confirms equal', async () => {
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      await seed(masterNode, { bigKeys: true });
      const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '256kb']);
      const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--sync-throttle', '1mb', '--sync-chunk-size', '64kb', '--sync-workers', '2']);
      let rc = proxyClient(replica);

      expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
      const before = await waitFor('a few files copied', async () => {
        const s = await syncStatus(rc);
        return s.state === 'copying' && (s.filesDone as number) >= 4 ? s : undefined;
      });
      expect(before.filesTotal as number).to.be.greaterThan(10);
      rc.disconnect();
      await replica.kill('SIGKILL');

      // What the killed process had proven and persisted.
      const progress = JSON.parse(await fsp.readFile(path.join(replica.dataDir, 'replica', 'progress.json'), 'utf8')) as Progress;
      expect(progress.snapshotId).to.equal(before.snapshotId);
      const complete = Object.entries(progress.files).filter(([, f]) => f.complete);
      expect(complete.length).to.be.at.least(4);
      expect(complete.length).to.be.lessThan(before.filesTotal as number);
      const provenBytes = Object.values(progress.files).reduce((sum, f) => sum + (f.complete ? f.size : f.verifiedBytes), 0);
      const logLinesBefore = replica.logEntries().length;

      await replica.restart();
      rc = cleanup.client(proxyClient(replica));
      // role.json brings the restarted process back as a replica of the same master, same snapshot.
      const resumed = await waitFor('the restarted copy', async () => {
        const s = await syncStatus(rc);
        if (s.role !== 'replica' || s.snapshotId !== progress.snapshotId) return undefined;
        // Past the restore of the staging files: new chunks arrived, or the copy is over.
        const copyRunning = s.state === 'copying' && (s.bytesRead as number) > (s.bytesResumed as number);
        return copyRunning || ['verifying', 'loading', 'catching_up', 'streaming'].includes(s.state as string) ? s : undefined;
      });
      expect(resumed.bytesResumed, 'bytes kept from the killed run').to.equal(provenBytes);
      expect(resumed.filesDone as number).to.be.at.least(complete.length);

      const info = await waitConfirmed(replica, rc);
      expect(info.sync_snapshot_id).to.equal(progress.snapshotId);
      const after = replica.logEntries().slice(logLinesBefore);
      const reverified = new Set(after.filter((e) => String(e.msg).startsWith('file already complete')).map((e) => e.file));
      for (const [name] of complete) expect(reverified, `${name} re-verified from disk, not fetched`).to.include(name);
      const restarted = after.filter((e) => String(e.msg).startsWith('resuming file from its verified offset')).map((e) => e.file);
      for (const name of restarted) expect(progress.files[name as string].complete).to.equal(false);
      const final = await syncStatus(rc);
      expect(final).to.include({ confirmed: true, bytesResumed: provenBytes, snapshotChanges: 0 });
      await expectNodesEqual(masterNode, replicaNode);
    });

    it("the master's snapshot replaced mid-copy (master proxy restarted): the replica refetches the meta, counts the change, confirms equal", async () => {
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      await seed(masterNode, { bigKeys: true });
      const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '256kb']);
      const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--sync-retry-base-ms', '300', '--sync-throttle', '1mb', '--sync-chunk-size', '64kb', '--sync-workers', '2']);
      const rc = cleanup.client(proxyClient(replica));
      let mc = proxyClient(master);
      // Log entries on the first master so its offset is well past the restarted master's.
      for (let i = 0; i < 300; i++) await mc.set(`pre:${i % 10}`, String(i));

      expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
      const first = await waitFor('copying the first snapshot', async () => {
        const s = await syncStatus(rc);
        return s.state === 'copying' && (s.filesDone as number) >= 2 ? s : undefined;
      });
      mc.disconnect();
      // A restarted master proxy removes its snapshots and starts a new write log: the snapshot
      // being copied is gone. The replica is paused meanwhile so the restart is over before it
      // notices (it then gets SNAPSHOT_NOT_FOUND, not a refused connection).
      process.kill(replica.pid!, 'SIGSTOP');
      try {
        await master.kill('SIGKILL');
        await master.restart();
      } finally {
        process.kill(replica.pid!, 'SIGCONT');
      }
      mc = cleanup.client(proxyClient(master));
      await mc.set('after-restart', '1');

      const info = await waitConfirmed(replica, rc);
      expect(Number(info.sync_snapshot_changes)).to.be.at.least(1);
      expect(info.sync_snapshot_id).to.not.equal(first.snapshotId);
      const status = await syncStatus(rc);
      const states = (status.phases as Array<{ state: string }>).map((p) => p.state);
      // The copy restarted from a meta fetch: copying -> fetching_meta inside the same attempt
      // (SNAPSHOT_NOT_FOUND), or through backoff and a new attempt when a chunk call was in flight
      // as the master died (the link loss is seen first; timing decides which).
      const firstCopy = states.indexOf('copying');
      const refetch = states.indexOf('fetching_meta', firstCopy);
      expect(firstCopy, states.join(' -> ')).to.be.greaterThan(0);
      expect(refetch, states.join(' -> ')).to.be.greaterThan(firstCopy);
      expect(status.snapshotChanges as number).to.be.at.least(1);

      await mc.set('live', 'after confirmation');
      const offset = await waitCaughtUp(mc, rc);
      await expectNodesEqual(masterNode, replicaNode);
      // The replica reports the new master's log offset, not the one of the log that is gone.
      const replicaInfo = await replInfo(rc);
      expect(Number(replicaInfo.master_repl_offset)).to.equal(offset);
    });

    it('a newer snapshot built for a second replica (--snapshot-max-age-ms) does not replace the one a first replica is copying', async () => {
      const masterNode = await cleanup.node(kind);
      const nodeOne = await cleanup.node(kind);
      const nodeTwo = await cleanup.node(kind);
      await seed(masterNode, { bigKeys: true, bigSize: 50_000 });
      const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '256kb', '--snapshot-max-age-ms', '200']);
      const one = await cleanup.proxy(nodeOne, [...FAST_RETRY, '--sync-throttle', '1mb', '--sync-chunk-size', '64kb']);
      const two = await cleanup.proxy(nodeTwo, FAST_RETRY);
      const c1 = cleanup.client(proxyClient(one));
      const c2 = cleanup.client(proxyClient(two));
      const mc = cleanup.client(proxyClient(master));

      expect(await c1.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
      const first = await waitFor('first replica copying', async () => {
        const s = await syncStatus(c1);
        return s.state === 'copying' && (s.bytesRead as number) > 0 ? s : undefined;
      });
      await mc.set('between', 'snapshots');
      await sleep(300); // the first snapshot is now older than --snapshot-max-age-ms
      expect(await c2.call('SLAVEOF', '127.0.0.1', String(master.port), 'force')).to.equal('OK');
      const infoTwo = await waitConfirmed(two, c2);
      expect(infoTwo.sync_snapshot_id, 'the second replica got a newly built snapshot').to.not.equal(first.snapshotId);

      const infoOne = await waitConfirmed(one, c1);
      // The master keeps serving the snapshot being read: no change for the first replica.
      expect(infoOne).to.include({ sync_snapshot_id: first.snapshotId, sync_snapshot_changes: '0', sync_failed_attempts: '0' });
      await mc.set('live', '1');
      await waitCaughtUp(mc, c1);
      await waitCaughtUp(mc, c2);
      await expectNodesEqual(masterNode, nodeOne);
      await expectNodesEqual(masterNode, nodeTwo);
    });
  });
});

/**
 * Scenario 15: the master's write log is trimmed past the replica's offset while the replica's
 * link is down. The replica must not serve a silently diverged dataset: it falls back to a full
 * sync (reads gated again) and confirms with the master's data. On every node kind (NODE_KINDS).
 */
import { expect } from 'chai';
import { FaultedMaster, Replica, countKeys, readReply, replicaFlags, seed, waitFor } from './faults-fixture';
import { NODE_KINDS } from './helpers/nodes';

for (const kind of NODE_KINDS) describe(kind, () => {
  describe('fault: write log trimmed past the replica offset while it was away', function () {
    this.timeout(90_000);
    let master: FaultedMaster | undefined;
    let replica: Replica | undefined;
    after(async () => {
      await replica?.stop();
      await master?.stop();
    });

    it('15. falls back to a full sync (LOG_OFFSET_GONE), reads gated again, then confirms with the new data', async () => {
      master = await FaultedMaster.start(['--write-log-max-bytes', '1mb', '--write-log-segment-bytes', '64kb'], kind);
      await seed(master.client, 300, 'early', 100);
      replica = await Replica.start(replicaFlags({ 'sync-max-attempts': '40', 'sync-retry-base-ms': '100', 'sync-retry-max-ms': '300', 'sync-throttle': '1mb' }), { kind });
      await replica.slaveof('127.0.0.1', master.port);
      await replica.waitStatus('first confirmation', (s) => s.confirmed && s.state === 'streaming');
      await master.client.set('streamed', '1');
      await waitFor('streamed write applied', async () => (await replica!.client.get('streamed')) === '1');
      const appliedBefore = (await replica.status()).appliedOffset as number;

      // The link goes down; the master keeps writing far more than its log holds.
      await master.sync.setMode('refuse');
      master.sync.cutAll();
      await replica.waitStatus('link down', (s) => s.state !== 'streaming' && s.errors.length >= 1);
      await seed(master.client, 2500, 'late', 1024);
      const proxyInfo = await master.client.info('proxy');
      const firstOffset = Number(/write_log_first_offset:(\d+)/.exec(proxyInfo)![1]);
      expect(firstOffset, 'the master trimmed past the replica').to.be.greaterThan(appliedBefore + 1);
      // stale reads of the confirmed dataset are allowed (replica-serve-stale-data yes), never new data
      expect(await readReply(replica.client, 'late:1')).to.equal('OK:null');

      await master.sync.setMode('pass');
      // the full sync begins again: reads gated while it runs
      await replica.waitStatus('new full sync copying', (s) => !s.confirmed && s.state === 'copying');
      expect(await readReply(replica.client, 'early:1')).to.match(/^MASTERDOWN full sync not confirmed: copying/);
      const s = await replica.waitStatus('confirmed again', (x) => x.confirmed && x.state === 'streaming');
      const phases = (s.phases as Array<{ state: string; reason: string }>);
      const firstStreaming = phases.findIndex((p) => p.state === 'streaming');
      expect(phases.slice(firstStreaming + 1).map((p) => p.state)).to.include.members(['catching_up', 'fetching_meta', 'copying', 'loading', 'streaming']);
      expect(replica.proxy.logs()).to.include('LOG_OFFSET_GONE');
      expect(await countKeys(replica.client)).to.equal(await countKeys(master.client));
      for (const key of ['early:0', 'early:299', 'late:0', 'late:2499', 'streamed']) expect(await replica.client.get(key)).to.equal(await master.client.get(key));
    });
  });
});

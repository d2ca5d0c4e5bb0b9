/**
 * The replica side end to end while the master keeps writing and while SLAVEOF changes mid-sync,
 * on every node kind (NODE_KINDS): writers on the master proxy before, during and after the full
 * sync (every TTL form a client may send, test/helpers/sync-writers.ts), SLAVEOF NO ONE mid-copy
 * and mid-load, SLAVEOF another master mid-copy. Nodes compared key by key (compare-nodes.ts).
 */
import { expect } from 'chai';
import { keyCounts } from './helpers/compare-nodes';
import { NODE_KINDS, dataDbs } from './helpers/nodes';
import { ttlFormNames } from './helpers/sync-writers';
import { encodeArgs } from '../src/resp/request-parser';
import { RespClient } from './helpers/resp-client';
import { Cleanup, FAST_RETRY, Writers, expectNodesEqual, expectTtlKeysKept, parseInfo, proxyClient, replInfo, seed, sleep, waitCaughtUp, waitConfirmed, waitFor } from './replica-e2e-fixture';

for (const kind of NODE_KINDS) describe(kind, () => {
  describe('replica end to end: writers and SLAVEOF changes mid-sync', function () {
    this.timeout(60_000);
    const cleanup = Cleanup.perTest();

    it('writes on the master from before SLAVEOF until after confirmation reach the replica exactly', async () => {
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      await seed(masterNode, { bigKeys: true, bigSize: 20_000 });
      const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '256kb']);
      const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--sync-throttle', '1mb', '--sync-chunk-size', '64kb', '--sync-workers', '2']);
      const mc = cleanup.client(proxyClient(master));
      const rc = cleanup.client(proxyClient(replica));

      const writers = new Writers(master, kind).start();
      cleanup.add(writers, (w) => w.stop());
      await sleep(300);
      const offsetAtSlaveof = Number((await replInfo(mc)).master_repl_offset);
      expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
      const states = new Set<string>();
      await waitFor('sync_confirmed:1 with writers running', async () => {
        const info = await replInfo(rc);
        states.add(info.sync_state);
        return info.sync_confirmed === '1';
      }, 40_000, 20).catch(async (err: Error) => {
        throw new Error(`${err.message}\n${String(await rc.call('SYNCPROXY', 'STATUS'))}\n${replica.tail(20)}`);
      });
      const offsetAtConfirm = Number((await replInfo(mc)).master_repl_offset);
      await sleep(700); // writes keep arriving while the replica streams
      await writers.stop();
      expect(writers.errors, 'writer errors').to.deep.equal([]);
      expect(states).to.include('copying');
      // The writers really ran through the whole sync, and more after it.
      expect(offsetAtConfirm - offsetAtSlaveof).to.be.greaterThan(200);
      const finalOffset = await waitCaughtUp(mc, rc);
      expect(finalOffset).to.be.greaterThan(offsetAtConfirm);

      await expectNodesEqual(masterNode, replicaNode);
      expect(Object.keys(await keyCounts(masterNode)).map(Number)).to.include.members(dataDbs(kind));
      // Every TTL form was sent, and every key it set still has a TTL on both nodes.
      expect(new Set([...writers.ttlKeys].map((k) => k.split(':')[2]))).to.deep.equal(new Set(ttlFormNames(kind)));
      await expectTtlKeysKept(writers.ttlKeys, masterNode, replicaNode);
      const status = JSON.parse(String(await rc.call('SYNCPROXY', 'STATUS', 'JSON'))) as Record<string, unknown>;
      expect(status).to.include({ confirmed: true, state: 'streaming', snapshotChanges: 0 });
      expect(status.appliedOffset).to.equal(finalOffset);
    });

    it('every TTL form a client sends to the master proxy leaves the key on the node with that TTL (within 1 s)', async () => {
      const node = await cleanup.node(kind);
      const master = await cleanup.proxy(node);
      const mc = cleanup.client(proxyClient(master));
      const direct = cleanup.client(node.client());
      const forms: Array<[string, () => Promise<unknown>, number]> = [
        ['EXPIRE', () => mc.set('t:expire', 'v').then(() => mc.expire('t:expire', 1000)), 1_000_000],
        ['PEXPIRE', () => mc.set('t:pexpire', 'v').then(() => mc.pexpire('t:pexpire', 1_100_000)), 1_100_000],
        ['EXPIREAT', () => mc.set('t:expireat', 'v').then(() => mc.expireat('t:expireat', Math.floor(Date.now() / 1000) + 1200)), 1_200_000],
        ['PEXPIREAT', () => mc.set('t:pexpireat', 'v').then(() => mc.pexpireat('t:pexpireat', Date.now() + 1_300_000)), 1_300_000],
        ['SETEX', () => mc.setex('t:setex', 1400, 'v'), 1_400_000],
        ['PSETEX', () => mc.psetex('t:psetex', 1_500_000, 'v'), 1_500_000],
        ['SET EX', () => mc.set('t:set-ex', 'v', 'EX', 1600), 1_600_000],
        ['SET PX', () => mc.set('t:set-px', 'v', 'PX', 1_700_000), 1_700_000],
      ];
      const wrong: string[] = [];
      for (const [name, send, ttl] of forms) {
        await send();
        const key = `t:${name.toLowerCase().replace(' ', '-')}`;
        const [exists, pttl] = [await direct.exists(key), await direct.pttl(key)];
        if (exists !== 1 || Math.abs(pttl - ttl) > 1000) wrong.push(`${name}: EXISTS ${exists}, PTTL ${pttl} (expected ~${ttl})`);
      }
      expect(wrong, `on the ${kind} node behind the proxy`).to.deep.equal([]);
    });

    it('SET EXAT/PXAT/KEEPTTL and GETEX: applied and logged on redis-server; on Pika the node\'s error is passed through and nothing is logged', async () => {
      const node = await cleanup.node(kind);
      const master = await cleanup.proxy(node);
      const mc = cleanup.client(proxyClient(master));
      await mc.set('plain', 'v');
      const before = Number((await replInfo(mc)).master_repl_offset);
      const attempts: Array<[string, string[]]> = [
        ['exat', ['SET', 'ttl:exat', 'v', 'EXAT', String(Math.floor(Date.now() / 1000) + 1000)]],
        ['pxat', ['SET', 'ttl:pxat', 'v', 'PXAT', String(Date.now() + 1_000_000)]],
        ['keepttl', ['SET', 'plain', 'w', 'KEEPTTL']],
        ['getex', ['GETEX', 'plain', 'PX', '900000']],
      ];
      const replies: Record<string, string> = {};
      for (const [name, args] of attempts) replies[name] = await mc.call(args[0], ...args.slice(1)).then((r) => `ok:${String(r)}`, (e: Error) => `err:${e.message}`);
      const after = Number((await replInfo(mc)).master_repl_offset);
      if (kind === 'redis') {
        expect(replies).to.deep.equal({ exat: 'ok:OK', pxat: 'ok:OK', keepttl: 'ok:OK', getex: 'ok:w' });
        expect(after - before, 'four writes logged').to.equal(4);
        expect(await mc.pttl('plain')).to.be.within(899_000, 900_000);
      } else {
        for (const [name, reply] of Object.entries(replies)) expect(reply, name).to.match(/^err:ERR /);
        expect(after, 'nothing logged').to.equal(before);
        expect(await mc.exists('ttl:exat', 'ttl:pxat')).to.equal(0);
        expect(await mc.get('plain')).to.equal('v');
        expect(await mc.pttl('plain')).to.equal(-1);
      }
    });

    it('SLAVEOF NO ONE mid-copy: role master, state none, reads served from the untouched old data', async () => {
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      const reference = await cleanup.node(kind);
      await seed(masterNode, { bigKeys: true });
      // The replica node's own data, and an identical copy to compare it with afterwards.
      await Promise.all([seed(replicaNode, { prefix: 'old', strings: 200 }), seed(reference, { prefix: 'old', strings: 200 })]);
      // Files of 2 MB at 1 MB/s: NO ONE comes before the first file is verified, so nothing was
      // loaded yet (from the first loaded file on, NO ONE flushes the node: see the next test).
      const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '2mb']);
      const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--sync-throttle', '1mb', '--sync-chunk-size', '64kb']);
      const rc = cleanup.client(proxyClient(replica));

      expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
      await waitFor('copying with bytes read', async () => {
        const info = await replInfo(rc);
        return info.sync_state === 'copying' && Number(info.master_sync_read_bytes) > 0;
      });
      const refused = await rc.get('old:str:0:1').then(() => 'served', (e: Error) => e.message);
      expect(refused).to.match(/^MASTERDOWN full sync not confirmed: copying /);

      expect(await rc.call('SLAVEOF', 'NO', 'ONE')).to.equal('OK');
      const info = await replInfo(rc);
      expect(info).to.include({ role: 'master', sync_state: 'none', sync_confirmed: '0' });
      expect(await rc.call('ROLE')).to.deep.include('master');
      expect(await rc.get('old:str:0:1')).to.equal('value-0-1-x');
      expect(await rc.set('written-as-master', '1')).to.equal('OK');
      await cleanup.client(reference.client()).set('written-as-master', '1');
      // The aborted copy left nothing behind on the node, also a moment later.
      await sleep(500);
      await expectNodesEqual(reference, replicaNode);
      const status = JSON.parse(String(await rc.call('SYNCPROXY', 'STATUS', 'JSON'))) as { role: string; phases: Array<{ state: string }> };
      expect(status.role).to.equal('master');
      expect(status.phases.slice(-2).map((p) => p.state)).to.deep.equal(['copying', 'none']);
    });

    it('SLAVEOF NO ONE while loading flushes the partly loaded node (no partial data set is served)', async () => {
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      await seed(masterNode, { bigKeys: true, bigSize: 200_000, strings: 3000 });
      await seed(replicaNode, { prefix: 'old', strings: 50 });
      const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '1mb']);
      const replica = await cleanup.proxy(replicaNode, FAST_RETRY);
      const rc = cleanup.client(proxyClient(replica));
      const raw = cleanup.add(await RespClient.connect(replica.port), (c) => c.close());

      expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
      // A refused read and SLAVEOF NO ONE pipelined on one connection: NO ONE follows the read whose
      // -MASTERDOWN showed a load under way (files are loaded during the copy: `copying .. loaded N%`).
      const noOne = encodeArgs(['SLAVEOF', 'NO', 'ONE']);
      await waitFor('loading', async () => {
        const refused = await raw.text('GET', 'probe');
        if (!/ (loading \d+%|copying \d+% \(.*loaded [1-9]\d*%)/.test(refused)) return false;
        raw.send(noOne);
        return true;
      }, 30_000, 2);
      expect((await raw.read()).toString()).to.equal('+OK\r\n');
      const status = JSON.parse(String(await rc.call('SYNCPROXY', 'STATUS', 'JSON'))) as { phases: Array<{ state: string }> };
      const abortedIn = status.phases[status.phases.length - 2].state;
      expect(['copying', 'verifying', 'loading', 'catching_up'], `aborted in ${abortedIn}`).to.include(abortedIn);
      expect(parseInfo(await raw.text('INFO', 'replication'))).to.include({ role: 'master', sync_state: 'none' });
      // Neither the old data nor part of the master's: the node is empty, and reads are served.
      expect(await keyCounts(replicaNode)).to.deep.equal({});
      expect(await rc.get('s:str:0:1')).to.equal(null);
      expect(await rc.get('old:str:0:1')).to.equal(null);
    });

    it('SLAVEOF another master mid-copy aborts the first sync and ends equal to the second master', async () => {
      const masterA = await cleanup.node(kind);
      const masterB = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      await Promise.all([seed(masterA, { bigKeys: true, prefix: 'a' }), seed(masterB, { prefix: 'b', bigKeys: true, bigSize: 5000 })]);
      // Keys that exist on both masters with different values must end with B's.
      await cleanup.client(masterA.client()).set('shared', 'from A');
      await cleanup.client(masterB.client()).set('shared', 'from B');
      const proxyA = await cleanup.proxy(masterA, ['--snapshot-file-size', '256kb']);
      const proxyB = await cleanup.proxy(masterB, ['--snapshot-file-size', '256kb']);
      const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--sync-throttle', '1mb', '--sync-chunk-size', '64kb']);
      const rc = cleanup.client(proxyClient(replica));

      expect(await rc.call('SLAVEOF', '127.0.0.1', String(proxyA.port))).to.equal('OK');
      await waitFor('copying from A', async () => {
        const info = await replInfo(rc);
        return info.sync_state === 'copying' && Number(info.master_sync_read_bytes) > 0;
      });
      const snapshotA = (await replInfo(rc)).sync_snapshot_id;
      expect(await rc.call('SLAVEOF', '127.0.0.1', String(proxyB.port))).to.equal('OK');
      const info = await waitConfirmed(replica, rc);
      expect(info).to.include({ master_port: String(proxyB.port), sync_confirmed: '1' });
      expect(info.sync_snapshot_id).to.not.equal(snapshotA);
      expect(await rc.get('shared')).to.equal('from B');
      await expectNodesEqual(masterB, replicaNode);
      // A live write on B still arrives; nothing from A does.
      await cleanup.client(proxyClient(proxyB)).set('after', 'b');
      await cleanup.client(proxyClient(proxyA)).set('after-a', 'a');
      await waitCaughtUp(cleanup.client(proxyClient(proxyB)), rc);
      await expectNodesEqual(masterB, replicaNode);
    });
  });
});

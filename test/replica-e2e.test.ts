/**
 * The replica side end to end: real redis-servers behind real pika-sync-proxy CLI processes, a
 * replica proxy told SLAVEOF over RESP, and the replica node compared with the master node key by
 * key (test/helpers/compare-nodes.ts). Crash/resume and snapshot replacement: replica-resume.test.ts.
 */
import { expect } from 'chai';
import { keyCounts } from './helpers/compare-nodes';
import { encodeArgs } from '../src/resp/request-parser';
import { RespClient } from './helpers/resp-client';
import { Cleanup, FAST_RETRY, Writers, expectNodesEqual, parseInfo, proxyClient, replInfo, seed, sleep, waitCaughtUp, waitConfirmed, waitFor } from './replica-e2e-fixture';

const READONLY = "-READONLY You can't write against a read only replica.\r\n";
/** The order a full sync walks through (no backoff in these tests). */
const SYNC_ORDER = ['connecting', 'fetching_meta', 'copying', 'verifying', 'loading', 'catching_up', 'streaming'];

interface Sample {
  before: Record<string, string>;
  after: Record<string, string>;
  get: string;
  hgetall: string;
  scan: string;
  ping: string;
  role: string;
  client: string;
  status: string;
  write: string;
}

/** One pipelined round on a raw connection: INFO, reads, always-allowed commands, a write, INFO. */
async function sampleRound(c: RespClient): Promise<Sample> {
  const commands = [
    ['INFO', 'replication'], ['GET', 's:str:0:1'], ['HGETALL', 's:hash:1'], ['SCAN', '0'], ['PING'], ['ROLE'],
    ['CLIENT', 'GETNAME'], ['SYNCPROXY', 'STATUS', 'JSON'], ['SET', 'replica-write', 'x'], ['INFO', 'replication'],
  ];
  c.send(Buffer.concat(commands.map((args) => encodeArgs(args))));
  const replies: string[] = [];
  for (let i = 0; i < commands.length; i++) replies.push((await c.read()).toString('latin1'));
  const info = (r: string): Record<string, string> => parseInfo(r);
  return { before: info(replies[0]), get: replies[1], hgetall: replies[2], scan: replies[3], ping: replies[4], role: replies[5], client: replies[6], status: replies[7], write: replies[8], after: info(replies[9]) };
}

describe('replica end to end: SLAVEOF through real proxies', function () {
  this.timeout(60_000);
  let cleanup: Cleanup;

  beforeEach(() => {
    cleanup = new Cleanup();
  });
  afterEach(async () => {
    await cleanup.run();
  });

  for (const pikaProfile of [false, true]) {
    it(`full sync of every type, dbs 0/3/7, TTLs and two 100k-element keys leaves the nodes equal${pikaProfile ? ' (Pika profile)' : ''}`, async () => {
      const masterNode = await cleanup.redis({ pikaProfile });
      const replicaNode = await cleanup.redis({ pikaProfile });
      await seed(masterNode, { bigKeys: true });
      // Stale data on the replica node must be replaced, not merged.
      const stale = cleanup.client(replicaNode.client(3));
      await stale.set('stale:key', 'must disappear');
      await stale.hset('s:hash:1', 'stale-field', 'x');

      const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '1mb']);
      const replica = await cleanup.proxy(replicaNode, FAST_RETRY);
      const rc = cleanup.client(proxyClient(replica));
      expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
      const info = await waitConfirmed(replica, rc);
      expect(info).to.include({ role: 'slave', master_link_status: 'up', master_sync_in_progress: '0', sync_confirmed: '1' });

      await expectNodesEqual(masterNode, replicaNode);
      // Reads through the replica proxy are served from the synced node.
      const rc3 = cleanup.client(proxyClient(replica, 3));
      expect(await rc3.llen('s:big:list')).to.equal(100_000);
      expect(await rc.hlen('s:big:hash')).to.equal(100_000);
      expect(await rc3.exists('stale:key')).to.equal(0);
    });
  }

  it('refuses reads with -MASTERDOWN naming every state it passes through, serves them after confirmation, refuses writes', async () => {
    const masterNode = await cleanup.redis();
    const replicaNode = await cleanup.redis();
    await seed(masterNode, { bigKeys: true, strings: 3000 });
    const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '256kb']);
    // A throttled copy in small chunks so copying lasts a few seconds.
    const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--sync-throttle', '3mb', '--sync-chunk-size', '64kb', '--sync-workers', '2']);
    const raw = cleanup.add(await RespClient.connect(replica.port), (c) => c.close());

    const beforeSlaveof = await sampleRound(raw);
    expect(beforeSlaveof.ping).to.equal('+PONG\r\n');
    expect(beforeSlaveof.write).to.equal('+OK\r\n'); // a master accepts writes
    expect(beforeSlaveof.before).to.include({ role: 'master', sync_state: 'none' });
    expect(await raw.text('DEL', 'replica-write')).to.equal(':1\r\n');

    expect(await raw.text('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('+OK\r\n');
    const samples: Sample[] = [];
    let servedAfterConfirm = 0;
    const deadline = Date.now() + 40_000;
    while (servedAfterConfirm < 5) {
      if (Date.now() > deadline) throw new Error(`no confirmation in time; states seen: ${[...new Set(samples.map((s) => s.after.sync_state))].join(', ')}\n${replica.tail(20)}`);
      const s = await sampleRound(raw);
      samples.push(s);
      if (s.before.sync_confirmed === '1') servedAfterConfirm++;
      await new Promise((r) => setTimeout(r, 3));
    }

    const namedStates = new Set<string>();
    for (const s of samples) {
      const where = `sample: INFO before ${s.before.sync_state}/${s.before.sync_confirmed}, after ${s.after.sync_state}/${s.after.sync_confirmed}`;
      // Always allowed, in every state.
      expect(s.ping, where).to.equal('+PONG\r\n');
      expect(s.role, where).to.match(/^\*5\r\n\$5\r\nslave\r\n\$9\r\n127\.0\.0\.1\r\n:\d+\r\n/);
      expect(s.client, where).to.match(/^(\$-1|\$\d+)\r\n/);
      expect(JSON.parse(s.status.slice(s.status.indexOf('\r\n') + 2, -2)), where).to.include({ role: 'replica' });
      expect(s.write, where).to.equal(READONLY);
      expect(s.before.role, where).to.equal('slave');
      if (s.after.sync_confirmed !== '1') {
        // Unconfirmed: every read is refused with the state it is in.
        const lo = SYNC_ORDER.indexOf(s.before.sync_state);
        const hi = SYNC_ORDER.indexOf(s.after.sync_state);
        expect(lo, where).to.be.at.least(0);
        for (const reply of [s.get, s.hgetall, s.scan]) {
          const m = /^-MASTERDOWN full sync not confirmed: ([a-z_]+) (.*)\r\n$/.exec(reply);
          expect(m, `${where}: ${reply}`).to.not.equal(null);
          const named = m![1];
          namedStates.add(named);
          expect(SYNC_ORDER.indexOf(named), `${where}: ${reply}`).to.be.within(lo, hi);
          if (named === 'copying') expect(m![2], reply).to.match(/^\d+% \([\d.]+[KMG]?B\/[\d.]+[KMG]?B, files \d+\/\d+, (loaded \d+%, )?attempt 1\/5\)$/);
          if (named === 'loading') expect(m![2], reply).to.match(/^\d+% \(/);
        }
      }
      if (s.before.sync_confirmed === '1') {
        expect(s.get, where).to.equal('$11\r\nvalue-0-1-x\r\n');
        expect(s.hgetall, where).to.match(/^\*60\r\n/);
        expect(s.scan, where).to.match(/^\*2\r\n/);
      }
    }
    const infoStates = new Set(samples.flatMap((s) => [s.before.sync_state, s.after.sync_state]));
    // Files are loaded as soon as they are copied (sync-run.ts), so `loading` (the last files and
    // the count check) may be too short to sample; the load shows as `loaded N%` while copying.
    expect([...namedStates], `states named by -MASTERDOWN (INFO saw ${[...infoStates].join(', ')})`).to.include.members(['copying']);
    expect(samples.some((s) => / copying \d+% \(.*loaded \d+%, /.test(s.get)), 'a read refused while copying shows the load progress').to.equal(true);
    expect(samples.filter((s) => s.after.sync_confirmed !== '1').length).to.be.greaterThan(10);

    // Writes stay refused after confirmation, through every write path.
    const rc = cleanup.client(proxyClient(replica));
    for (const args of [['SET', 'k', 'v'], ['DEL', 's:str:0:1'], ['HSET', 's:hash:1', 'f', 'v'], ['INCR', 'n'], ['EXPIRE', 's:str:0:2', '5'], ['FLUSHALL'], ['FLUSHDB']]) {
      expect(await raw.text(...args), args.join(' ')).to.equal(READONLY);
    }
    const multi = await rc.multi().set('in-multi', '1').exec().then((r) => r, (e: Error) => e);
    expect(String(multi instanceof Error ? multi.message : JSON.stringify(multi))).to.match(/READONLY|EXECABORT/);
    expect(await rc.get('s:str:0:1')).to.equal('value-0-1-x');
    await expectNodesEqual(masterNode, replicaNode);
  });

  it('SLAVEOF argument errors, same master again, and pointing a proxy at itself', async () => {
    const masterNode = await cleanup.redis();
    const replicaNode = await cleanup.redis();
    await cleanup.client(masterNode.client()).set('k', 'v');
    const master = await cleanup.proxy(masterNode);
    const replica = await cleanup.proxy(replicaNode, FAST_RETRY);
    const raw = cleanup.add(await RespClient.connect(replica.port), (c) => c.close());

    expect(await raw.text('SLAVEOF', '127.0.0.1')).to.equal("-ERR wrong number of arguments for 'slaveof' command\r\n");
    expect(await raw.text('SLAVEOF', '127.0.0.1', '1', '2', '3')).to.equal("-ERR wrong number of arguments for 'slaveof' command\r\n");
    expect(await raw.text('REPLICAOF', '127.0.0.1')).to.equal("-ERR wrong number of arguments for 'replicaof' command\r\n");
    for (const port of ['notaport', '0', '65536', '-1', '12.5']) {
      expect(await raw.text('SLAVEOF', '127.0.0.1', port), port).to.equal('-ERR Invalid master port\r\n');
    }
    for (const host of ['127.0.0.1', 'localhost']) {
      expect(await raw.text('SLAVEOF', host, String(replica.port)), host).to.match(/^-ERR .*(own address|itself)/);
    }
    // None of the refused commands made it a replica.
    expect(parseInfo(await raw.text('INFO', 'replication'))).to.include({ role: 'master', sync_state: 'none' });
    expect(await raw.text('ROLE')).to.match(/^\*3\r\n\$6\r\nmaster\r\n/);

    expect(await raw.text('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('+OK\r\n');
    expect(await raw.text('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('+OK Already connected to specified master\r\n');
    expect(await raw.text('REPLICAOF', '127.0.0.1', String(master.port))).to.equal('+OK Already connected to specified master\r\n');
    const rc = cleanup.client(proxyClient(replica));
    await waitConfirmed(replica, rc);
    expect(await raw.text('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('+OK Already connected to specified master\r\n');
    expect(await rc.get('k')).to.equal('v');
    // A replica cannot be pointed at itself either, and keeps its master when refused.
    expect(await raw.text('SLAVEOF', '127.0.0.1', String(replica.port))).to.match(/^-ERR /);
    expect((await replInfo(rc)).master_port).to.equal(String(master.port));
  });

  it('writes on the master from before SLAVEOF until after confirmation reach the replica exactly', async () => {
    const masterNode = await cleanup.redis();
    const replicaNode = await cleanup.redis();
    await seed(masterNode, { bigKeys: true, bigSize: 20_000 });
    const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '256kb']);
    const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--sync-throttle', '1mb', '--sync-chunk-size', '64kb', '--sync-workers', '2']);
    const mc = cleanup.client(proxyClient(master));
    const rc = cleanup.client(proxyClient(replica));

    const writers = new Writers(master).start();
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
    expect(Object.keys(await keyCounts(masterNode)).map(Number)).to.include.members([0, 3, 7]);
    const status = JSON.parse(String(await rc.call('SYNCPROXY', 'STATUS', 'JSON'))) as Record<string, unknown>;
    expect(status).to.include({ confirmed: true, state: 'streaming', snapshotChanges: 0 });
    expect(status.appliedOffset).to.equal(finalOffset);
  });

  it('SLAVEOF NO ONE mid-copy: role master, state none, reads served from the untouched old data', async () => {
    const masterNode = await cleanup.redis();
    const replicaNode = await cleanup.redis();
    const reference = await cleanup.redis();
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
    const masterNode = await cleanup.redis();
    const replicaNode = await cleanup.redis();
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
    const masterA = await cleanup.redis();
    const masterB = await cleanup.redis();
    const replicaNode = await cleanup.redis();
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

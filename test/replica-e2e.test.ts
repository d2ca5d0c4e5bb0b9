/**
 * The replica side end to end on every node kind (NODE_KINDS: real redis-server and real Pika
 * 4.0.1) behind real pika-sync-proxy CLI processes: a replica proxy told SLAVEOF over RESP, reads
 * gated until confirmation, and the replica node compared with the master node key by key
 * (test/helpers/compare-nodes.ts). Writers during the sync and SLAVEOF changes mid-sync:
 * replica-e2e-streaming.test.ts. Crash/resume and snapshot replacement: replica-resume.test.ts.
 */
import { expect } from 'chai';
import type Redis from 'ioredis';
import { NODE_KINDS, TestNode, dataDbs } from './helpers/nodes';
import { encodeArgs } from '../src/resp/request-parser';
import { RespClient } from './helpers/resp-client';
import { Cleanup, FAST_RETRY, bigKeyDbs, expectNodesEqual, parseInfo, proxyClient, replInfo, seed, syncStatus, waitCaughtUp, waitConfirmed, waitFor } from './replica-e2e-fixture';

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

for (const kind of NODE_KINDS) describe(kind, () => {
  describe('replica end to end: SLAVEOF through real proxies', function () {
    this.timeout(60_000);
    const cleanup = Cleanup.perTest();

    it('full sync of every type, every data db, TTLs and two 100k-element keys leaves the nodes equal', async () => {
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      await seed(masterNode, { bigKeys: true });
      // Stale data on the replica node must be replaced, not merged.
      const lastDb = dataDbs(kind).at(-1)!;
      const stale = cleanup.client(replicaNode.client(lastDb));
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
      const big = bigKeyDbs(kind);
      expect(await cleanup.client(proxyClient(replica, big.list)).llen('s:big:list')).to.equal(100_000);
      expect(await cleanup.client(proxyClient(replica, big.hash)).hlen('s:big:hash')).to.equal(100_000);
      expect(await cleanup.client(proxyClient(replica, lastDb)).exists('stale:key')).to.equal(0);
    });

    it('refuses reads with -MASTERDOWN naming every state it passes through, serves them after confirmation, refuses writes', async () => {
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
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
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      await cleanup.client(masterNode.client()).set('k', 'v');
      const master = await cleanup.proxy(masterNode);
      const replica = await cleanup.proxy(replicaNode, FAST_RETRY);
      const raw = cleanup.add(await RespClient.connect(replica.port), (c) => c.close());

      expect(await raw.text('SLAVEOF', '127.0.0.1')).to.equal("-ERR wrong number of arguments for 'slaveof' command\r\n");
      expect(await raw.text('SLAVEOF', '127.0.0.1', '1', '2', '3')).to.equal("-ERR wrong number of arguments for 'slaveof' command\r\n");
      expect(await raw.text('REPLICAOF', '127.0.0.1')).to.equal("-ERR wrong number of arguments for 'replicaof' command\r\n");
      for (const port of ['notaport', '65536', '-1', '12.5', '']) {
        expect(await raw.text('SLAVEOF', '127.0.0.1', port), port).to.equal('-ERR Invalid master port\r\n');
      }
      for (const host of ['127.0.0.1', 'localhost']) {
        expect(await raw.text('SLAVEOF', host, String(replica.port)), host).to.match(/^-ERR .*(own address|itself)/);
      }
      // None of the refused commands made it a replica.
      expect(parseInfo(await raw.text('INFO', 'replication'))).to.include({ role: 'master', sync_state: 'none' });
      // Port 0 is in Redis's range (0-65535): taken, and the sync says why it cannot connect.
      expect(await raw.text('SLAVEOF', '127.0.0.1', '0')).to.equal('+OK\r\n');
      await waitFor('port 0 reported unreachable', async () => /MASTER_UNREACHABLE: master 127\.0\.0\.1:0/.test(await raw.text('SYNCPROXY', 'STATUS')));
      expect(await raw.text('GET', 'k')).to.match(/^-MASTERDOWN /);
      expect(await raw.text('SLAVEOF', 'NO', 'ONE')).to.equal('+OK\r\n');
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
  });
});

describe('replica end to end: Pika-profile redis-server (commands Pika lacks renamed away)', function () {
  this.timeout(60_000);
  const cleanup = Cleanup.perTest();

  it('full sync of every type, dbs 0/3/7, TTLs and big keys leaves the nodes equal without DUMP/RESTORE', async () => {
    const masterNode = await cleanup.redis({ pikaProfile: true });
    const replicaNode = await cleanup.redis({ pikaProfile: true });
    await seed(masterNode, { bigKeys: true, bigSize: 20_000 });
    const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '1mb']);
    const replica = await cleanup.proxy(replicaNode, FAST_RETRY);
    const rc = cleanup.client(proxyClient(replica));
    expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
    expect(await waitConfirmed(replica, rc)).to.include({ sync_confirmed: '1' });
    await expectNodesEqual(masterNode, replicaNode);
  });
});

// Pika only: Pika 4.0.1's XRANGE gives back other ids than the stream was written with, so the
// proxy must refuse to copy a stream from it, explicitly, rather than confirm a different stream.
describe('replica end to end: a stream on a Pika master', function () {
  this.timeout(60_000);
  const cleanup = Cleanup.perTest();

  it('fails the sync with UNSUPPORTED_DATA (not retried, never confirmed), reads stay refused', async () => {
    const masterNode = await cleanup.node('pika');
    const replicaNode = await cleanup.node('pika');
    await seed(masterNode, { strings: 50, streams: true });
    const master = await cleanup.proxy(masterNode);
    const replica = await cleanup.proxy(replicaNode, FAST_RETRY);
    const rc = cleanup.client(proxyClient(replica));
    expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
    const status = await waitFor('sync failed', async () => {
      const s = await syncStatus(rc);
      return s.state === 'failed' ? s : undefined;
    });
    expect(String(status.lastError)).to.match(/UNSUPPORTED_DATA/).and.match(/stream/);
    expect(status.confirmed).to.equal(false);
    expect(await replInfo(rc)).to.include({ sync_confirmed: '0' });
    const read = await rc.get('s:str:0:1').then((v) => `served ${String(v)}`, (e: Error) => e.message);
    expect(read).to.match(/^MASTERDOWN .*UNSUPPORTED_DATA/);
  });
});

// Redis: a stream's consumer groups, consumers, pending entries and last id travel with the
// snapshot (src/source/stream-state.ts). Without them a replica answered NOGROUP and failed to
// replay the master's next XREADGROUP, after a sync that had confirmed.
describe('replica end to end: streams with consumer groups on a redis master', function () {
  this.timeout(60_000);
  const cleanup = Cleanup.perTest();

  /** A stream's state as XINFO/XPENDING show it, without what depends on the clock or the layout. */
  async function streamState(node: TestNode, key: string): Promise<unknown> {
    const c = node.client();
    try {
      const pairs = (reply: unknown): Record<string, unknown> => {
        const list = reply as unknown[];
        const out: Record<string, unknown> = {};
        for (let i = 0; i + 1 < list.length; i += 2) out[String(list[i])] = list[i + 1];
        return out;
      };
      const info = pairs(await c.call('XINFO', 'STREAM', key));
      const groups = [];
      for (const g of (await c.call('XINFO', 'GROUPS', key)) as unknown[]) {
        const group = pairs(g);
        const consumers = ((await c.call('XINFO', 'CONSUMERS', key, String(group.name))) as unknown[]).map((x) => {
          const consumer = pairs(x);
          return [consumer.name, consumer.pending];
        });
        const pending = ((await c.call('XPENDING', key, String(group.name), '-', '+', '1000')) as unknown[][]).map(([id, consumer, , deliveries]) => [id, consumer, deliveries]);
        groups.push({ name: group.name, consumers, pending, lastDelivered: group['last-delivered-id'], entriesRead: group['entries-read'], lag: group.lag, count: group.consumers });
      }
      const kept = ['length', 'last-generated-id', 'max-deleted-entry-id', 'entries-added', 'groups', 'first-entry', 'last-entry'];
      return { stream: Object.fromEntries(kept.map((f) => [f, info[f]])), groups, entries: await c.xrange(key, '-', '+') };
    } finally {
      c.disconnect();
    }
  }

  async function expectStreamsEqual(master: TestNode, replica: TestNode, keys: string[]): Promise<void> {
    for (const key of keys) expect(await streamState(replica, key), key).to.deep.equal(await streamState(master, key));
  }

  /** The replica caught up, still streaming, its streams equal to the master's, VERIFY ok. */
  async function expectStreamingExact(masterNode: TestNode, replicaNode: TestNode, mc: Redis, rc: Redis, keys: string[]): Promise<void> {
    await waitCaughtUp(mc, rc);
    expect((await syncStatus(rc)).state).to.equal('streaming');
    await expectStreamsEqual(masterNode, replicaNode, keys);
    expect(String(await rc.call('SYNCPROXY', 'VERIFY'))).to.match(/result: ok/);
  }

  it('groups, consumers, pending entries (with delivery counts), last ids and empty streams reach the replica; the write log then goes on', async () => {
    const { masterNode, replicaNode, master, replica, mc, rc } = await cleanup.pair('redis');
    for (let i = 1; i <= 6; i++) await mc.xadd('orders', `${i}-1`, 'item', `i${i}`);
    await mc.xdel('orders', '6-1'); // the last id stays 6-1, one entry deleted
    await mc.xgroup('CREATE', 'orders', 'billing', '0');
    await mc.xgroup('CREATE', 'orders', 'audit', '$');
    await mc.call('XREADGROUP', 'GROUP', 'billing', 'alice', 'COUNT', '2', 'STREAMS', 'orders', '>');
    await mc.call('XREADGROUP', 'GROUP', 'billing', 'bob', 'COUNT', '1', 'STREAMS', 'orders', '>');
    await mc.call('XGROUP', 'CREATECONSUMER', 'orders', 'billing', 'carol');
    await mc.call('XCLAIM', 'orders', 'billing', 'bob', '0', '1-1'); // 1-1 now bob's, delivered twice
    await mc.call('XACK', 'orders', 'billing', '2-1');
    await mc.call('XGROUP', 'CREATE', 'jobs', 'workers', '$', 'MKSTREAM'); // empty, with a group
    await mc.xadd('gone', '9-9', 'f', 'v');
    await mc.xdel('gone', '9-9'); // empty, no group, last id 9-9
    await mc.xadd('plain', '1-1', 'f', 'v'); // no group
    const keys = ['orders', 'jobs', 'gone', 'plain'];

    expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
    expect(await waitConfirmed(replica, rc)).to.include({ sync_confirmed: '1' });
    await expectStreamsEqual(masterNode, replicaNode, keys);

    // The log's group commands replay on the replica's node.
    await mc.call('XREADGROUP', 'GROUP', 'billing', 'carol', 'COUNT', '1', 'STREAMS', 'orders', '>');
    await mc.call('XACK', 'orders', 'billing', '1-1');
    await mc.xadd('jobs', '5-5', 'task', 't');
    await mc.call('XREADGROUP', 'GROUP', 'workers', 'w1', 'STREAMS', 'jobs', '>');
    await expectStreamingExact(masterNode, replicaNode, mc, rc, keys);
  });

  it("pending entries keep their delivery time on the replica (idle times go on growing); XAUTOCLAIM and XCLAIM with a min-idle-time claim there what they claimed on the master, whatever the replica's idle times", async () => {
    const { masterNode, replicaNode, master, replica, mc, rc } = await cleanup.pair('redis');
    for (let i = 1; i <= 4; i++) await mc.xadd('jobs', `${i}-1`, 'task', `t${i}`);
    await mc.xgroup('CREATE', 'jobs', 'workers', '0');
    await mc.call('XREADGROUP', 'GROUP', 'workers', 'w1', 'COUNT', '3', 'STREAMS', 'jobs', '>');
    await new Promise((r) => setTimeout(r, 2000));
    expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
    expect(await waitConfirmed(replica, rc)).to.include({ sync_confirmed: '1' });
    // Delivered 2 s before the sync began: as idle on the replica's node as on the master's.
    const direct = cleanup.client(replicaNode.client());
    const idle = ((await direct.call('XPENDING', 'jobs', 'workers', '-', '+', '10')) as unknown[][]).map((p) => Number(p[2]));
    expect(idle).to.have.length(3);
    for (const ms of idle) expect(ms).to.be.at.least(1900);
    // A replica whose idle times differ (another clock, a later load): reset on its node directly
    // (same owner, same delivery count). The claims below are then idle enough only on the master.
    await direct.call('XCLAIM', 'jobs', 'workers', 'w1', '0', '1-1', '2-1', '3-1', 'IDLE', '0', 'JUSTID');
    const auto = (await mc.call('XAUTOCLAIM', 'jobs', 'workers', 'w2', '1500', '0-0', 'COUNT', '2')) as unknown[];
    expect((auto[1] as unknown[]).length, 'the master claimed two entries').to.equal(2);
    expect(await mc.call('XCLAIM', 'jobs', 'workers', 'w3', '1500', '3-1', 'JUSTID')).to.deep.equal(['3-1']);
    await expectStreamingExact(masterNode, replicaNode, mc, rc, ['jobs']);

    // The delivery time of a claim (here IDLE: a minute before the master's now) and of an
    // XREADGROUP reaches the replica as the master set it, even when the replica applies them
    // late (its node stopped for 1.5 s).
    process.kill(replicaNode.pid!, 'SIGSTOP');
    try {
      expect(await mc.call('XCLAIM', 'jobs', 'workers', 'w4', '0', '1-1', 'IDLE', '60000', 'JUSTID')).to.deep.equal(['1-1']);
      expect(await mc.call('XREADGROUP', 'GROUP', 'workers', 'w5', 'COUNT', '1', 'STREAMS', 'jobs', '>')).to.deep.equal([['jobs', [['4-1', ['task', 't4']]]]]);
      await new Promise((r) => setTimeout(r, 1500));
    } finally {
      process.kill(replicaNode.pid!, 'SIGCONT');
    }
    await expectStreamingExact(masterNode, replicaNode, mc, rc, ['jobs']);
    const masterDirect = cleanup.client(masterNode.client());
    const idleOf = async (c: Redis, id: string): Promise<number> => Number(((await c.call('XPENDING', 'jobs', 'workers', id, id, '1')) as unknown[][])[0][2]);
    for (const [id, least] of [['1-1', 60_000], ['4-1', 1500]] as const) {
      const [onMaster, onReplica] = await Promise.all([idleOf(masterDirect, id), idleOf(direct, id)]);
      expect(onMaster, id).to.be.at.least(least);
      expect(Math.abs(onReplica - onMaster), `${id}: idle ${onReplica} ms on the replica, ${onMaster} ms on the master`).to.be.below(500);
    }
  });

  it('XREADGROUP BLOCK woken by another client\'s XADD: the replica gets the same pending entry, with its delivery time', async () => {
    const { masterNode, replicaNode, master, replica, mc, rc } = await cleanup.pair('redis');
    await mc.xgroup('CREATE', 'inbox', 'readers', '$', 'MKSTREAM');
    expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
    expect(await waitConfirmed(replica, rc)).to.include({ sync_confirmed: '1' });
    const reader = cleanup.client(proxyClient(master));
    const woken = reader.call('XREADGROUP', 'GROUP', 'readers', 'r1', 'BLOCK', '10000', 'STREAMS', 'inbox', '>');
    await new Promise((r) => setTimeout(r, 300)); // the reader is parked
    await mc.xadd('inbox', '7-1', 'msg', 'hello');
    expect(await woken).to.deep.equal([['inbox', [['7-1', ['msg', 'hello']]]]]);
    await expectStreamingExact(masterNode, replicaNode, mc, rc, ['inbox']);
    const pending = async (c: Redis): Promise<unknown[][]> => (await c.call('XPENDING', 'inbox', 'readers', '-', '+', '10')) as unknown[][];
    const [onMaster, onReplica] = await Promise.all([pending(cleanup.client(masterNode.client())), pending(cleanup.client(replicaNode.client()))]);
    expect(onReplica.map((p) => [p[0], p[1], p[3]])).to.deep.equal([['7-1', 'r1', 1]]);
    expect(Math.abs(Number(onReplica[0][2]) - Number(onMaster[0][2]))).to.be.below(500);
  });

  it('XADD and XTRIM with approximate trimming (~) leave the replica with the entries the master kept', async () => {
    const { masterNode, replicaNode, master, replica, mc, rc } = await cleanup.pair('redis');
    // Built with approximate trims and a few deletions: the master's node layout then differs
    // from the one a replica builds from the snapshot, and `~` trims differently on each.
    const build = mc.pipeline();
    for (let i = 1; i <= 1037; i++) build.xadd('capped', 'MAXLEN', '~', '100', `${i}-1`, 'f', String(i));
    await build.exec();
    const holes = mc.pipeline();
    for (let i = 950; i <= 1037; i += 3) holes.xdel('capped', `${i}-1`);
    await holes.exec();
    expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
    expect(await waitConfirmed(replica, rc)).to.include({ sync_confirmed: '1' });
    for (let i = 1038; i <= 1300; i++) await mc.xadd('capped', 'MAXLEN', '~', '100', `${i}-1`, 'f', String(i));
    await mc.call('XTRIM', 'capped', 'MAXLEN', '~', '50');
    // Inside MULTI too; the client's EXEC reply has no element for the proxy's read.
    const exec = await mc.multi().xadd('capped', 'MAXLEN', '~', '60', '2000-1', 'f', 'x').xlen('capped').exec();
    expect(exec).to.have.length(2);
    expect(exec![0]).to.deep.equal([null, '2000-1']);
    await expectStreamingExact(masterNode, replicaNode, mc, rc, ['capped']);
  });

  it('a pending entry whose stream entry was deleted fails the sync with UNSUPPORTED_DATA (no confirmation without it)', async () => {
    const { master, mc, rc } = await cleanup.pair('redis');
    await mc.set('plain', 'v');
    await mc.xadd('orders', '1-1', 'item', 'a');
    await mc.xadd('orders', '2-1', 'item', 'b');
    await mc.xgroup('CREATE', 'orders', 'billing', '0');
    await mc.call('XREADGROUP', 'GROUP', 'billing', 'alice', 'STREAMS', 'orders', '>');
    await mc.xdel('orders', '1-1'); // still pending for alice
    expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
    const status = await waitFor('sync failed', async () => {
      const s = await syncStatus(rc);
      return s.state === 'failed' ? s : undefined;
    });
    expect(String(status.lastError)).to.match(/UNSUPPORTED_DATA/).and.match(/"orders"/).and.match(/pending entry 1-1/);
    expect(status.confirmed).to.equal(false);
    const read = await rc.get('plain').then((v) => `served ${String(v)}`, (e: Error) => e.message);
    expect(read).to.match(/^MASTERDOWN .*UNSUPPORTED_DATA/);
  });
});

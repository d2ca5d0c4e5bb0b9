/**
 * Pika 4.0.1's differences from Redis (DESIGN.md §6, ../shared/pika/README.md), each shown against
 * a real Pika node behind the proxy: what the probe learns, one database, one-pair HSET, PTTL of
 * a missing key, a stale DBSIZE that the sync's counts never rely on, and big keys (a million
 * elements each in a hash, a list and a zset) copied exactly.
 */
import { expect } from 'chai';
import type Redis from 'ioredis';
import { Cleanup, FAST_RETRY, parseInfo, proxyClient, replInfo, syncStatus, waitCaughtUp, waitConfirmed, waitFor } from './replica-e2e-fixture';

const BIG = 1_000_000;
const PAGE = 1000;

async function scanCount(node: Redis): Promise<number> {
  let cursor = '0';
  let n = 0;
  do {
    const [next, keys] = await node.scan(cursor, 'COUNT', 1000);
    cursor = next;
    n += keys.length;
  } while (cursor !== '0');
  return n;
}

describe('Pika 4.0.1 differences, each handled (real Pika behind the proxy)', function () {
  this.timeout(300_000);
  const cleanup = Cleanup.perTest();

  it('the probe learns them; SELECT 1, multi-pair HSET and PTTL of a missing key answer as the node does, and log nothing', async () => {
    const node = await cleanup.node('pika');
    const proxy = await cleanup.proxy(node);
    const c = cleanup.client(proxyClient(proxy));
    const direct = cleanup.client(node.client());
    const profile = await waitFor('the node profile', async () => {
      const p = parseInfo(String(await c.call('INFO', 'proxy'))).node_profile;
      return p === 'not probed yet' ? undefined : p;
    });
    expect(profile).to.match(/databases=1,/).and.match(/hset_pairs=0/).and.match(/stream_type=streams/).and.match(/dbsize_live=0/).and.match(/expiry=pexpire,/);
    const offset = async (): Promise<string> => (await replInfo(c)).master_repl_offset;
    const before = await offset();

    expect(await c.select(1).catch((e: Error) => e.message)).to.equal('ERR DB index is out of range');
    expect(await c.hset('h', 'a', '1', 'b', '2').catch((e: Error) => e.message)).to.match(/wrong number of arguments for 'hset'/);
    expect(await c.exists('h')).to.equal(0);
    expect(await c.pttl('missing')).to.equal(await direct.pttl('missing'));
    expect(await c.ttl('missing')).to.equal(await direct.ttl('missing'));
    expect(await offset(), 'refused writes are not logged').to.equal(before);
    expect(await c.hmset('h', 'a', '1', 'b', '2')).to.equal('OK');
    expect(Number(await offset())).to.equal(Number(before) + 1);
  });

  it("DBSIZE is stale on Pika: the sync counts by SCAN and by content, and confirms exactly", async () => {
    const { masterNode, replicaNode, master, replica, mc, rc } = await cleanup.pair('pika');
    const pipeline = mc.pipeline();
    for (let i = 0; i < 2000; i++) pipeline.set(`k:${i}`, `v${i}`);
    await pipeline.exec();
    const staleMaster = await cleanup.client(masterNode.client()).dbsize();
    expect(staleMaster, 'Pika has not counted the new keys yet').to.be.lessThan(2000);
    await rc.call('SLAVEOF', '127.0.0.1', String(master.port));
    await waitConfirmed(replica, rc);
    const status = await syncStatus(rc);
    expect((status.load as { dbs: Array<Record<string, number>> }).dbs[0]).to.include({ records: 2000, distinctKeys: 2000, nodeKeys: 2000 });
    expect(status.contentCheck).to.include({ keys: 2000, differingKeys: 0 });
    expect(await scanCount(cleanup.client(replicaNode.client()))).to.equal(2000);
  });

  it('big keys: a million elements each in a hash, a list and a zset are copied exactly', async () => {
    const masterNode = await cleanup.node('pika');
    const replicaNode = await cleanup.node('pika');
    const m = cleanup.client(masterNode.client());
    for (let start = 0; start < BIG; start += 100 * PAGE) {
      const p = m.pipeline();
      for (let page = start; page < start + 100 * PAGE; page += PAGE) {
        const fields: string[] = [];
        const members: Array<string | number> = [];
        const items: string[] = [];
        for (let i = page; i < page + PAGE; i++) {
          fields.push(`f${i}`, `v${i}`);
          members.push(i / 4, `m${i}`);
          items.push(`e${i}`);
        }
        p.hmset('big:hash', ...fields);
        p.zadd('big:zset', ...members);
        p.rpush('big:list', ...items);
      }
      await p.exec();
    }
    await m.expire('big:hash', 3600);
    const master = await cleanup.proxy(masterNode);
    const replica = await cleanup.proxy(replicaNode, FAST_RETRY);
    const rc = cleanup.client(proxyClient(replica));
    await rc.call('SLAVEOF', '127.0.0.1', String(master.port));
    await waitConfirmed(replica, rc, 240_000);
    const r = cleanup.client(replicaNode.client());
    expect(await r.hlen('big:hash')).to.equal(BIG);
    expect(await r.llen('big:list')).to.equal(BIG);
    expect(await r.zcard('big:zset')).to.equal(BIG);
    expect(await r.hget('big:hash', 'f999999')).to.equal('v999999');
    expect(await r.lindex('big:list', 500_000)).to.equal('e500000');
    expect(await r.zscore('big:zset', 'm999999')).to.equal('249999.75');
    expect(await r.pttl('big:hash')).to.be.within(3_500_000, 3_600_000);
    const status = await syncStatus(rc);
    expect(status.proof).to.deep.include({ contentMatched: true });
    expect(status.contentCheck).to.include({ keys: 3, differingKeys: 0 });
    expect(String(await rc.call('SYNCPROXY', 'VERIFY'))).to.match(/^result: ok$/m);
  });

  it("Pika's own writes: DELVX reaches the replica (as DEL); those that cannot be logged exactly are refused", async () => {
    const { replicaNode, master, replica, mc, rc } = await cleanup.pair('pika');
    await mc.set('dv:match', 'v');
    await mc.set('dv:other', 'v');
    await rc.call('SLAVEOF', '127.0.0.1', String(master.port));
    await waitConfirmed(replica, rc);

    expect(await mc.call('DELVX', 'dv:match', 'v')).to.equal(1);
    expect(await mc.call('DELVX', 'dv:other', 'not-its-value'), 'Pika: -1 for another value').to.equal(-1);
    const before = (await replInfo(mc)).master_repl_offset;
    const at = String(Math.floor(Date.now() / 1000) + 3600);
    for (const command of [['PKPATTERNMATCHDEL', 'dv:*'], ['SLOTSDEL', '0'], ['PKSETEXAT', 'dv:other', at, 'new']]) {
      const answer = await mc.call(command[0], ...command.slice(1)).then((r) => `answered ${String(r)}`, (e: Error) => e.message);
      expect(answer, command[0]).to.match(new RegExp(`'${command[0].toLowerCase()}' is not supported through pika-sync-proxy`));
    }
    expect((await replInfo(mc)).master_repl_offset, 'refused: nothing logged').to.equal(before);
    expect(await mc.get('dv:other'), 'refused: nothing changed').to.equal('v');

    await waitCaughtUp(mc, rc);
    const replicaDirect = cleanup.client(replicaNode.client());
    expect(await replicaDirect.exists('dv:match')).to.equal(0);
    expect(await replicaDirect.get('dv:other')).to.equal('v');
    const verify = String(await rc.call('SYNCPROXY', 'VERIFY'));
    expect(verify, verify).to.match(/^result: ok$/m);
  });
});

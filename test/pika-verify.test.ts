/**
 * The real-Pika issue end to end: a master and a replica proxy, each in front of a real node,
 * the repro (keys with a TTL before the sync and written while streaming), the node
 * profile the proxies learn, the proof by content after the load and SYNCPROXY VERIFY online.
 * `--node-expiry pexpireat` makes a replica emit expiries as the old code did (PEXPIREAT, which
 * Pika 4.0.1 answers :1 and deletes the key): the proofs must then refuse to confirm and name the
 * keys, never report success.
 */
import { expect } from 'chai';
import type Redis from 'ioredis';
import { NODE_KINDS, NodeKind } from './helpers/nodes';
import type { ProxyProcess } from './helpers/proxy-process';
import { Cleanup, FAST_RETRY, Writers, parseInfo, sleep, proxyClient, replInfo, syncStatus, waitCaughtUp, waitConfirmed, waitFor } from './replica-e2e-fixture';

const EXPECTED_PROFILE: Record<NodeKind, RegExp[]> = {
  pika: [/product=pika/, /expiry=pexpire,/, /hset_pairs=0/, /stream_type=streams/, /streams_exact=0/, /dbsize_live=0/, /databases=1,/, /dump_restore=0/, /resp3=0/],
  redis: [/product=redis/, /expiry=pexpireat/, /set_pxat=1/, /hset_pairs=1/, /missing_key_pttl=-2/, /stream_type=stream,/, /streams_exact=1/, /dbsize_live=1/, /databases=16/, /dump_restore=1/, /resp3=1/],
};

/** Every TTL form a client may send, each on its own key; `plain` has none. */
async function writeTtlKeys(mc: Redis, prefix: string, kind: NodeKind): Promise<string[]> {
  // Every form, each with about an hour to live (EXPIREAT/PEXPIREAT rounded to the second).
  const at = Math.floor(Date.now() / 1000) + 3600;
  await mc.setex(`${prefix}:setex`, 3600, 'v');
  await mc.psetex(`${prefix}:psetex`, 3_600_000, 'v');
  await mc.set(`${prefix}:ex`, 'v', 'EX', 3600);
  await mc.set(`${prefix}:px`, 'v', 'PX', 3_600_000);
  await mc.set(`${prefix}:expire`, 'v');
  await mc.expire(`${prefix}:expire`, 3600);
  await mc.set(`${prefix}:pexpire`, 'v');
  await mc.pexpire(`${prefix}:pexpire`, 3_600_000);
  await mc.set(`${prefix}:expireat`, 'v');
  await mc.expireat(`${prefix}:expireat`, at);
  await mc.hmset(`${prefix}:hash`, 'f', 'v', 'g', 'w');
  await mc.expire(`${prefix}:hash`, 3600);
  // Through the proxy PEXPIREAT keeps its meaning on Pika too (sent to the node as PEXPIRE).
  await mc.set(`${prefix}:pexpireat`, 'v');
  expect(await mc.pexpireat(`${prefix}:pexpireat`, at * 1000)).to.equal(1);
  const keys = ['setex', 'psetex', 'ex', 'px', 'expire', 'pexpire', 'expireat', 'pexpireat', 'hash'].map((s) => `${prefix}:${s}`);
  if (kind === 'redis') {
    await mc.set(`${prefix}:pxat`, 'v', 'PXAT', at * 1000);
    keys.push(`${prefix}:pxat`);
  } else {
    // Pika refuses SET ... PXAT: the client gets the node's error and nothing is logged.
    expect(await mc.set(`${prefix}:pxat`, 'v', 'PXAT', at * 1000).catch((e: Error) => e.message)).to.match(/syntax error/i);
  }
  return keys;
}

async function expectTtlsOnNode(node: Redis, keys: string[]): Promise<void> {
  for (const key of keys) {
    const ttl = await node.pttl(key);
    expect(ttl, `PTTL of ${key} on the replica node`).to.be.within(3_590_000, 3_600_000);
  }
}

for (const kind of NODE_KINDS) {
  describe(`real ${kind} behind both proxies: exact TTLs, proof by content, SYNCPROXY VERIFY`, function () {
    this.timeout(90_000);
    const cleanup = Cleanup.perTest();

    async function pair(replicaArgs: string[] = []): Promise<{ mc: Redis; rc: Redis; replicaNode: Redis; master: ProxyProcess; replica: ProxyProcess }> {
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      const master = await cleanup.proxy(masterNode);
      const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, ...replicaArgs]);
      return { mc: cleanup.client(proxyClient(master)), rc: cleanup.client(proxyClient(replica)), replicaNode: cleanup.client(replicaNode.client()), master, replica };
    }

    it("the issue's repro: every key with a TTL, before and while streaming, is on the replica node with its TTL; VERIFY finds 0 differences", async () => {
      const { mc, rc, replicaNode, master, replica } = await pair();
      const profile = await waitFor('the node profile', async () => {
        const p = parseInfo(String(await mc.call('INFO', 'proxy'))).node_profile;
        return p === 'not probed yet' ? undefined : p;
      });
      for (const re of EXPECTED_PROFILE[kind]) expect(profile).to.match(re);
      await mc.set('plain', 'v');
      const before = await writeTtlKeys(mc, 'before', kind);
      expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
      await waitConfirmed(replica, rc);
      const status = await syncStatus(rc);
      expect(status.proof).to.deep.include({ contentMatched: true, countsMatched: true });
      expect(status.contentCheck).to.include({ keys: before.length + 1, differingKeys: 0 });
      expect(String(status.nodeProfile)).to.match(EXPECTED_PROFILE[kind][1]);
      const during = await writeTtlKeys(mc, 'during', kind);
      await waitCaughtUp(mc, rc);
      expect(await replicaNode.get('plain')).to.equal('v');
      await expectTtlsOnNode(replicaNode, [...before, ...during]);

      const verify = String(await rc.call('SYNCPROXY', 'VERIFY'));
      expect(verify).to.match(/^result: ok$/m).and.match(/^mismatched_keys: 0$/m).and.match(new RegExp(`^keys: ${before.length + during.length + 1}$`, 'm'));
      const info = await replInfo(rc);
      expect(info).to.include({ verify_last_result: 'ok', verify_mismatched_keys: '0', sync_confirmed: '1' });
      expect(Number(info.verify_last_at)).to.be.closeTo(Date.now() / 1000, 30);
    });

    it('SYNCPROXY VERIFY while writers keep writing every type and TTL form to the master: 0 differences, the replica keeps following', async () => {
      const { mc, rc, master, replica } = await pair();
      await writeTtlKeys(mc, 'seed', kind);
      await rc.call('SLAVEOF', '127.0.0.1', String(master.port));
      await waitConfirmed(replica, rc);
      const writers = new Writers(master, kind).start();
      cleanup.add(writers, (w) => w.stop());
      await sleep(300);
      const opsBefore = writers.ops;
      const first = String(await rc.call('SYNCPROXY', 'VERIFY'));
      const second = String(await rc.call('SYNCPROXY', 'VERIFY'));
      const opsDuring = writers.ops - opsBefore;
      await writers.stop();
      expect(writers.errors).to.deep.equal([]);
      expect(opsDuring, 'writes went on during the verifications').to.be.greaterThan(50);
      for (const v of [first, second]) expect(v, v).to.match(/^result: ok$/m).and.match(/^mismatched_keys: 0$/m);
      const offsets = [first, second].map((v) => Number(/^log_offset: (\d+)$/m.exec(v)?.[1]));
      expect(offsets[1]).to.be.greaterThan(offsets[0]);
      await waitCaughtUp(mc, rc);
      expect((await replInfo(rc)).sync_confirmed).to.equal('1');
    });

    it('expiries emitted as PEXPIREAT (the old code): the content proof refuses to confirm and names the lost key, or the node keeps it', async () => {
      const { mc, rc, replicaNode, master, replica } = await pair(['--node-expiry', 'pexpireat', '--sync-max-attempts', '2']);
      await mc.set('plain', 'v');
      await mc.setex('before', 3600, 'v');
      await rc.call('SLAVEOF', '127.0.0.1', String(master.port));
      if (kind === 'pika') {
        const info = await waitFor('the sync to fail', async () => {
          const i = await replInfo(rc);
          return i.sync_state === 'failed' ? i : undefined;
        }, 30_000, 50);
        expect(info.sync_confirmed).to.equal('0');
        expect(info.last_sync_error).to.match(/^VERIFY_MISMATCH: .*1 of 2 keys differ.*db 0 "before": missing on the node/);
        expect(await rc.get('plain').catch((e: Error) => e.message)).to.match(/^MASTERDOWN full sync failed after 2 attempts: .*VERIFY_MISMATCH/);
      } else {
        // Redis honours PEXPIREAT: the forced form is correct there and the sync confirms.
        await waitConfirmed(replica, rc);
        expect(await replicaNode.pttl('before')).to.be.greaterThan(3_590_000);
      }
    });

    it('expiries emitted as PEXPIREAT while streaming: SYNCPROXY VERIFY reports the keys the replica lost (Pika) or none (Redis)', async () => {
      const { mc, rc, replicaNode, master, replica } = await pair(['--node-expiry', 'pexpireat']);
      await mc.set('plain', 'v');
      await rc.call('SLAVEOF', '127.0.0.1', String(master.port));
      await waitConfirmed(replica, rc);
      await mc.setex('s1', 3600, 'v1');
      await mc.set('s2', 'v2');
      await mc.expire('s2', 3600);
      await waitCaughtUp(mc, rc);
      const verify = String(await rc.call('SYNCPROXY', 'VERIFY'));
      const info = await replInfo(rc);
      if (kind === 'pika') {
        expect(await replicaNode.exists('s1', 's2')).to.equal(0);
        expect(verify).to.match(/^result: mismatch$/m).and.match(/^mismatched_keys: 2$/m).and.match(/difference: db 0 "s1": missing on the node/);
        expect(info).to.include({ verify_last_result: 'mismatch', verify_mismatched_keys: '2' });
      } else {
        expect(verify).to.match(/^result: ok$/m);
        expect(info).to.include({ verify_last_result: 'ok', verify_mismatched_keys: '0' });
      }
    });
  });
}

describe('SYNCPROXY VERIFY outside a streaming replica', () => {
  it('on a master it is refused with a reason, and INFO says none', async () => {
    const cleanup = new Cleanup();
    try {
      const node = await cleanup.node('redis');
      const proxy = await cleanup.proxy(node);
      const c = cleanup.client(proxyClient(proxy));
      expect(await c.call('SYNCPROXY', 'VERIFY').catch((e: Error) => e.message)).to.match(/^ERR INVALID_REQUEST: SYNCPROXY VERIFY runs on a replica/);
      expect(await replInfo(c)).to.include({ role: 'master', verify_last_result: 'none', verify_mismatched_keys: '0' });
    } finally {
      await cleanup.run();
    }
  });
});

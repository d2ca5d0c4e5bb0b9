/**
 * Pika's idle `timeout` against the proxy's own node connections, on real Pika 4.0.1 with
 * `CONFIG SET timeout 2`. Pika stops answering a connection idle past its timeout (it does not
 * even close it), so without the keep-alive (src/backend/keep-alive.ts) every test here hangs at
 * its first command after the idle period. Idle periods are watched with INFO replication / INFO
 * proxy, which the proxy answers itself (no traffic on its node connections).
 */
import { expect } from 'chai';
import type Redis from 'ioredis';
import { NodeConnection } from '../src/backend/node-connection';
import { silentLogger } from '../src/logger';
import { NodePipeline } from '../src/replication/node-pipeline';
import { encodeArgs } from '../src/resp/request-parser';
import { ReaderConnection } from '../src/source/reader-connection';
import { PikaIdleNode } from './helpers/pika-idle-node';
import { ProxyProcess } from './helpers/proxy-process';
import { Cleanup, FAST_RETRY, parseInfo, proxyClient, replInfo, sleep, waitCaughtUp, waitConfirmed } from './replica-e2e-fixture';

/** Pika's idle timeout in these tests, and how long the tests stay idle (well past it). */
const NODE_TIMEOUT_S = 2;
const IDLE_MS = 5_000;

async function proxyInfo(client: Redis): Promise<Record<string, string>> {
  return parseInfo(String(await client.call('INFO', 'proxy')));
}

/** Watches `INFO replication` of a replica through an idle period: sync_confirmed:1 throughout. */
async function idleWhileConfirmed(replica: Redis, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const info = await replInfo(replica);
    expect(info.sync_confirmed, `sync_confirmed while idle: ${JSON.stringify(info)}`).to.equal('1');
    expect(info.sync_state).to.equal('streaming');
    await sleep(250);
  }
}

describe('Pika idle timeout and the proxy\'s node connections (real Pika, timeout 2)', function () {
  this.timeout(90_000);
  let cleanup: Cleanup;

  before(function () {
    if (!PikaIdleNode.available()) throw new Error('../shared/pika/start-pika not found (set PIKA_START)');
  });
  beforeEach(() => (cleanup = new Cleanup()));
  afterEach(() => cleanup.run());

  /** `count` Pika nodes with the short timeout, stopped together after the test. */
  async function pikas(count: number): Promise<PikaIdleNode[]> {
    const started = await Promise.allSettled(Array.from({ length: count }, () => PikaIdleNode.start()));
    const nodes = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    cleanup.add(nodes, (all) => Promise.all(all.map((n) => n.stop())));
    for (const r of started) if (r.status === 'rejected') throw r.reason;
    await Promise.all(nodes.map((n) => n.idleTimeout(NODE_TIMEOUT_S)));
    return nodes;
  }

  function proxy(node: PikaIdleNode, extraArgs: string[] = []): Promise<ProxyProcess> {
    return ProxyProcess.start({ backend: node, extraArgs: ['--log-level', 'info', ...extraArgs] }).then((p) => cleanup.add(p, (x) => x.stop()));
  }

  it('every connection kind answers after idling past the node timeout: dedicated, pipeline, snapshot reader', async () => {
    const [node] = await pikas(1);
    const address = { host: node.host, port: node.port };
    const dedicated = cleanup.add(new NodeConnection({ ...address, reconnect: false, logger: silentLogger() }), (c) => c.destroy());
    await dedicated.connect();
    const pipeline = cleanup.add(await NodePipeline.connect(address, new AbortController().signal), (p) => p.close());
    const reader = cleanup.add(await ReaderConnection.connect(address, 0), (r) => r.close());
    // Pika times out a connection idle since its last request (one that never sent one survives).
    await new Promise((resolve, reject) => dedicated.send(encodeArgs(['PING']), (r, err) => (r ? resolve(r) : reject(err))));
    await pipeline.call(['PING']);
    await reader.batch([['PING']]);

    await sleep(IDLE_MS);

    const reply = await new Promise<string>((resolve, reject) =>
      dedicated.send(encodeArgs(['SET', 'idle:dedicated', 'd']), (r, err) => (r ? resolve(r.raw.toString()) : reject(err))),
    );
    expect(reply).to.equal('+OK\r\n');
    expect((await pipeline.call(['SET', 'idle:pipeline', 'p'])).raw.toString()).to.equal('+OK\r\n');
    const [value] = await reader.batch([['GET', 'idle:pipeline']]);
    expect(String(value)).to.equal('p');
    // Each learnt the node's timeout and pinged at a third of it.
    expect(dedicated.keepAliveStatus.intervalMs).to.equal(Math.floor((NODE_TIMEOUT_S * 1000) / 3));
    expect(dedicated.keepAliveStatus.pings).to.be.greaterThan(0);
    expect(pipeline.keepAliveStatus.pings).to.be.greaterThan(0);
  });

  it('a proxy idle past the node timeout serves reads and writes, same write-log id', async () => {
    const [node] = await pikas(1);
    const p = await proxy(node);
    const client = cleanup.client(proxyClient(p));
    expect(await client.set('idle:a', '1')).to.equal('OK');
    const before = await proxyInfo(client);

    await sleep(IDLE_MS);

    expect(await client.get('idle:a')).to.equal('1');
    expect(await client.set('idle:b', '2')).to.equal('OK');
    expect(await client.incr('idle:n')).to.equal(1);
    const after = await proxyInfo(client);
    expect(after.write_log_id).to.equal(before.write_log_id);
    expect(Number(after.write_log_last_offset)).to.equal(Number(before.write_log_last_offset) + 2);
    expect(after.backend_link_status).to.equal('up');
    // The ordered connection learnt the node's timeout and pinged at a third of it.
    expect(after.backend_keepalive_ms).to.equal(String(Math.floor((NODE_TIMEOUT_S * 1000) / 3)));
    expect(Number(after.backend_keepalive_pings)).to.be.greaterThan(0);
    expect(p.logs()).not.to.match(/backend link down|resetting|new log generation/);
  });

  it('a streaming replica idle past the timeout applies the next master write without a new sync', async () => {
    const [masterNode, replicaNode] = await pikas(2);
    const [master, replica] = await Promise.all([proxy(masterNode), proxy(replicaNode, FAST_RETRY)]);
    const mc = cleanup.client(proxyClient(master));
    const rc = cleanup.client(proxyClient(replica));
    for (let i = 0; i < 20; i++) await mc.set(`idle:seed:${i}`, `v${i}`);
    expect(await rc.call('SLAVEOF', master.host, String(master.port))).to.equal('OK');
    await waitConfirmed(replica, rc);
    await waitCaughtUp(mc, rc);
    const before = await replInfo(rc);
    const logId = (await proxyInfo(mc)).write_log_id;

    await idleWhileConfirmed(rc, IDLE_MS);

    expect(await mc.set('idle:after', 'arrived')).to.equal('OK');
    await waitCaughtUp(mc, rc);
    expect(await rc.get('idle:after')).to.equal('arrived');
    expect(await rc.get('idle:seed:7')).to.equal('v7');
    const after = await replInfo(rc);
    expect(after.sync_attempts).to.equal(before.sync_attempts);
    expect(after.sync_confirmed).to.equal('1');
    expect(after.master_link_status).to.equal('up');
    expect((await proxyInfo(mc)).write_log_id).to.equal(logId);
    expect(replica.logs()).not.to.match(/replication attempt failed/);
  });

  it('a throttled full sync whose loader waits past the timeout between files confirms', async () => {
    const [masterNode, replicaNode] = await pikas(2);
    // 64 KiB snapshot files copied at 20 KiB/s, one chunk per file: the loader waits about 3 s
    // (more than the node's 2 s timeout) for each file after the first.
    const master = await proxy(masterNode, ['--snapshot-file-size', '64kb']);
    const replica = await proxy(replicaNode, [...FAST_RETRY, '--sync-throttle', '20kb', '--sync-chunk-size', '64kb', '--sync-workers', '1']);
    const mc = cleanup.client(proxyClient(master));
    const rc = cleanup.client(proxyClient(replica));
    const value = 'x'.repeat(1024);
    for (let i = 0; i < 150; i++) await mc.set(`idle:big:${i}`, `${i}:${value}`);
    expect(await rc.call('SLAVEOF', master.host, String(master.port))).to.equal('OK');
    const info = await waitConfirmed(replica, rc, 60_000);
    expect(info.sync_attempts).to.equal('1');
    const status = JSON.parse(String(await rc.call('SYNCPROXY', 'STATUS', 'JSON'))) as { filesTotal: number; failedAttempts: number };
    expect(status.filesTotal, 'files copied one after another past the node timeout').to.be.at.least(3);
    expect(status.failedAttempts).to.equal(0);
    for (const i of [0, 75, 149]) expect(await rc.get(`idle:big:${i}`)).to.equal(`${i}:${value}`);
    expect(replica.logs()).not.to.match(/replication attempt failed/);
  });
});

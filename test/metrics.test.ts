/**
 * The operator's HTTP port (--metrics-port) on real proxy processes in front of real nodes, on
 * every node kind (NODE_KINDS): /metrics scraped with a real HTTP client during a real full sync
 * (master proxy -> replica proxy) moves as INFO does; /readyz follows the replica's read gate
 * (503 until confirmed, 200 after, 503 again when a new sync is forced); /healthz turns 503 once
 * the node has been dead longer than its bound; `promtool check metrics` accepts every scrape.
 */
import { spawn } from 'node:child_process';
import { expect } from 'chai';
import type Redis from 'ioredis';
import { NODE_KINDS } from './helpers/nodes';
import type { ProxyProcess } from './helpers/proxy-process';
import { NODE_DOWN_UNHEALTHY_MS } from '../src/metrics/http-server';
import { Cleanup, FAST_RETRY, parseInfo, proxyClient, replInfo, seed, waitCaughtUp, waitConfirmed, waitFor } from './replica-e2e-fixture';

type Samples = Map<string, number>;

async function metricsPortOf(client: Redis): Promise<number> {
  const port = Number(parseInfo(String(await client.call('INFO', 'proxy'))).metrics_port);
  expect(port, 'INFO proxy metrics_port').to.be.greaterThan(0);
  return port;
}

async function get(port: number, path: string, method = 'GET'): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
}

/** `name{labels}` (labels as printed) -> value, for the sample lines of a scrape. */
function parseScrape(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

async function scrape(port: number): Promise<{ text: string; samples: Samples }> {
  const res = await get(port, '/metrics');
  expect(res.status).to.equal(200);
  expect(res.type).to.match(/^text\/plain; version=0\.0\.4/);
  return { text: res.body, samples: parseScrape(res.body) };
}

function value(samples: Samples, key: string): number {
  const v = samples.get(key);
  if (v === undefined) throw new Error(`no sample ${key} in the scrape`);
  return v;
}

/** The label value of a state set whose sample is 1. */
function current(samples: Samples, metric: string, label: string): string[] {
  const re = new RegExp(`^${metric}\\{${label}="([^"]+)"\\}$`);
  return [...samples].filter(([k, v]) => v === 1 && re.test(k)).map(([k]) => re.exec(k)![1]);
}

/** `promtool check metrics` with the scrape on stdin: exit code and everything it printed. */
function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn('promtool', ['check', 'metrics']);
    let output = '';
    p.stdout.on('data', (d: Buffer) => (output += d.toString()));
    p.stderr.on('data', (d: Buffer) => (output += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, output }));
    p.stdin.end(text);
  });
}

async function expectPromtoolClean(text: string, what: string): Promise<void> {
  const r = await promtool(text);
  expect(r.output.trim(), `promtool on the ${what} scrape`).to.equal('');
  expect(r.code, `promtool exit code on the ${what} scrape`).to.equal(0);
}

for (const kind of NODE_KINDS) describe(kind, () => {
  describe('metrics, health and readiness (--metrics-port)', function () {
    this.timeout(120_000);
    const cleanup = Cleanup.perTest();

    it('during a full sync /metrics moves as INFO does and /readyz follows the read gate, also for a forced new sync', async () => {
      const masterNode = await cleanup.node(kind);
      const replicaNode = await cleanup.node(kind);
      await seed(masterNode, { bigKeys: true, bigSize: 20_000 });
      const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '256kb', '--metrics-port', '0']);
      // Throttled so the copy lasts long enough to be scraped several times.
      const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--sync-throttle', '1mb', '--sync-chunk-size', '64kb', '--metrics-port', '0']);
      const mc = cleanup.client(proxyClient(master));
      const rc = cleanup.client(proxyClient(replica));
      const masterPort = await metricsPortOf(mc);
      const replicaPort = await metricsPortOf(rc);

      // Before SLAVEOF both are masters with their node up: ready.
      expect(await get(replicaPort, '/readyz')).to.include({ status: 200, body: 'ok\n' });
      let r = (await scrape(replicaPort)).samples;
      expect(current(r, 'pika_sync_proxy_role', 'role')).to.deep.equal(['master']);
      expect(value(r, 'pika_sync_proxy_node_link_up')).to.equal(1);

      expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
      const notReady = await get(replicaPort, '/readyz');
      expect(notReady.status).to.equal(503);
      expect(notReady.body).to.match(/^MASTERDOWN full sync not confirmed/);

      // Scrape while the sync runs; each scrape sits between two INFO reads.
      const copied: number[] = [];
      const states = new Set<string>();
      let midSyncText = '';
      let readyBeforeConfirm = 0;
      await waitFor('sync_confirmed:1 in INFO', async () => {
        const before = await replInfo(rc);
        const s = await scrape(replicaPort);
        const ready = await get(replicaPort, '/readyz');
        const after = await replInfo(rc);
        const bytes = value(s.samples, 'pika_sync_proxy_replica_copy_bytes');
        expect(bytes).to.be.within(Number(before.master_sync_read_bytes), Number(after.master_sync_read_bytes));
        expect(value(s.samples, 'pika_sync_proxy_replica_copy_bytes_total_expected')).to.be.within(Number(before.master_sync_total_bytes), Number(after.master_sync_total_bytes));
        const state = current(s.samples, 'pika_sync_proxy_replica_sync_state', 'state');
        expect(state).to.have.length(1);
        states.add(state[0]);
        copied.push(bytes);
        if (state[0] === 'copying') midSyncText = s.text;
        const confirmed = value(s.samples, 'pika_sync_proxy_replica_sync_confirmed');
        if (after.sync_confirmed !== '1') {
          expect(confirmed).to.equal(0);
          if (ready.status === 200) readyBeforeConfirm++;
        }
        return after.sync_confirmed === '1';
      }, 60_000, 100);
      expect(readyBeforeConfirm, '/readyz 200 while INFO said not confirmed').to.equal(0);
      expect(states).to.include('copying');
      // Bytes copied grew during the sync, as INFO master_sync_read_bytes did.
      expect(new Set(copied.filter((b) => b > 0)).size, `copy bytes seen: ${copied.join(',')}`).to.be.greaterThan(1);
      for (let i = 1; i < copied.length; i++) expect(copied[i]).to.be.at.least(copied[i - 1]);
      await expectPromtoolClean(midSyncText, 'replica mid-copy');

      await waitConfirmed(replica, rc);
      r = (await scrape(replicaPort)).samples;
      expect(value(r, 'pika_sync_proxy_replica_sync_confirmed')).to.equal(1);
      expect(current(r, 'pika_sync_proxy_role', 'role')).to.deep.equal(['replica']);
      expect(current(r, 'pika_sync_proxy_replica_sync_state', 'state')).to.deep.equal(['streaming']);
      expect(value(r, 'pika_sync_proxy_replica_copy_bytes')).to.equal(value(r, 'pika_sync_proxy_replica_copy_bytes_total_expected')).and.to.be.greaterThan(0);
      expect(await get(replicaPort, '/readyz')).to.include({ status: 200, body: 'ok\n' });

      // Writes on the master reach the replica: applied offset = master offset, lag 0 on the master.
      for (let i = 0; i < 50; i++) await mc.set(`m:after:${i}`, String(i));
      const offset = await waitCaughtUp(mc, rc);
      const m = await scrape(masterPort);
      expect(value(m.samples, 'pika_sync_proxy_write_log_last_offset')).to.equal(offset);
      const lagKey = `pika_sync_proxy_replica_lag_offsets{replica="127.0.0.1:${replica.port}"}`;
      await waitFor('master scrape lag 0', async () => value((await scrape(masterPort)).samples, lagKey) === 0, 10_000, 50);
      expect(value((await scrape(masterPort)).samples, `pika_sync_proxy_replica_lag_seconds{replica="127.0.0.1:${replica.port}"}`)).to.equal(0);
      expect(value(m.samples, 'pika_sync_proxy_snapshot_builds_total')).to.be.at.least(1);
      expect(value(m.samples, 'pika_sync_proxy_snapshot_last_build_keys')).to.be.greaterThan(0);
      expect(value(m.samples, 'pika_sync_proxy_snapshot_last_build_bytes')).to.be.greaterThan(0);
      expect(value(m.samples, 'pika_sync_proxy_commands_processed_total')).to.be.at.least(50);
      expect(value(m.samples, 'pika_sync_proxy_command_duration_seconds_count{class="write",outcome="ok"}')).to.be.at.least(50);
      await expectPromtoolClean(m.text, 'master with a replica');
      r = (await scrape(replicaPort)).samples;
      expect(value(r, 'pika_sync_proxy_replica_applied_offset')).to.equal(offset);
      expect(value(r, 'pika_sync_proxy_replica_master_offset')).to.equal(offset);

      // A forced new sync to the same master: not ready again until it is confirmed.
      expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port), 'FORCE')).to.equal('OK');
      const again = await get(replicaPort, '/readyz');
      expect(again.status).to.equal(503);
      expect(again.body).to.match(/^MASTERDOWN full sync not confirmed/);
      expect(value((await scrape(replicaPort)).samples, 'pika_sync_proxy_replica_sync_confirmed')).to.equal(0);
      await waitConfirmed(replica, rc, 60_000);
      expect(await get(replicaPort, '/readyz')).to.include({ status: 200, body: 'ok\n' });
      const last = await scrape(replicaPort);
      expect(value(last.samples, 'pika_sync_proxy_replica_sync_confirmed')).to.equal(1);
      await expectPromtoolClean(last.text, 'replica after the forced sync');
    });

    it('/healthz is 200 while the node is up and 503 once it has been dead past the bound; /readyz 503 as soon as the link is down', async () => {
      const node = await cleanup.node(kind);
      const proxy: ProxyProcess = await cleanup.proxy(node, ['--metrics-port', '0']);
      const client = cleanup.client(proxyClient(proxy));
      const port = await metricsPortOf(client);
      expect(await get(port, '/healthz')).to.include({ status: 200, body: 'ok\n' });
      expect(await get(port, '/readyz')).to.include({ status: 200, body: 'ok\n' });
      expect(await get(port, '/healthz', 'HEAD')).to.include({ status: 200, body: '' });
      expect((await get(port, '/nothing')).status).to.equal(404);
      expect((await get(port, '/metrics', 'POST')).status).to.equal(405);

      await node.kill();
      const notReady = await waitFor('/readyz 503 after the node was killed', async () => {
        const res = await get(port, '/readyz');
        return res.status === 503 ? res : undefined;
      }, 10_000, 50);
      expect(notReady.body).to.match(/^node link to .* is down/);
      expect(value((await scrape(port)).samples, 'pika_sync_proxy_node_link_up')).to.equal(0);
      const unhealthy = await waitFor('/healthz 503 after the node was killed', async () => {
        const res = await get(port, '/healthz');
        return res.status === 503 ? res : undefined;
      }, NODE_DOWN_UNHEALTHY_MS + 15_000, 200);
      expect(unhealthy.body).to.match(/^node link to .* down for \d+ s \(unhealthy after 5 s\)/);
    });

    it('commands are counted by class and outcome, and the totals equal INFO', async () => {
      const node = await cleanup.node(kind);
      const proxy = await cleanup.proxy(node, ['--metrics-port', '0']);
      const client = cleanup.client(proxyClient(proxy));
      const port = await metricsPortOf(client);
      const key = (cls: string, outcome: string): string => `pika_sync_proxy_command_duration_seconds_count{class="${cls}",outcome="${outcome}"}`;
      const count = (s: Samples, cls: string, outcome: string): number => s.get(key(cls, outcome)) ?? 0;
      const before = (await scrape(port)).samples;
      for (let i = 0; i < 7; i++) await client.set(`c:${i}`, 'v');
      for (let i = 0; i < 5; i++) await client.get(`c:${i}`);
      await client.call('INCR', 'c:0').then(() => expect.fail('INCR of a non-number must fail'), () => undefined);
      for (let i = 0; i < 3; i++) await client.call('NOSUCHCOMMAND').then(() => expect.fail('unknown command answered'), () => undefined);
      // The write log's bytes grow when its batch reaches the file (after the reply): wait for
      // them by scraping (an HTTP read, not a command), then the scrape sits between two INFO reads.
      await waitFor('the write log batch on file', async () => value((await scrape(port)).samples, 'pika_sync_proxy_write_log_bytes') > 0, 10_000, 20);
      const infoBefore = parseInfo(String(await client.call('INFO', 'proxy')));
      const s = (await scrape(port)).samples;
      expect(count(s, 'write', 'ok') - count(before, 'write', 'ok')).to.equal(7);
      expect(count(s, 'write', 'error') - count(before, 'write', 'error')).to.equal(1);
      expect(count(s, 'read', 'ok') - count(before, 'read', 'ok')).to.equal(5);
      expect(count(s, 'unknown', 'error') - count(before, 'unknown', 'error')).to.equal(3);
      expect(count(s, 'replication', 'ok') - count(before, 'replication', 'ok')).to.equal(1); // the INFO above
      // Buckets are cumulative and end at the count.
      expect(value(s, 'pika_sync_proxy_command_duration_seconds_bucket{class="read",outcome="ok",le="+Inf"}')).to.equal(count(s, 'read', 'ok'));
      expect(value(s, 'pika_sync_proxy_command_duration_seconds_sum{class="read",outcome="ok"}')).to.be.greaterThan(0);
      // The totals are INFO's (the INFO command itself is counted once it runs).
      const info = parseInfo(String(await client.call('INFO', 'proxy')));
      expect(value(s, 'pika_sync_proxy_commands_processed_total')).to.equal(Number(info.total_commands_processed) - 1);
      expect(value(s, 'pika_sync_proxy_connections_received_total')).to.equal(Number(info.total_connections_received));
      expect(value(s, 'pika_sync_proxy_connected_clients')).to.equal(Number(info.connected_clients));
      expect(value(s, 'pika_sync_proxy_write_log_last_offset')).to.equal(Number(info.write_log_last_offset));
      expect(value(s, 'pika_sync_proxy_write_log_bytes')).to.be.within(Number(infoBefore.write_log_bytes), Number(info.write_log_bytes)).and.to.be.greaterThan(0);
      expect(value(s, `pika_sync_proxy_info{version="${info.proxy_version}",run_id="${info.proxy_run_id}"}`)).to.equal(1);
    });
  });
});

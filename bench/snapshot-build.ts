/**
 * Snapshot build throughput of a master proxy: N mixed keys are written into redis through the
 * proxy, then one gRPC GetMeta (what a replica's SLAVEOF sends first) triggers the build; the time
 * until the meta comes back is the build (SCAN + per-key reads through the ordered path + file
 * writes + fsync + manifest). The master proxy's RSS is sampled every 200 ms during the build.
 * A second GetMeta shows the reuse of a fresh snapshot (should be immediate).
 *
 * Reproduce:  npm run build && node dist/bench/snapshot-build.js [--keys 1000000]
 * Writes bench/results/snapshot-build.md.
 */
import { randomBytes } from 'node:crypto';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { SyncClient, MetaAnswer } from '../src/sync/sync-client';
import { ProxyProcess } from '../test/helpers/proxy-process';
import { RedisServer } from '../test/helpers/redis-server';
import { loadMixedKeys } from './lib/mixed-data';
import { Cleanup, RssSampler, busyMachineWarning, environmentLine, formatMiB, formatOps, cpuMeter, formatCpu, markdownTable, numericFlag, parseInfo, requireCommands, writeResult } from './lib/tools';

/** GetMeta until the build is done: SNAPSHOT_BUILDING only means "ask again". */
async function getMetaWaiting(client: SyncClient, timeoutMs: number): Promise<MetaAnswer> {
  const replica = { runId: randomBytes(20).toString('hex'), host: '127.0.0.1', port: 1 };
  const started = Date.now();
  for (;;) {
    try {
      return await client.getMeta({ waitMs: 30_000, replica });
    } catch (err) {
      const building = err instanceof SyncProxyError && err.code === 'SNAPSHOT_BUILDING';
      if (!building || Date.now() - started > timeoutMs) throw err;
    }
  }
}

async function main(): Promise<void> {
  requireCommands([{ command: 'redis-server', aptPackage: 'redis-server' }]);
  const keys = numericFlag('keys', 1_000_000);
  const timeoutMs = numericFlag('timeout-s', 3600) * 1000;
  const cleanup = new Cleanup();
  try {
    const redis = await RedisServer.start();
    cleanup.add('redis', () => redis.stop());
    const proxy = await ProxyProcess.start({ backend: redis, extraArgs: ['--log-level', 'warn'] });
    cleanup.add('proxy', () => proxy.stop());
    const writer = proxy.client();
    cleanup.add('writer', () => writer.disconnect());
    console.error(`loading ${formatOps(keys)} mixed keys through the proxy`);
    const load = await loadMixedKeys(writer, keys, { onProgress: (n) => n % 100_000 === 0 && console.error(`  ${formatOps(n)} keys`) });
    const usedMemory = Number(parseInfo(await writer.info('memory')).used_memory ?? 0);

    const client = new SyncClient({ host: '127.0.0.1', port: proxy.syncPort, rpcTimeoutMs: 60_000, logger: silentLogger() });
    cleanup.add('sync client', () => client.close());
    const sampler = new RssSampler(proxy.pid!, 200).start();
    const cpu = cpuMeter({ proxy: proxy.pid, redis: redis.pid });
    const started = Date.now();
    const meta = await getMetaWaiting(client, timeoutMs);
    const buildMs = Date.now() - started;
    const cpuUsed = cpu();
    const peak = sampler.stop();
    const reuseStarted = Date.now();
    const again = await getMetaWaiting(client, timeoutMs);
    const reuseMs = Date.now() - reuseStarted;

    const records = meta.dbs.reduce((sum, db) => sum + db.records, 0);
    const seconds = buildMs / 1000;
    const markdown = [
      '# snapshot-build',
      '',
      `${formatOps(load.keys)} mixed keys (${formatMiB(load.valueBytes)} of values, redis used_memory ${formatMiB(usedMemory)}). One gRPC GetMeta on an idle master proxy starts the build; timed until the meta answer (no client writes during the build).`,
      '',
      `Environment: ${environmentLine()}.`,
      '',
      busyMachineWarning(),
      markdownTable(
        ['keys in snapshot', 'files', 'snapshot bytes', 'build time', 'keys/s', 'MB/s (snapshot bytes)', 'proxy peak RSS', 'second GetMeta (reuse)'],
        [[formatOps(records), meta.files.length, formatMiB(meta.totalBytes), `${seconds.toFixed(2)} s`, formatOps(records / seconds), (meta.totalBytes / 1e6 / seconds).toFixed(1), formatMiB(peak), `${reuseMs} ms, ${again.snapshotId === meta.snapshotId ? 'same snapshot' : 'NEW snapshot'}`]],
      ),
      '',
      `CPU seconds during the build (user + system, /proc/<pid>/stat): ${formatCpu(cpuUsed)}.`,
      '',
      'Reproduce: `npm run build && node dist/bench/snapshot-build.js --keys ' + keys + '`',
      '',
    ].join('\n');
    const file = writeResult('snapshot-build', markdown);
    console.log(markdown);
    console.log(`written to ${file}`);
    if (records !== load.keys) throw new Error(`snapshot holds ${records} key records, ${load.keys} keys were loaded`);
  } finally {
    await cleanup.run();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});

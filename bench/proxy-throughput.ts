/**
 * Throughput of the proxy's data path next to the node alone and next to twemproxy, same run, same
 * redis-server, same machine:
 *
 *   redis-benchmark -h 127.0.0.1 -p <port> -t set,get -c 50 -n 200000 -P <1|16> -q --csv
 *
 * against direct (redis-server), proxy (dist/src/main.js) and twemproxy (nutcracker) in front of
 * the same redis. The proxy's peak RSS (VmRSS from /proc) is sampled every 200 ms under load.
 *
 * Reproduce:  npm run build && node dist/bench/proxy-throughput.js [--requests 200000]
 *             [--clients 50] [--rounds 1]
 * Needs: redis-server, redis-benchmark (apt: redis-server redis-tools), nutcracker (apt: nutcracker).
 * Writes bench/results/proxy-throughput.md and prints the same table.
 */
import { RedisServer } from '../test/helpers/redis-server';
import { ProxyProcess } from '../test/helpers/proxy-process';
import { Cleanup, Nutcracker, RssSampler, busyMachineWarning, environmentLine, formatMiB, formatOps, markdownTable, numericFlag, ratio, readRss, requireCommands, runRedisBenchmark, writeResult } from './lib/tools';

const PIPELINES = [1, 16];
const TESTS = ['SET', 'GET'];
type Target = 'direct' | 'proxy' | 'twemproxy';
const TARGETS: Target[] = ['direct', 'proxy', 'twemproxy'];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function main(): Promise<void> {
  requireCommands([
    { command: 'redis-server', aptPackage: 'redis-server' },
    { command: 'redis-benchmark', aptPackage: 'redis-tools' },
    { command: 'nutcracker', aptPackage: 'nutcracker' },
  ]);
  const requests = numericFlag('requests', 200_000);
  const clients = numericFlag('clients', 50);
  const rounds = numericFlag('rounds', 1);
  const cleanup = new Cleanup();
  try {
    const redis = await RedisServer.start();
    cleanup.add('redis-server', () => redis.stop());
    const proxy = await ProxyProcess.start({ backend: redis, extraArgs: ['--log-level', 'warn'] });
    cleanup.add('proxy', () => proxy.stop());
    const twemproxy = await Nutcracker.start(redis.port);
    cleanup.add('nutcracker', () => twemproxy.stop());
    const ports: Record<Target, number> = { direct: redis.port, proxy: proxy.port, twemproxy: twemproxy.port };
    const idleRss = readRss(proxy.pid!) ?? 0;

    // results[pipeline][target][test] = ops/s per round
    const results = new Map<number, Record<Target, Record<string, number[]>>>();
    let proxyPeakRss = 0;
    const proxyPeakByPipeline = new Map<number, number>();
    for (let round = 1; round <= rounds; round++) {
      for (const pipeline of PIPELINES) {
        const perTarget = results.get(pipeline) ?? { direct: {}, proxy: {}, twemproxy: {} };
        results.set(pipeline, perTarget);
        for (const target of TARGETS) {
          const sampler = target === 'proxy' ? new RssSampler(proxy.pid!, 200).start() : undefined;
          const result = await runRedisBenchmark(ports[target], { tests: TESTS.join(',').toLowerCase(), clients, requests, pipeline });
          if (sampler) {
            const peak = sampler.stop();
            proxyPeakRss = Math.max(proxyPeakRss, peak);
            proxyPeakByPipeline.set(pipeline, Math.max(proxyPeakByPipeline.get(pipeline) ?? 0, peak));
          }
          for (const test of TESTS) {
            if (result.rps[test] === undefined) throw new Error(`no ${test} result from redis-benchmark against ${target}:\n${result.raw}`);
            (perTarget[target][test] ??= []).push(result.rps[test]);
          }
          console.error(`round ${round} -P ${pipeline} ${target.padEnd(9)} ${TESTS.map((t) => `${t} ${formatOps(result.rps[t])}/s`).join('  ')}`);
        }
      }
    }

    const rows: Array<Array<string | number>> = [];
    for (const [pipeline, perTarget] of results) {
      for (const test of TESTS) {
        const [d, p, t] = TARGETS.map((target) => median(perTarget[target][test]));
        rows.push([test, pipeline, formatOps(d), formatOps(p), formatOps(t), ratio(p, d), ratio(p, t), ratio(t, d), formatMiB(proxyPeakByPipeline.get(pipeline) ?? 0)]);
      }
    }
    const table = markdownTable(['test', '-P', 'direct ops/s', 'proxy ops/s', 'twemproxy ops/s', 'proxy/direct', 'proxy/twemproxy', 'twemproxy/direct', 'proxy peak RSS'], rows);
    const markdown = [
      '# proxy-throughput',
      '',
      `\`redis-benchmark -t set,get -c ${clients} -n ${requests} -P <1|16> -q --csv\`, ${rounds} round(s) (median), targets run one after another in the same run.`,
      '',
      `Environment: ${environmentLine()}. Everything (redis-server, proxy, twemproxy, redis-benchmark) shares this machine.`,
      '',
      busyMachineWarning(),
      table,
      '',
      `Proxy RSS: ${formatMiB(idleRss)} idle before the load, ${formatMiB(proxyPeakRss)} peak under load (VmRSS sampled every 200 ms).`,
      '',
      'Reproduce: `npm run build && node dist/bench/proxy-throughput.js`',
      '',
    ].join('\n');
    const file = writeResult('proxy-throughput', markdown);
    console.log(markdown);
    console.log(`written to ${file}`);
  } finally {
    await cleanup.run();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});

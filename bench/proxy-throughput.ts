/**
 * Throughput of the proxy's data path next to the node alone and next to twemproxy, same run, same
 * redis-server, same machine:
 *
 *   redis-benchmark -h 127.0.0.1 -p <port> -t set,get -c 50 -n 100000 -P 1 -q --csv
 *   redis-benchmark -h 127.0.0.1 -p <port> -t set,get -c 50 -n 400000 -P 16 -q --csv
 *
 * against direct (redis-server), proxy (dist/src/main.js) and twemproxy (nutcracker) in front of
 * the same redis. The proxy's peak RSS (VmRSS from /proc) is sampled every 200 ms under load.
 *
 * Why rounds, alternating order and paired ratios: on this kind of shared 2-vCPU machine the
 * host's speed drifts by 10-25% within a minute, more than the differences measured. Each round
 * measures every target seconds apart (in reverse order every other round), each round's ratio
 * is taken within the round, and the median over rounds is reported. Short runs and many rounds
 * keep the targets of one round in the same phase of the host.
 *
 * Reproduce:  npm run build && node dist/bench/proxy-throughput.js [--requests 100000]
 *             [--clients 50] [--rounds 9]
 * Needs: redis-server, redis-benchmark (apt: redis-server redis-tools), nutcracker (apt: nutcracker).
 * Writes bench/results/proxy-throughput.md and prints the same table.
 */
import { median, pairedRatio, requireThroughputTools, startRedisProxyTwemproxy } from './lib/side-by-side';
import { Cleanup, RssSampler, busyMachineWarning, environmentLine, formatMiB, formatOps, markdownTable, numericFlag, readRss, runRedisBenchmark, writeResult } from './lib/tools';

const PIPELINES = [1, 16];
const TESTS = ['SET', 'GET'];
type Target = 'direct' | 'proxy' | 'twemproxy';
const TARGETS: Target[] = ['direct', 'proxy', 'twemproxy'];

async function main(): Promise<void> {
  requireThroughputTools();
  const requests = numericFlag('requests', 100_000);
  const clients = numericFlag('clients', 50);
  const rounds = numericFlag('rounds', 9);
  const cleanup = new Cleanup();
  try {
    const { redis, proxy, twemproxy } = await startRedisProxyTwemproxy(cleanup);
    const ports: Record<Target, number> = { direct: redis.port, proxy: proxy.port, twemproxy: twemproxy.port };
    const idleRss = readRss(proxy.pid!) ?? 0;

    // Not measured: one short run per target and depth first, so the proxy's JIT has compiled its
    // data path and every target has its 50 connections' worth of keys, as in a long-running fleet.
    for (const pipeline of PIPELINES) {
      for (const target of TARGETS) await runRedisBenchmark(ports[target], { tests: TESTS.join(',').toLowerCase(), clients, requests: Math.min(requests, 50_000) * pipeline, pipeline });
    }

    // results[pipeline][target][test] = ops/s per round
    const results = new Map<number, Record<Target, Record<string, number[]>>>();
    let proxyPeakRss = 0;
    const proxyPeakByPipeline = new Map<number, number>();
    for (let round = 1; round <= rounds; round++) {
      // The host's speed drifts within a run: every other round runs the targets in reverse order.
      const order = round % 2 === 1 ? TARGETS : [...TARGETS].reverse();
      for (const pipeline of PIPELINES) {
        const perTarget = results.get(pipeline) ?? { direct: {}, proxy: {}, twemproxy: {} };
        results.set(pipeline, perTarget);
        for (const target of order) {
          const sampler = target === 'proxy' ? new RssSampler(proxy.pid!, 200).start() : undefined;
          // -P 16 runs 4x the requests: at over a million ops/s 100k would last under a tenth of a second.
          const result = await runRedisBenchmark(ports[target], { tests: TESTS.join(',').toLowerCase(), clients, requests: requests * (pipeline === 1 ? 1 : 4), pipeline });
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

    // Ratios are paired: each round's proxy result over the same round's direct or twemproxy
    // result (measured seconds apart), then the median over rounds.
    const rows: Array<Array<string | number>> = [];
    for (const [pipeline, perTarget] of results) {
      for (const test of TESTS) {
        const [d, p, t] = TARGETS.map((target) => perTarget[target][test]);
        rows.push([
          test, pipeline, formatOps(median(d)), formatOps(median(p)), formatOps(median(t)),
          pairedRatio(p, d).median.toFixed(2), pairedRatio(p, t).median.toFixed(2), pairedRatio(p, t).range, pairedRatio(t, d).median.toFixed(2), formatMiB(proxyPeakByPipeline.get(pipeline) ?? 0),
        ]);
      }
    }
    const table = markdownTable(['test', '-P', 'direct ops/s', 'proxy ops/s', 'twemproxy ops/s', 'proxy/direct', 'proxy/twemproxy', 'proxy/twemproxy per round', 'twemproxy/direct', 'proxy peak RSS'], rows);
    const markdown = [
      '# proxy-throughput',
      '',
      `\`redis-benchmark -t set,get -c ${clients} -n ${requests} -P 1\` and \`-n ${requests * 4} -P 16\` (\`-q --csv\`), ${rounds} round(s) after one unmeasured warm-up run per target. In each round the targets run one after another, in reverse order every other round; ops/s are medians over rounds, ratios are the median of each round's own ratio.`,
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

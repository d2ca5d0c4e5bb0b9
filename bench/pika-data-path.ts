/**
 * The proxy's data path in front of real Pika 4.0.1, next to the same Pika directly, same run:
 *
 *   redis-benchmark -h 127.0.0.1 -p <port> -t set,get -c 50 -n 100000 -P 1 -q --csv
 *   redis-benchmark -h 127.0.0.1 -p <port> -t set,get -c 50 -n 400000 -P 16 -q --csv
 *
 * against Pika directly and through the proxy (dist/src/main.js, log level warn) in front of it.
 * One unmeasured warm-up run per target and depth first; then rounds, the targets one after the
 * other, in reverse order every other round; ops/s are medians over rounds, ratios the median of
 * each round's own proxy/direct ratio (the host's speed drifts within a minute; see
 * proxy-throughput.ts). CPU per request of the proxy and of Pika (user + system from
 * /proc/<pid>/stat around each run, SET and GET together) shows where the time goes.
 *
 * Reproduce:  npm run build && node dist/bench/pika-data-path.js [--requests 100000] [--clients 50] [--rounds 9]
 * Needs: ../shared/pika/start-pika beside the repo, redis-benchmark (apt: redis-tools).
 * Writes bench/results/pika-data-path.md and prints the same table.
 */
import { ProxyProcess } from '../test/helpers/proxy-process';
import { PikaNode, requirePika } from './lib/pika';
import { median, pairedRatio } from './lib/side-by-side';
import { Cleanup, RssSampler, busyMachineWarning, cpuMeter, environmentLine, formatMiB, formatOps, markdownTable, numericFlag, readRss, requireCommands, runRedisBenchmark, writeResult } from './lib/tools';

const PIPELINES = [1, 16];
const TESTS = ['SET', 'GET'];
type Target = 'direct' | 'proxy';
const TARGETS: Target[] = ['direct', 'proxy'];

async function main(): Promise<void> {
  requirePika();
  requireCommands([{ command: 'redis-benchmark', aptPackage: 'redis-tools' }]);
  const requests = numericFlag('requests', 100_000);
  const clients = numericFlag('clients', 50);
  const rounds = numericFlag('rounds', 9);
  const environment = environmentLine();
  const cleanup = new Cleanup();
  try {
    const pika = await PikaNode.start();
    cleanup.add('Pika', () => pika.stop());
    const proxy = await ProxyProcess.start({ backend: pika, extraArgs: ['--log-level', 'warn'] });
    cleanup.add('proxy', () => proxy.stop());
    const ports: Record<Target, number> = { direct: pika.port, proxy: proxy.port };
    const idleRss = readRss(proxy.pid!) ?? 0;
    const requestsAt = (pipeline: number) => requests * (pipeline === 1 ? 1 : 4);

    for (const pipeline of PIPELINES) {
      for (const target of TARGETS) await runRedisBenchmark(ports[target], { tests: TESTS.join(',').toLowerCase(), clients, requests: Math.min(requests, 50_000) * pipeline, pipeline });
    }

    // ops[pipeline][target][test] = ops/s per round; cpu[pipeline][target] = µs per request per round
    const ops = new Map<number, Record<Target, Record<string, number[]>>>();
    const cpu = new Map<number, Record<Target, { proxy: number[]; pika: number[] }>>();
    const peakByPipeline = new Map<number, number>();
    for (let round = 1; round <= rounds; round++) {
      const order = round % 2 === 1 ? TARGETS : [...TARGETS].reverse();
      for (const pipeline of PIPELINES) {
        const perTarget = ops.get(pipeline) ?? { direct: {}, proxy: {} };
        ops.set(pipeline, perTarget);
        const cpuPerTarget = cpu.get(pipeline) ?? { direct: { proxy: [], pika: [] }, proxy: { proxy: [], pika: [] } };
        cpu.set(pipeline, cpuPerTarget);
        for (const target of order) {
          const sampler = target === 'proxy' ? new RssSampler(proxy.pid!, 200).start() : undefined;
          const meter = cpuMeter({ proxy: proxy.pid, pika: pika.pid });
          const result = await runRedisBenchmark(ports[target], { tests: TESTS.join(',').toLowerCase(), clients, requests: requestsAt(pipeline), pipeline });
          const used = meter();
          if (sampler) peakByPipeline.set(pipeline, Math.max(peakByPipeline.get(pipeline) ?? 0, sampler.stop()));
          const perRequest = (name: string) => ((used.find((u) => u.name === name)?.seconds ?? Number.NaN) * 1e6) / (requestsAt(pipeline) * TESTS.length);
          cpuPerTarget[target].proxy.push(perRequest('proxy'));
          cpuPerTarget[target].pika.push(perRequest('pika'));
          for (const test of TESTS) {
            if (result.rps[test] === undefined) throw new Error(`no ${test} result from redis-benchmark against ${target}:\n${result.raw}`);
            (perTarget[target][test] ??= []).push(result.rps[test]);
          }
          console.error(`round ${round} -P ${String(pipeline).padEnd(2)} ${target.padEnd(6)} ${TESTS.map((t) => `${t} ${formatOps(result.rps[t])}/s`).join('  ')}  CPU µs/request: proxy ${perRequest('proxy').toFixed(1)}, Pika ${perRequest('pika').toFixed(1)}`);
        }
      }
    }

    const rows: Array<Array<string | number>> = [];
    for (const [pipeline, perTarget] of ops) {
      for (const test of TESTS) {
        const d = perTarget.direct[test];
        const p = perTarget.proxy[test];
        const r = pairedRatio(p, d);
        rows.push([test, pipeline, formatOps(median(d)), formatOps(median(p)), `**${r.median.toFixed(2)}**`, r.range]);
      }
    }
    const cpuRows = [...cpu].map(([pipeline, c]) => [
      pipeline, median(c.direct.pika).toFixed(1), median(c.proxy.pika).toFixed(1), median(c.proxy.proxy).toFixed(1), formatMiB(peakByPipeline.get(pipeline) ?? 0),
    ]);
    const markdown = [
      '# pika-data-path',
      '',
      `\`redis-benchmark -t set,get -c ${clients} -n ${requests} -P 1\` and \`-n ${requests * 4} -P 16\` (\`-q --csv\`) against Pika 4.0.1 directly and through the proxy in front of the same Pika, ${rounds} round(s) after one unmeasured warm-up run per target and depth. In each round the targets run one after the other, in reverse order every other round; ops/s are medians over rounds, ratios the median of each round's own ratio.`,
      '',
      `Environment: ${environment}. Pika, the proxy and redis-benchmark share this machine.`,
      '',
      busyMachineWarning(),
      markdownTable(['test', '-P', 'Pika direct ops/s', 'through the proxy ops/s', 'proxy / direct', 'per round'], rows),
      '',
      'CPU per request (µs, user + system from /proc/<pid>/stat over each SET+GET run, median of rounds):',
      '',
      markdownTable(['-P', 'Pika, direct', 'Pika, through the proxy', 'proxy', 'proxy peak RSS'], cpuRows),
      '',
      `Proxy RSS: ${formatMiB(idleRss)} idle before the load.`,
      '',
      `Reproduce: \`npm run build && node dist/bench/pika-data-path.js --requests ${requests} --clients ${clients} --rounds ${rounds}\``,
      '',
    ].join('\n');
    const file = writeResult('pika-data-path', markdown);
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

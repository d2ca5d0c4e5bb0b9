/**
 * Where the proxy stands at redis-benchmark -P 1 against what any Node.js proxy can do: the
 * proxy next to a bare Node.js forwarder (bench/lib/bare-forwarder.ts: framing and per-turn
 * batching only) and twemproxy, in front of the same redis, SET and GET each measured alone:
 *
 *   redis-benchmark -h 127.0.0.1 -p <port> -t <set|get> -c 50 -n 60000 -P 1 -q --csv
 *
 * At -P 1 every request is one read and one write on a client socket: the kernel's loopback TCP
 * is most of each proxy's CPU, and all processes share the 2 CPUs, so throughput follows the CPU
 * each proxy spends per request. Reported per target: ops/s and the CPU microseconds the proxy
 * process used per request (median over rounds), and each round's ratio to twemproxy (median).
 * Rounds are short and alternate the targets' order because the host's speed drifts.
 *
 * Reproduce:  npm run build && node dist/bench/node-floor.js [--requests 60000] [--rounds 15]
 * Needs: redis-server, redis-benchmark, nutcracker. Writes bench/results/node-floor.md.
 */
import { spawn, ChildProcess } from 'node:child_process';
import path from 'node:path';
import { freePort, waitForPort } from '../test/helpers/ports';
import { median, pairedRatio, requireThroughputTools, startRedisProxyTwemproxy } from './lib/side-by-side';
import { Cleanup, busyMachineWarning, environmentLine, formatOps, markdownTable, numericFlag, readCpuSeconds, runRedisBenchmark, writeResult } from './lib/tools';

const TESTS = ['SET', 'GET'];

interface Target {
  name: string;
  port: number;
  pid: number;
}

async function startForwarder(nodePort: number): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn(process.execPath, [path.join(__dirname, 'lib/bare-forwarder.js'), String(port), String(nodePort)], { stdio: 'ignore' });
  await waitForPort(port);
  return { port, proc };
}

async function main(): Promise<void> {
  requireThroughputTools();
  const requests = numericFlag('requests', 60_000);
  const rounds = numericFlag('rounds', 15);
  const cleanup = new Cleanup();
  try {
    const { redis, proxy, twemproxy } = await startRedisProxyTwemproxy(cleanup);
    const forwarder = await startForwarder(redis.port);
    cleanup.add('bare forwarder', async () => void forwarder.proc.kill('SIGKILL'));
    const targets: Target[] = [
      { name: 'proxy', port: proxy.port, pid: proxy.pid! },
      { name: 'bare Node.js forwarder', port: forwarder.port, pid: forwarder.proc.pid! },
      { name: 'twemproxy', port: twemproxy.port, pid: twemproxy.pid! },
    ];

    // Per "<test> <target>": ops/s and the target process's CPU µs per request, one per round.
    const rps = new Map<string, number[]>(targets.flatMap((x) => TESTS.map((t) => [`${t} ${x.name}`, []] as [string, number[]])));
    const cpu = new Map<string, number[]>([...rps.keys()].map((key) => [key, []]));
    const measure = (target: Target, test: string, n: number) => runRedisBenchmark(target.port, { tests: test.toLowerCase(), clients: 50, requests: n, pipeline: 1 });
    for (const target of targets) for (const test of TESTS) await measure(target, test, Math.min(requests, 50_000)); // warm-up
    for (let round = 1; round <= rounds; round++) {
      const order = round % 2 === 1 ? targets : [...targets].reverse();
      for (const test of TESTS) {
        for (const target of order) {
          const before = readCpuSeconds(target.pid) ?? Number.NaN;
          const result = await measure(target, test, requests);
          const used = (readCpuSeconds(target.pid) ?? Number.NaN) - before;
          rps.get(`${test} ${target.name}`)!.push(result.rps[test]);
          cpu.get(`${test} ${target.name}`)!.push((used * 1e6) / requests);
        }
      }
      console.error(`round ${round}: ${TESTS.map((t) => targets.map((x) => `${t} ${x.name} ${formatOps(rps.get(`${t} ${x.name}`)!.at(-1)!)}`).join(', ')).join(' | ')}`);
    }

    const rows: Array<Array<string | number>> = [];
    for (const test of TESTS) {
      const twem = rps.get(`${test} twemproxy`)!;
      for (const target of targets) {
        const key = `${test} ${target.name}`;
        const own = rps.get(key)!;
        const ratio = pairedRatio(own, twem);
        rows.push([test, target.name, formatOps(median(own)), median(cpu.get(key)!).toFixed(1), ratio.median.toFixed(2), ratio.range]);
      }
    }
    const markdown = [
      '# node-floor',
      '',
      `\`redis-benchmark -t <set|get> -c 50 -n ${requests} -P 1 -q --csv\`, ${rounds} rounds after one unmeasured warm-up run per target; targets one after another in each round, in reverse order every other round. ops/s and CPU µs per request of the proxy process: medians over rounds; ratio: median of each round's ratio to twemproxy.`,
      '',
      `Environment: ${environmentLine()}. Everything shares this machine.`,
      '',
      busyMachineWarning(),
      markdownTable(['test', 'target', 'ops/s', 'proxy process CPU µs/request', 'ratio to twemproxy', 'per round'], rows),
      '',
      'Reproduce: `npm run build && node dist/bench/node-floor.js`',
      '',
    ].join('\n');
    const file = writeResult('node-floor', markdown);
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

/**
 * Lanes (--node-connections): GET with 20 clients while one other client loops
 * `LRANGE big 0 -1` over a 100,000-element list, against the node directly, through a proxy with
 * one lane (the single ordered connection of before) and through a proxy with lanes — same run,
 * side by side, on real Pika 4.0.1 (auto: 8 lanes) and on redis-server (4 lanes forced; auto
 * gives 1 there):
 *
 *   redis-benchmark -h 127.0.0.1 -p <port> -t get -c 20 -n <requests> -q --csv
 *
 * "alone" runs without the loop. One unmeasured warm-up per target, then rounds with the targets
 * in reverse order every other round; ops/s are medians over rounds, ratios the median of each
 * round's own ratio (bench/lib/side-by-side.ts). LRANGE/s counts the loop's own progress.
 *
 * Reproduce:  npm run build && node dist/bench/lanes.js [--requests 100000] [--rounds 5] [--list 100000]
 * Needs: ../shared/pika/start-pika beside the repo (or PIKA_START), redis-server and redis-benchmark.
 * Writes bench/results/lanes.md and prints the same table.
 */
import Redis from 'ioredis';
import { ProxyProcess } from '../test/helpers/proxy-process';
import { RedisServer } from '../test/helpers/redis-server';
import { PikaNode, requirePika } from './lib/pika';
import { median, pairedRatio } from './lib/side-by-side';
import { Cleanup, busyMachineWarning, environmentLine, formatOps, markdownTable, numericFlag, requireCommands, runRedisBenchmark, writeResult } from './lib/tools';

const CLIENTS = 20;
type Target = 'direct' | 'proxy, 1 lane' | 'proxy, lanes';
const TARGETS: Target[] = ['direct', 'proxy, 1 lane', 'proxy, lanes'];

/** Loops LRANGE big 0 -1 on its own connection until stopped; resolves the number of loops. */
function lrangeLoop(port: number): { stop(): Promise<number> } {
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: false, maxRetriesPerRequest: 0 });
  let stopped = false;
  let loops = 0;
  const done = (async () => {
    while (!stopped) {
      await client.lrangeBuffer('big', 0, -1);
      loops++;
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await done;
      client.disconnect();
      return loops;
    },
  };
}

async function fillList(port: number, elements: number): Promise<void> {
  const client = new Redis({ port, host: '127.0.0.1' });
  await client.del('big');
  await client.set('key:__rand_int__', 'x'.repeat(3));
  for (let i = 0; i < elements; i += 1000) await client.rpush('big', ...Array.from({ length: Math.min(1000, elements - i) }, (_, j) => `element-${i + j}`));
  client.disconnect();
}

interface KindResult {
  rows: Array<Array<string | number>>;
  lanes: number;
}

async function measure(kind: 'pika' | 'redis', requests: number, rounds: number, listSize: number, cleanup: Cleanup): Promise<KindResult> {
  const node = kind === 'pika' ? await PikaNode.start() : await RedisServer.start();
  cleanup.add(kind, () => node.stop());
  const lanesFlags = kind === 'pika' ? [] : ['--node-connections', '4'];
  const oneLane = await ProxyProcess.start({ backend: node, extraArgs: ['--log-level', 'warn', '--node-connections', '1'] });
  cleanup.add(`${kind} proxy 1 lane`, () => oneLane.stop());
  const withLanes = await ProxyProcess.start({ backend: node, extraArgs: ['--log-level', 'warn', ...lanesFlags] });
  cleanup.add(`${kind} proxy lanes`, () => withLanes.stop());
  const probe = new Redis({ port: withLanes.port, host: '127.0.0.1' });
  const lanes = Number(/node_connections:(\d+)/.exec(await probe.info('proxy'))?.[1]);
  probe.disconnect();
  await fillList(node.port, listSize);
  const ports: Record<Target, number> = { direct: node.port, 'proxy, 1 lane': oneLane.port, 'proxy, lanes': withLanes.port };
  for (const target of TARGETS) await runRedisBenchmark(ports[target], { tests: 'get', clients: CLIENTS, requests: Math.min(requests, 20_000), pipeline: 1 });

  const ops: Record<string, number[]> = {};
  const loops: Record<string, number[]> = {};
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? TARGETS : [...TARGETS].reverse();
    for (const target of order) {
      for (const beside of [false, true]) {
        const loop = beside ? lrangeLoop(ports[target]) : undefined;
        const started = Date.now();
        const result = await runRedisBenchmark(ports[target], { tests: 'get', clients: CLIENTS, requests, pipeline: 1 });
        const seconds = (Date.now() - started) / 1000;
        const name = `${target}|${beside ? 'beside' : 'alone'}`;
        (ops[name] ??= []).push(result.rps.GET);
        if (loop) (loops[name] ??= []).push((await loop.stop()) / seconds);
        console.error(`${kind} round ${round} ${target.padEnd(14)} ${beside ? 'beside LRANGE' : 'alone        '} GET ${formatOps(result.rps.GET)}/s`);
      }
    }
  }
  const rows = TARGETS.map((target) => {
    const alone = ops[`${target}|alone`];
    const beside = ops[`${target}|beside`];
    const vsDirect = pairedRatio(beside, ops['direct|beside']);
    return [kind === 'pika' ? 'Pika 4.0.1' : 'redis-server', target, formatOps(median(alone)), formatOps(median(beside)), median(loops[`${target}|beside`]).toFixed(1), target === 'direct' ? '1' : `**${vsDirect.median.toFixed(2)}**`, vsDirect.range];
  });
  return { rows, lanes };
}

async function main(): Promise<void> {
  requirePika();
  requireCommands([{ command: 'redis-benchmark', aptPackage: 'redis-tools' }, { command: 'redis-server', aptPackage: 'redis-server' }]);
  const requests = numericFlag('requests', 100_000);
  const rounds = numericFlag('rounds', 5);
  const listSize = numericFlag('list', 100_000);
  const environment = environmentLine();
  const cleanup = new Cleanup();
  try {
    const pika = await measure('pika', requests, rounds, listSize, cleanup);
    const redis = await measure('redis', requests, rounds, listSize, cleanup);
    const markdown = [
      '# lanes',
      '',
      `\`redis-benchmark -t get -c ${CLIENTS} -n ${requests} -P 1\` alone, and beside one more client looping \`LRANGE big 0 -1\` over a ${listSize}-element list, against the node directly, through a proxy with one lane (\`--node-connections 1\`, the one ordered connection of before) and through a proxy with lanes (Pika: auto = ${pika.lanes}; redis-server: ${redis.lanes}, forced). ${rounds} round(s) after one unmeasured warm-up per target, targets in reverse order every other round; ops/s medians over rounds, the ratio is the median of each round's own ratio to direct beside the loop.`,
      '',
      `Environment: ${environment}. The node, the proxies, redis-benchmark and the loop share this machine.`,
      '',
      busyMachineWarning(),
      markdownTable(['node', 'target', 'GET ops/s alone', 'GET ops/s beside LRANGE', 'LRANGE/s of the loop', 'beside: / direct', 'per round'], [...pika.rows, ...redis.rows]),
      '',
      `Reproduce: \`npm run build && node dist/bench/lanes.js --requests ${requests} --rounds ${rounds} --list ${listSize}\``,
      '',
    ].join('\n');
    const file = writeResult('lanes', markdown);
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

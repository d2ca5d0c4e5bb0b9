/**
 * What --metrics-port costs the data path: two proxy processes in front of the same redis-server,
 * one with `--metrics-port 0` (per-command timing on, /metrics scraped every second during its
 * runs — harsher than a usual 15 s scrape interval) and one without, side by side in one run:
 *
 *   redis-benchmark -h 127.0.0.1 -p <port> -t set,get -c 50 -n 400000 -P 16 -q --csv
 *
 * Rounds alternate the order (on/off, then off/on) because the shared host's speed drifts more
 * within a minute than the difference measured; each round's on/off ratio is taken within the
 * round and the median over rounds is reported (bench/lib/side-by-side.ts pairedRatio).
 * Target: on/off ≥ 0.95.
 *
 * Reproduce:  npm run build && node dist/bench/metrics-overhead.js [--requests 400000]
 *             [--clients 50] [--rounds 9] [--scrape-ms 1000 | --no-scrape]
 * Needs: redis-server, redis-benchmark (apt: redis-server redis-tools).
 * Writes bench/results/metrics-overhead.md and prints the same table.
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { CommandTiming, SlotTimes } from '../src/metrics/command-timing';
import { ReplyQueue } from '../src/server/reply-queue';
import { RedisServer } from '../test/helpers/redis-server';
import { ProxyProcess } from '../test/helpers/proxy-process';
import { median, pairedRatio } from './lib/side-by-side';
import { Cleanup, busyMachineWarning, readCpuSeconds, environmentLine, formatOps, markdownTable, numericFlag, parseInfo, requireCommands, runRedisBenchmark, writeResult } from './lib/tools';

const TESTS = ['SET', 'GET'];
const PIPELINE = 16;
type Target = 'on' | 'off';

/** Scrapes /metrics every `everyMs` until stopped; counts scrapes (they must have happened). */
function scraper(port: number, everyMs: number): { stop(): Promise<number> } {
  let scrapes = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
      await res.text();
      scrapes++;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return scrapes;
    },
  };
}

/**
 * The per-command timing alone, with no other process involved: ns per command of a ReplyQueue
 * (stub socket) taking, filling and flushing slots 16 at a time as at -P 16, with and without
 * SlotTimes. Medians of 5 alternating runs of 4 M commands.
 */
function hotPathNs(): { off: number; on: number } {
  const socket = { destroyed: false, writableLength: 0, write: () => true } as unknown as net.Socket;
  const reply = Buffer.from('+OK\r\n');
  const run = (timed: boolean, n: number): number => {
    const q = new ReplyQueue(socket, 1e9, () => undefined, () => undefined, timed ? new SlotTimes(new CommandTiming()) : null);
    const t0 = performance.now();
    for (let i = 0; i < n; i += 16) {
      const start = timed ? performance.now() : 0;
      for (let j = 0; j < 16; j++) q.fillRange(q.slot(0, start), reply, 0, reply.length);
      q.flush();
    }
    return ((performance.now() - t0) * 1e6) / n;
  };
  const off: number[] = [];
  const on: number[] = [];
  for (let r = 0; r < 5; r++) {
    off.push(run(false, 4_000_000));
    on.push(run(true, 4_000_000));
  }
  return { off: median(off), on: median(on) };
}

async function main(): Promise<void> {
  requireCommands([{ command: 'redis-server', aptPackage: 'redis-server' }, { command: 'redis-benchmark', aptPackage: 'redis-tools' }]);
  const requests = numericFlag('requests', 400_000);
  const clients = numericFlag('clients', 50);
  const rounds = numericFlag('rounds', 9);
  const scrapeMs = process.argv.includes('--no-scrape') ? 0 : numericFlag('scrape-ms', 1000);
  const hot = hotPathNs();
  console.error(`reply queue alone: ${hot.off.toFixed(1)} ns per command without timing, ${hot.on.toFixed(1)} ns with`);
  const cleanup = new Cleanup();
  try {
    const redis = await RedisServer.start();
    cleanup.add('redis-server', () => redis.stop());
    const on = await ProxyProcess.start({ backend: redis, extraArgs: ['--log-level', 'warn', '--metrics-port', '0'] });
    cleanup.add('proxy (metrics on)', () => on.stop());
    const off = await ProxyProcess.start({ backend: redis, extraArgs: ['--log-level', 'warn'] });
    cleanup.add('proxy (metrics off)', () => off.stop());
    const info = on.client();
    const metricsPort = Number(parseInfo(String(await info.call('INFO', 'proxy').finally(() => info.disconnect()))).metrics_port);
    if (!(metricsPort > 0)) throw new Error(`the proxy with --metrics-port 0 reports metrics_port ${metricsPort}`);
    const ports: Record<Target, number> = { on: on.port, off: off.port };

    // Not measured: one run per target, so both proxies' JIT has compiled the data path.
    for (const target of ['on', 'off'] as Target[]) await runRedisBenchmark(ports[target], { tests: 'set,get', clients, requests: 200_000, pipeline: PIPELINE });

    const results: Record<Target, Record<string, number[]>> = { on: {}, off: {} };
    // CPU of the proxy process per request (SET and GET runs together): less noisy than ops/s
    // when other work shares the CPUs.
    const cpuUs: Record<Target, number[]> = { on: [], off: [] };
    const pids: Record<Target, number> = { on: on.pid!, off: off.pid! };
    let scrapes = 0;
    for (let round = 1; round <= rounds; round++) {
      const order: Target[] = round % 2 === 1 ? ['on', 'off'] : ['off', 'on'];
      for (const target of order) {
        const scraping = target === 'on' && scrapeMs > 0 ? scraper(metricsPort, scrapeMs) : undefined;
        const cpuBefore = readCpuSeconds(pids[target])!;
        const result = await runRedisBenchmark(ports[target], { tests: 'set,get', clients, requests, pipeline: PIPELINE });
        cpuUs[target].push(((readCpuSeconds(pids[target])! - cpuBefore) * 1e6) / (2 * requests));
        scrapes += (await scraping?.stop()) ?? 0;
        for (const test of TESTS) {
          if (result.rps[test] === undefined) throw new Error(`no ${test} result from redis-benchmark against metrics ${target}:\n${result.raw}`);
          (results[target][test] ??= []).push(result.rps[test]);
        }
        console.error(`round ${round} metrics ${target.padEnd(3)} ${TESTS.map((t) => `${t} ${formatOps(result.rps[t])}/s`).join('  ')}  proxy CPU ${cpuUs[target].at(-1)!.toFixed(2)} µs/request`);
      }
    }

    // The timed commands really were counted: the histogram's count covers the measured runs.
    const scrape = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const counted = [...scrape.matchAll(/^pika_sync_proxy_command_duration_seconds_count\{[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);

    const rows = TESTS.map((test) => {
      const r = pairedRatio(results.on[test], results.off[test]);
      return [`${test} ops/s`, PIPELINE, formatOps(median(results.off[test])), formatOps(median(results.on[test])), r.median.toFixed(3), r.range] as Array<string | number>;
    });
    const cpu = pairedRatio(cpuUs.on, cpuUs.off);
    rows.push(['proxy CPU µs per request (SET+GET runs)', PIPELINE, median(cpuUs.off).toFixed(2), median(cpuUs.on).toFixed(2), cpu.median.toFixed(3), cpu.range]);
    const table = markdownTable(['test', '-P', 'metrics off', 'metrics on', 'on/off (median of rounds)', 'on/off per round'], rows);
    const markdown = [
      '# metrics-overhead',
      '',
      `\`redis-benchmark -t set,get -c ${clients} -n ${requests} -P ${PIPELINE} -q --csv\` through two proxies in front of one redis-server, one with \`--metrics-port 0\` (${scrapeMs > 0 ? `scraped every ${scrapeMs} ms while measured: ${scrapes} scrapes` : 'not scraped'}) and one without; ${rounds} rounds after one unmeasured warm-up run each, order alternating per round; ops/s (and the proxy's CPU per request, from /proc) are medians over rounds, the ratio is the median of each round's own ratio. Commands in the histogram at the end: ${counted}.`,
      '',
      `Environment: ${environmentLine()}. Everything (redis-server, both proxies, redis-benchmark) shares this machine.`,
      '',
      busyMachineWarning(),
      table,
      '',
      `The timing alone (ReplyQueue with a stub socket, 16 commands per flush, medians of 5 runs of 4 M commands): ${hot.off.toFixed(1)} ns per command without it, ${hot.on.toFixed(1)} ns with it.`,
      '',
      'Reproduce: `npm run build && node dist/bench/metrics-overhead.js`',
      '',
    ].join('\n');
    const file = writeResult('metrics-overhead', markdown);
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

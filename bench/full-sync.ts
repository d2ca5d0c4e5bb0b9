/**
 * Full sync, end to end, next to Redis's own replication on the same data in the same run.
 *
 *  1. redis A (master node) behind proxy A; redis B behind proxy B; redis C a plain replica.
 *  2. N mixed keys (bench/lib/mixed-data.ts, ~150 B of value per key) are written into A through
 *     proxy A with ioredis pipelines of 1000.
 *  Each round (--rounds, default 3; the median ratio is the result; odd rounds run 3 before 4,
 *  even rounds 4 before 3; each timed part starts after --settle-s idle seconds):
 *  3. Redis: `REPLICAOF A` on C, timed until INFO replication on C shows master_link_status:up and
 *     master_sync_in_progress:0; then C detaches and stops (its memory is not needed any more).
 *  4. Proxy: `SLAVEOF <proxy A>` on proxy B, timed until its INFO replication shows
 *     sync_confirmed:1 (snapshot build on A + meta + copy + verify + load + catch-up). sync_state is
 *     polled every 100 ms; phase durations are those observed transitions (±100 ms), and copy-phase
 *     throughput is master_sync_total_bytes over the observed copying time.
 *  5. Peak RSS of both proxies, sampled every 200 ms during step 4.
 *
 * Reproduce:  npm run build && node dist/bench/full-sync.js [--keys 1000000] [--rounds 3] [--settle-s 10] [--timeout-s 3600]
 * Writes bench/results/full-sync.md.
 */
import { ProxyProcess } from '../test/helpers/proxy-process';
import { RedisServer } from '../test/helpers/redis-server';
import { loadMixedKeys } from './lib/mixed-data';
import { POLL_MS, phaseDurations, reportedPhases, timeProxySync } from './lib/proxy-sync';
import { Cleanup, RssSampler, busyMachineWarning, environmentLine, formatMiB, formatOps, markdownTable, numericFlag, cpuMeter, formatCpu, parseInfo, ratio, requireCommands, sleep, writeResult } from './lib/tools';

async function timeRedisReplication(master: RedisServer, replica: RedisServer, timeoutMs: number): Promise<number> {
  const client = replica.client();
  try {
    const started = Date.now();
    await client.replicaof(master.host, master.port);
    for (;;) {
      const info = parseInfo(await client.info('replication'));
      if (info.master_link_status === 'up' && info.master_sync_in_progress === '0') return Date.now() - started;
      if (Date.now() - started > timeoutMs) throw new Error(`redis replication not up after ${timeoutMs} ms: ${JSON.stringify(info)}`);
      await sleep(POLL_MS);
    }
  } finally {
    await client.replicaof('NO', 'ONE').catch(() => undefined);
    client.disconnect();
  }
}

interface Round {
  round: number;
  redisMs: number;
  redisCpuUsed: Array<{ name: string; seconds: number }>;
  dbsizeC: number;
  sync: Awaited<ReturnType<typeof timeProxySync>>;
  proxyCpuUsed: Array<{ name: string; seconds: number }>;
  peakA: number;
  peakB: number;
  status: unknown;
  dbsizeB: number;
}

type RoundEnv = { redisA: RedisServer; redisB: RedisServer; proxyA: ProxyProcess; proxyB: ProxyProcess; timeoutMs: number; settleMs: number };

/**
 * One round: Redis's REPLICAOF into a fresh redis C and SLAVEOF between the proxies (then NO ONE),
 * back to back; odd rounds run Redis first, even rounds the proxies first, so neither always gets
 * the fresher machine.
 */
async function runRound(round: number, env: RoundEnv): Promise<Round> {
  const redisFirst = round % 2 === 1;
  // Each timed part starts on a settled machine: the part before it leaves the kernel freeing a
  // replica's memory and writing back snapshot files, which otherwise slows whoever goes second.
  await sleep(env.settleMs);
  const first = redisFirst ? await redisPart(round, env) : await proxyPart(round, env);
  await sleep(env.settleMs);
  const second = redisFirst ? await proxyPart(round, env) : await redisPart(round, env);
  const redis = (redisFirst ? first : second) as Awaited<ReturnType<typeof redisPart>>;
  const proxy = (redisFirst ? second : first) as Awaited<ReturnType<typeof proxyPart>>;
  console.error(`round ${round}: redis ${(redis.redisMs / 1000).toFixed(2)} s, proxy sync ${(proxy.sync.ms / 1000).toFixed(2)} s (${ratio(proxy.sync.ms, redis.redisMs)} x Redis)`);
  return { round, ...redis, ...proxy };
}

async function redisPart(round: number, env: RoundEnv): Promise<Pick<Round, 'redisMs' | 'redisCpuUsed' | 'dbsizeC'>> {
  console.error(`round ${round}: redis REPLICAOF (redis C replicates redis A)`);
  const redisC = await RedisServer.start();
  try {
    const redisCpu = cpuMeter({ 'redis A (master)': env.redisA.pid, 'redis C (replica)': redisC.pid });
    const redisMs = await timeRedisReplication(env.redisA, redisC, env.timeoutMs);
    const redisCpuUsed = redisCpu();
    const clientC = redisC.client();
    const dbsizeC = await clientC.dbsize();
    clientC.disconnect();
    return { redisMs, redisCpuUsed, dbsizeC };
  } finally {
    await redisC.stop();
  }
}

async function proxyPart(round: number, env: RoundEnv): Promise<Omit<Round, 'round' | 'redisMs' | 'redisCpuUsed' | 'dbsizeC'>> {
  const { redisA, redisB, proxyA, proxyB, timeoutMs } = env;
  console.error(`round ${round}: proxy SLAVEOF (proxy B replicates proxy A)`);
  const samplerA = new RssSampler(proxyA.pid!, 200).start();
  const samplerB = new RssSampler(proxyB.pid!, 200).start();
  const replica = proxyB.client();
  try {
    const proxyCpu = cpuMeter({ 'proxy A (master)': proxyA.pid, 'redis A (master node)': redisA.pid, 'proxy B (replica)': proxyB.pid, 'redis B (replica node)': redisB.pid });
    const sync = await timeProxySync(replica, proxyA, timeoutMs);
    const proxyCpuUsed = proxyCpu();
    const peakA = samplerA.stop();
    const peakB = samplerB.stop();
    const status = await replica.call('SYNCPROXY', 'STATUS').catch((err: Error) => `(SYNCPROXY STATUS failed: ${err.message})`);
    const directB = redisB.client();
    const dbsizeB = await directB.dbsize();
    directB.disconnect();
    await replica.call('SLAVEOF', 'NO', 'ONE');
    return { sync, proxyCpuUsed, peakA, peakB, status, dbsizeB };
  } finally {
    samplerA.stop();
    samplerB.stop();
    replica.disconnect();
  }
}

async function main(): Promise<void> {
  requireCommands([{ command: 'redis-server', aptPackage: 'redis-server' }]);
  const keys = numericFlag('keys', 1_000_000);
  const timeoutMs = numericFlag('timeout-s', 3600) * 1000;
  const roundsWanted = numericFlag('rounds', 3);
  const settleMs = numericFlag('settle-s', 10) * 1000;
  const cleanup = new Cleanup();
  try {
    // Diskless sync without the default 5 s wait for more replicas: Redis at its fastest.
    const redisA = await RedisServer.start({ extraArgs: ['--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0'] });
    cleanup.add('redis A', () => redisA.stop());
    const redisB = await RedisServer.start();
    cleanup.add('redis B', () => redisB.stop());
    // --snapshot-max-age-ms 0: every round's SLAVEOF gets a newly built snapshot, as the first does.
    const proxyA = await ProxyProcess.start({ backend: redisA, extraArgs: ['--log-level', 'warn', '--snapshot-max-age-ms', '0'] });
    cleanup.add('proxy A', () => proxyA.stop());
    const proxyB = await ProxyProcess.start({ backend: redisB, extraArgs: ['--log-level', 'warn'] });
    cleanup.add('proxy B', () => proxyB.stop());

    const writer = proxyA.client();
    cleanup.add('writer', () => writer.disconnect());
    console.error(`loading ${formatOps(keys)} mixed keys into redis A through proxy A`);
    const load = await loadMixedKeys(writer, keys, { onProgress: (n) => n % 100_000 === 0 && console.error(`  ${formatOps(n)} keys`) });
    const directA = redisA.client();
    cleanup.add('client A', () => directA.disconnect());
    const dbsizeA = await directA.dbsize();
    const usedMemoryA = Number(parseInfo(await directA.info('memory')).used_memory ?? 0);
    console.error(`loaded ${formatOps(load.keys)} keys in ${(load.ms / 1000).toFixed(1)} s (${formatOps((load.keys / load.ms) * 1000)} keys/s); DBSIZE ${dbsizeA}`);

    // Each round times Redis's replication and ours back to back (alternating which goes first), so
    // both see the same machine; the median ratio is the result (a shared 2-vCPU machine varies).
    const rounds: Round[] = [];
    for (let r = 1; r <= roundsWanted; r++) rounds.push(await runRound(r, { redisA, redisB, proxyA, proxyB, timeoutMs, settleMs }));
    const median = [...rounds].sort((x, y) => x.sync.ms / x.redisMs - y.sync.ms / y.redisMs)[Math.floor((rounds.length - 1) / 2)];
    const { sync, status, redisCpuUsed, proxyCpuUsed } = median;
    const phases = phaseDurations(sync.transitions, sync.ms);
    const statusText = typeof status === 'string' ? status : Array.isArray(status) ? status.map(String).join('\n') : JSON.stringify(status);
    const reported = reportedPhases(statusText);
    const observedCopyMs = phases.filter((p) => p.state === 'copying').reduce((sum, p) => sum + p.ms, 0);
    const copyMs = reported.get('copying') ?? observedCopyMs;
    const copySource = reported.has('copying') ? 'as reported by SYNCPROXY STATUS' : 'as observed by polling (±100 ms)';
    const copyRate = copyMs > 0 ? sync.totalBytes / (copyMs / 1000) : 0;
    const states = [...new Set([...reported.keys(), ...phases.map((p) => p.state)])];
    const phaseRows = states.map((state) => {
      const observed = phases.filter((p) => p.state === state).reduce((sum, p) => sum + p.ms, 0);
      const fromStatus = reported.get(state);
      return [state, `${(observed / 1000).toFixed(2)} s`, fromStatus === undefined ? 'n/a' : `${(fromStatus / 1000).toFixed(3)} s`];
    });
    const markdown = [
      '# full-sync',
      '',
      `${formatOps(load.keys)} mixed keys (40% strings, 15% each hash/list/set/zset of 4 elements; ${formatMiB(load.valueBytes)} of values, redis used_memory ${formatMiB(usedMemoryA)}), loaded through the master proxy in ${(load.ms / 1000).toFixed(1)} s (${formatOps((load.keys / load.ms) * 1000)} keys/s, pipelines of 1000).`,
      '',
      `Environment: ${environmentLine()}. All processes share this machine.`,
      '',
      busyMachineWarning(),
      markdownTable(
        ['round', 'Redis REPLICAOF (diskless, delay 0) until link up, sync done', 'pika-sync-proxy SLAVEOF until sync_confirmed:1', 'vs Redis', 'replica keys (Redis / proxy)', 'peak RSS master proxy', 'peak RSS replica proxy'],
        rounds.map((x) => [
          x === median ? `${x.round} (median)` : String(x.round), `${(x.redisMs / 1000).toFixed(2)} s`, `${(x.sync.ms / 1000).toFixed(2)} s`,
          x === median ? `**${ratio(x.sync.ms, x.redisMs)}**` : ratio(x.sync.ms, x.redisMs), `${x.dbsizeC} / ${x.dbsizeB}`, formatMiB(x.peakA), formatMiB(x.peakB),
        ]),
      ),
      '',
      `Peak RSS over all rounds: master proxy ${formatMiB(Math.max(...rounds.map((x) => x.peakA)))}, replica proxy ${formatMiB(Math.max(...rounds.map((x) => x.peakB)))}. The details below are the median round's.`,
      '',
      `Master DBSIZE ${dbsizeA}. Snapshot bytes copied (master_sync_total_bytes): ${formatMiB(sync.totalBytes)}; copy phase ${(copyMs / 1000).toFixed(2)} s ${copySource} → ${formatMiB(copyRate)}/s (the copy runs while the master still builds, so this is bounded by the build, not by the transfer).`,
      '',
      'CPU seconds used during each replication (user + system, from /proc/<pid>/stat): ' +
        `Redis REPLICAOF — ${formatCpu(redisCpuUsed)}; proxy SLAVEOF — ${formatCpu(proxyCpuUsed)}.`,
      '',
      'Phases: observed by polling sync_state every 100 ms (±100 ms), and as SYNCPROXY STATUS reports them:',
      '',
      markdownTable(['sync_state', 'observed', 'reported'], phaseRows),
      '',
      'SYNCPROXY STATUS at confirmation:',
      '',
      '```',
      statusText,
      '```',
      '',
      `Reproduce: \`npm run build && node dist/bench/full-sync.js --keys ${keys} --rounds ${roundsWanted} --settle-s ${settleMs / 1000}\``,
      '',
    ].join('\n');
    const file = writeResult('full-sync', markdown);
    console.log(markdown);
    console.log(`written to ${file}`);
    for (const x of rounds) if (x.dbsizeB !== dbsizeA || x.dbsizeC !== dbsizeA) throw new Error(`round ${x.round}: replicas have ${x.dbsizeC} (Redis) and ${x.dbsizeB} (proxy) keys, master ${dbsizeA}`);
  } finally {
    await cleanup.run();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});

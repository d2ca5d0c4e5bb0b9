/**
 * Full sync on real Pika 4.0.1, side by side in one run: Pika's own replication next to the
 * proxies' verified full sync, on the same data.
 *
 *  For each size (--keys, a comma-separated list):
 *  1. Pika A is seeded with N mixed keys (bench/lib/mixed-data.ts: 40% strings, 15% each hash,
 *     list, set, zset of 4 elements; every --ttl-every-th key (7: all five types) with a TTL of 1-2 days by SETEX or
 *     EXPIRE) as raw RESP through `redis-cli --pipe`; counted by SCAN and by Pika's INFO keyspace.
 *     A master proxy (`--snapshot-max-age-ms 0`: a new snapshot every round) starts in front of it.
 *  Each round (--rounds; odd rounds Pika first, even rounds the proxies first; --settle-s idle
 *  seconds before each timed part):
 *  2. Pika: Pika A's dump directory is removed (so it runs a new bgsave, as the master proxy builds
 *     a new snapshot), a fresh empty Pika C gets `SLAVEOF 127.0.0.1 <Pika A>`, timed until its INFO
 *     replication shows `master_link_status:up` and `db0:connected` (Pika has then received the
 *     bgsave's RocksDB files by rsync, opened them and connected its binlog stream). Its keys are
 *     then counted by SCAN (timed separately) and by INFO keyspace; Pika C is stopped.
 *  3. Proxy: the master proxy is restarted (same ports and data dir: fresh node connections,
 *     unless --keep-master-proxy; Pika closes connections idle for 60 s), a fresh empty Pika B behind a fresh replica proxy B; `SLAVEOF 127.0.0.1 <proxy A>` to
 *     proxy B, timed until its INFO replication shows `sync_confirmed:1` (snapshot build on A, meta,
 *     copy, verify, load, catch-up). Phases from SYNCPROXY STATUS JSON; keys on Pika B counted the
 *     same way; proxy B and Pika B are stopped.
 *  CPU seconds of every process involved (from /proc/<pid>/stat) and the proxies' peak RSS.
 *
 * Reproduce:  npm run build && node dist/bench/pika-full-sync.js [--keys 100000,1000000,3000000]
 *             [--rounds 3] [--settle-s 5] [--ttl-every 7] [--timeout-s 3600] [--keep-master-proxy]
 * Needs: ../shared/pika/start-pika beside the repo, redis-cli. Writes bench/results/pika-full-sync.md.
 * Exits with code 1 (after writing the results) when a replica's key count differs from the master's.
 */
import { existsSync, rmSync } from 'node:fs';
import Redis from 'ioredis';
import { ProxyProcess } from '../test/helpers/proxy-process';
import { PikaKeyspace, PikaNode, countKeysByScan, formatKeyspace, pikaKeyspace, requirePika, seedMixedKeys } from './lib/pika';
import { POLL_MS, ProxySync, Transition, phaseDurations, reportedPhasesJson, timeProxySync } from './lib/proxy-sync';
import { Cleanup, RssSampler, busyMachineWarning, cpuMeter, environmentLine, formatCpu, formatMiB, formatOps, markdownTable, numericFlag, ratio, requireCommands, sleep, writeResult } from './lib/tools';

type CpuUsed = Array<{ name: string; seconds: number }>;

/**
 * Everything running right now, stopped by main's one Cleanup on an error or a signal (one
 * Cleanup only: each installs its own signal handlers, and the first to finish exits).
 */
const live = new Set<() => Promise<unknown>>();
async function using<T extends { stop(): Promise<unknown> }, R>(resource: T, body: (r: T) => Promise<R>): Promise<R> {
  const stop = () => resource.stop();
  live.add(stop);
  try {
    return await body(resource);
  } finally {
    live.delete(stop);
    await stop();
  }
}

interface KeyCount {
  scan: number;
  scanMs: number;
  keyspace?: PikaKeyspace;
}

interface PikaSync {
  ms: number;
  transitions: Transition[];
}

interface Round {
  round: number;
  pika: PikaSync;
  pikaCpu: CpuUsed;
  pikaKeys: KeyCount;
  freshDump: boolean;
  proxy: ProxySync;
  proxyCpu: CpuUsed;
  proxyKeys: KeyCount;
  phases?: Map<string, number>;
  peakA: number;
  peakB: number;
  /** sync_attempts at confirmation: more than 1 means a retry is in the time. */
  attempts: number;
}

/** Pika's own state, as INFO replication of a Pika replica shows it. */
function pikaState(text: string): { state: string; up: boolean } {
  const link = /^master_link_status:(\S+)/m.exec(text)?.[1] ?? '?';
  const connect = /^repl_connect_status:\r?\n(db0:\S+)/m.exec(text)?.[1] ?? '-';
  const repl = /^db_repl_state:\((.*?)\)/m.exec(text)?.[1] ?? '-';
  return { state: `link ${link}, ${connect}, repl_state ${repl}`, up: link === 'up' && connect === 'db0:connected' };
}

async function timePikaReplication(master: PikaNode, replica: Redis, timeoutMs: number): Promise<PikaSync> {
  const transitions: Transition[] = [];
  const started = Date.now();
  const reply = await replica.call('SLAVEOF', '127.0.0.1', String(master.port));
  if (reply !== 'OK') throw new Error(`Pika SLAVEOF answered ${String(reply)}`);
  for (;;) {
    const text = (await replica.call('INFO', 'replication')) as string;
    const now = Date.now() - started;
    const { state, up } = pikaState(text);
    if (transitions.length === 0 || transitions[transitions.length - 1].state !== state) {
      transitions.push({ state, atMs: now });
      console.error(`${(now / 1000).toFixed(1).padStart(7)} s  pika: ${state}`);
    }
    if (up) return { ms: now, transitions };
    if (now > timeoutMs) throw new Error(`Pika replication not up after ${timeoutMs} ms: ${text}`);
    await sleep(POLL_MS);
  }
}

async function countKeys(node: PikaNode): Promise<KeyCount> {
  const client = node.client();
  try {
    const started = Date.now();
    const scan = await countKeysByScan(client);
    const scanMs = Date.now() - started;
    const keyspace = await pikaKeyspace(client);
    return { scan, scanMs, keyspace };
  } finally {
    client.disconnect();
  }
}

type Env = { pikaA: PikaNode; proxyA: ProxyProcess; timeoutMs: number; settleMs: number; restartMaster: boolean };

async function pikaPart(round: number, env: Env): Promise<Pick<Round, 'pika' | 'pikaCpu' | 'pikaKeys' | 'freshDump'>> {
  console.error(`round ${round}: Pika SLAVEOF (Pika C replicates Pika A)`);
  // A new bgsave every round, as the master proxy builds a new snapshot every round (Pika reuses
  // a dump whose binlog position is still available).
  rmSync(env.pikaA.dumpDir, { recursive: true, force: true });
  return using(await PikaNode.start(), async (pikaC) => {
    const client = pikaC.client();
    try {
      const meter = cpuMeter({ 'Pika A (master)': env.pikaA.pid, 'Pika C (replica)': pikaC.pid });
      const pika = await timePikaReplication(env.pikaA, client, env.timeoutMs);
      const pikaCpu = meter();
      const freshDump = existsSync(env.pikaA.dumpDir);
      const pikaKeys = await countKeys(pikaC);
      return { pika, pikaCpu, pikaKeys, freshDump };
    } finally {
      client.disconnect();
    }
  });
}

async function proxyPart(round: number, env: Env): Promise<Pick<Round, 'proxy' | 'proxyCpu' | 'proxyKeys' | 'phases' | 'peakA' | 'peakB' | 'attempts'>> {
  console.error(`round ${round}: proxy SLAVEOF (proxy B in front of Pika B replicates proxy A in front of Pika A)`);
  if (env.restartMaster) {
    // Fresh node connections for the master proxy: Pika's `timeout : 60` closes connections idle
    // for 60 s, and a build started on such a connection hangs until ECONNRESET (~50 s), then the
    // replica retries (see RESULTS.md); --keep-master-proxy measures that case.
    await env.proxyA.restart();
  }
  return using(await PikaNode.start(), async (pikaB) =>
    using(await ProxyProcess.start({ backend: pikaB, extraArgs: ['--log-level', 'warn'] }), async (proxyB) => {
      const replica = proxyB.client();
      try {
        const samplerA = new RssSampler(env.proxyA.pid!, 200).start();
        const samplerB = new RssSampler(proxyB.pid!, 200).start();
        const meter = cpuMeter({ 'proxy A (master)': env.proxyA.pid, 'Pika A (master node)': env.pikaA.pid, 'proxy B (replica)': proxyB.pid, 'Pika B (replica node)': pikaB.pid });
        let proxy: ProxySync;
        try {
          proxy = await timeProxySync(replica, env.proxyA, env.timeoutMs);
        } finally {
          samplerA.stop();
          samplerB.stop();
        }
        const proxyCpu = meter();
        const statusJson = (await replica.call('SYNCPROXY', 'STATUS', 'JSON').catch((err: Error) => `(failed: ${err.message})`)) as string;
        const phases = reportedPhasesJson(statusJson);
        const proxyKeys = await countKeys(pikaB);
        await replica.call('SLAVEOF', 'NO', 'ONE');
        return { proxy, proxyCpu, proxyKeys, phases, peakA: samplerA.peak, peakB: samplerB.peak, attempts: Number(proxy.info.sync_attempts ?? 0) };
      } finally {
        replica.disconnect();
      }
    }),
  );
}

async function runRound(round: number, env: Env): Promise<Round> {
  const pikaFirst = round % 2 === 1;
  await sleep(env.settleMs);
  const first = pikaFirst ? await pikaPart(round, env) : await proxyPart(round, env);
  await sleep(env.settleMs);
  const second = pikaFirst ? await proxyPart(round, env) : await pikaPart(round, env);
  const r = { round, ...first, ...second } as Round;
  console.error(`round ${round}: Pika ${(r.pika.ms / 1000).toFixed(2)} s, proxy ${(r.proxy.ms / 1000).toFixed(2)} s (${ratio(r.proxy.ms, r.pika.ms)} x Pika); keys Pika C ${r.pikaKeys.scan}, Pika B ${r.proxyKeys.scan}`);
  return r;
}

interface SizeResult {
  keys: number;
  seed: Awaited<ReturnType<typeof seedMixedKeys>>;
  master: KeyCount;
  rounds: Round[];
  median: Round;
}

async function runSize(keys: number, options: { rounds: number; timeoutMs: number; settleMs: number; ttlEvery: number; restartMaster: boolean }): Promise<SizeResult> {
  return using(await PikaNode.start(), async (pikaA) => {
    console.error(`\n${formatOps(keys)} keys: seeding Pika A (port ${pikaA.port}) through redis-cli --pipe`);
    const seed = await seedMixedKeys(pikaA.port, keys, { ttlEvery: options.ttlEvery, onProgress: (n) => n % 500_000 === 0 && console.error(`  ${formatOps(n)} keys`) });
    const master = await countKeys(pikaA);
    console.error(`seeded ${formatOps(keys)} keys (${seed.ttlKeys} with TTL) in ${(seed.ms / 1000).toFixed(1)} s; SCAN counts ${master.scan}; INFO keyspace: ${formatKeyspace(master.keyspace)}`);
    return using(await ProxyProcess.start({ backend: pikaA, extraArgs: ['--log-level', 'warn', '--snapshot-max-age-ms', '0'] }), async (proxyA) => {
      const rounds: Round[] = [];
      for (let r = 1; r <= options.rounds; r++) rounds.push(await runRound(r, { pikaA, proxyA, ...options }));
      const sorted = [...rounds].sort((x, y) => x.proxy.ms / x.pika.ms - y.proxy.ms / y.pika.ms);
      return { keys, seed, master, rounds, median: sorted[Math.floor((sorted.length - 1) / 2)] };
    });
  });
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const keysCell = (k: KeyCount) => `${k.scan} (TTL ${k.keyspace?.totalExpires ?? 'n/a'})`;

function sizeSection(s: SizeResult): string {
  const m = s.median;
  const pikaPhases = phaseDurations(m.pika.transitions, m.pika.ms).map((p) => [p.state, seconds(p.ms)]);
  const proxyObserved = phaseDurations(m.proxy.transitions, m.proxy.ms);
  const states = [...new Set([...(m.phases?.keys() ?? []), ...proxyObserved.map((p) => p.state)])];
  const proxyPhases = states.map((state) => {
    const observed = proxyObserved.filter((p) => p.state === state).reduce((sum, p) => sum + p.ms, 0);
    const reported = m.phases?.get(state);
    return [state, seconds(observed), reported === undefined ? 'n/a' : `${(reported / 1000).toFixed(3)} s`];
  });
  const byType = (k?: PikaKeyspace) => (k ? Object.entries(k.keys).filter(([, n]) => n > 0).map(([t, n]) => `${t} ${n} (TTL ${k.expires[t]})`).join(', ') : 'n/a');
  return [
    `## ${formatOps(s.keys)} keys`,
    '',
    `Seeded into Pika A in ${(s.seed.ms / 1000).toFixed(1)} s (${formatOps((s.keys / s.seed.ms) * 1000)} keys/s, ${s.seed.commands} commands through redis-cli --pipe, ${formatMiB(s.seed.valueBytes)} of values, ${s.seed.ttlKeys} keys with a TTL). Master Pika A: SCAN ${s.master.scan} keys; INFO keyspace ${byType(s.master.keyspace)}.`,
    '',
    markdownTable(
      ['round', 'Pika SLAVEOF → link up, db0:connected', 'proxy SLAVEOF → sync_confirmed:1', 'proxy / Pika', 'keys on Pika C (Pika replication)', 'keys on Pika B (proxy)', 'SCAN of the replica', 'new bgsave', 'proxy sync attempts', 'peak RSS master / replica proxy'],
      s.rounds.map((x) => [
        x === m ? `${x.round} (median)` : String(x.round), seconds(x.pika.ms), seconds(x.proxy.ms), x === m ? `**${ratio(x.proxy.ms, x.pika.ms)}**` : ratio(x.proxy.ms, x.pika.ms),
        keysCell(x.pikaKeys), keysCell(x.proxyKeys), `${seconds(x.pikaKeys.scanMs)} / ${seconds(x.proxyKeys.scanMs)}`, x.freshDump ? 'yes' : 'no', x.attempts, `${formatMiB(x.peakA)} / ${formatMiB(x.peakB)}`,
      ]),
    ),
    '',
    `Median round, CPU seconds (user + system, /proc/<pid>/stat): Pika replication — ${formatCpu(m.pikaCpu)}; proxy sync — ${formatCpu(m.proxyCpu)}.`,
    '',
    `Median round, keys by type on the replicas (INFO keyspace): Pika C ${byType(m.pikaKeys.keyspace)}; Pika B ${byType(m.proxyKeys.keyspace)}.`,
    '',
    `Median round, Pika's replica states (INFO replication polled every ${POLL_MS} ms):`,
    '',
    markdownTable(['Pika state', 'observed'], pikaPhases),
    '',
    `Median round, the proxy's phases (sync_state polled every ${POLL_MS} ms, and as SYNCPROXY STATUS JSON reports them); snapshot bytes ${formatMiB(m.proxy.totalBytes)}:`,
    '',
    markdownTable(['sync_state', 'observed', 'reported'], proxyPhases),
    '',
  ].join('\n');
}

function keysFlag(fallback: number[]): number[] {
  const i = process.argv.indexOf('--keys');
  if (i < 0) return fallback;
  const sizes = String(process.argv[i + 1]).split(',').map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error(`--keys expects positive integers separated by commas, got '${process.argv[i + 1]}'`);
  return sizes;
}

async function main(): Promise<void> {
  requirePika();
  requireCommands([{ command: 'redis-cli', aptPackage: 'redis-tools' }]);
  const sizes = keysFlag([100_000, 1_000_000, 3_000_000]);
  const rounds = numericFlag('rounds', 3);
  const settleMs = numericFlag('settle-s', 5) * 1000;
  const timeoutMs = numericFlag('timeout-s', 3600) * 1000;
  const ttlEvery = numericFlag('ttl-every', 7);
  const restartMaster = !process.argv.includes('--keep-master-proxy');
  const cleanup = new Cleanup();
  cleanup.add('running nodes and proxies', () => Promise.all([...live].map((stop) => stop())));
  const environment = environmentLine();
  const results: SizeResult[] = [];
  const write = () => {
    const summary = markdownTable(
      ['keys', 'Pika (median round)', 'proxy (median round)', 'proxy / Pika (median of rounds)', 'per round', 'replica keys Pika C / Pika B / master (median round)'],
      results.map((s) => [
        formatOps(s.keys), seconds(s.median.pika.ms), seconds(s.median.proxy.ms), `**${ratio(s.median.proxy.ms, s.median.pika.ms)}**`,
        s.rounds.map((x) => ratio(x.proxy.ms, x.pika.ms)).join(', '), `${s.median.pikaKeys.scan} / ${s.median.proxyKeys.scan} / ${s.master.scan}`,
      ]),
    );
    const mismatches = results.flatMap((s) => s.rounds.filter((x) => x.pikaKeys.scan !== s.master.scan || x.proxyKeys.scan !== s.master.scan).map((x) => `${formatOps(s.keys)} keys, round ${x.round}: Pika C ${x.pikaKeys.scan}, Pika B ${x.proxyKeys.scan}, master ${s.master.scan} (TTL keys ${x.pikaKeys.keyspace?.totalExpires ?? 'n/a'} / ${x.proxyKeys.keyspace?.totalExpires ?? 'n/a'} / ${s.master.keyspace?.totalExpires ?? 'n/a'})`));
    const markdown = [
      '# pika-full-sync',
      '',
      `Pika 4.0.1's own full sync (bgsave + rsync of RocksDB files) next to pika-sync-proxy's (SLAVEOF → sync_confirmed:1), the same mixed keys, ${rounds} round(s) per size, ${restartMaster ? 'the master proxy restarted before each proxy sync (fresh node connections)' : 'the master proxy kept running across rounds'}, odd rounds Pika first, ${settleMs / 1000} s idle before each timed part; every key index divisible by ${ttlEvery} has a TTL of 1-2 days.`,
      '',
      `Environment: ${environment}. Every process (Pika nodes, proxies, the loader) shares this machine.`,
      '',
      busyMachineWarning(),
      summary,
      '',
      mismatches.length ? `**Key counts differ from the master's:**\n\n${mismatches.map((x) => `- ${x}`).join('\n')}\n` : 'Every replica had the master\'s key count (SCAN).\n',
      ...results.map(sizeSection),
      `Reproduce: \`npm run build && node dist/bench/pika-full-sync.js --keys ${sizes.join(',')} --rounds ${rounds} --settle-s ${settleMs / 1000} --ttl-every ${ttlEvery}${restartMaster ? '' : ' --keep-master-proxy'}\``,
      '',
    ].join('\n');
    return { file: writeResult('pika-full-sync', markdown), markdown, mismatches };
  };
  for (const keys of sizes) {
    results.push(await runSize(keys, { rounds, timeoutMs, settleMs, ttlEvery, restartMaster }));
    write(); // partial results survive a later size's failure
  }
  await cleanup.run();
  const { file, markdown, mismatches } = write();
  console.log(markdown);
  console.log(`written to ${file}`);
  if (mismatches.length) {
    console.error(`replica key counts differ from the master's in ${mismatches.length} round(s)`);
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});

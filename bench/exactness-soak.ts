/**
 * Exactness soak: N full syncs through two proxies over real nodes (Pika by default) while
 * adversarial writers write every type and every TTL form a client may send through the master
 * proxy, before, during and after the sync. Each run is randomized (data size, snapshot file
 * size, copy throttle and chunk size, when SLAVEOF comes, how long writing goes on after the
 * confirmation) and must end with the two nodes equal key by key (type, value, TTL within 1 s),
 * every key written with a TTL present with a TTL on both nodes, and SYNCPROXY VERIFY reporting 0
 * differences. On redis-server a stream consumer group is worked throughout too (reads, acks,
 * claims; bench/lib/group-consumers.ts) and its state compared. Not a timing benchmark: it counts
 * runs that ended exact.
 *
 *   npm run build && node dist/bench/exactness-soak.js [--kind pika|redis] [--runs 20]
 */
import { compareNodes } from '../test/helpers/compare-nodes';
import { GroupConsumers, groupState } from './lib/group-consumers';
import type { NodeKind } from '../test/helpers/nodes';
import { Cleanup, FAST_RETRY, Writers, expectTtlKeysKept, proxyClient, replInfo, seed, sleep, waitCaughtUp, waitFor } from '../test/replica-e2e-fixture';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)];

interface RunResult {
  run: number;
  exact: boolean;
  strings: number;
  writerOps: number;
  ttlKeys: number;
  keysVerified: number;
  syncMs: number;
  problem?: string;
}

async function oneRun(kind: NodeKind, run: number): Promise<RunResult> {
  const cleanup = new Cleanup();
  const strings = 500 + Math.floor(Math.random() * 6000);
  const result: RunResult = { run, exact: false, strings, writerOps: 0, ttlKeys: 0, keysVerified: 0, syncMs: 0 };
  try {
    const masterNode = await cleanup.node(kind);
    const replicaNode = await cleanup.node(kind);
    await seed(masterNode, { strings, prefix: `r${run}` });
    const master = await cleanup.proxy(masterNode, ['--snapshot-file-size', pick(['64kb', '256kb', '1mb'])]);
    const replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--sync-throttle', pick(['512kb', '2mb', '0']), '--sync-chunk-size', pick(['16kb', '64kb', '1mb'])]);
    const mc = cleanup.client(proxyClient(master));
    const rc = cleanup.client(proxyClient(replica));
    const writers = new Writers(master, kind).start();
    cleanup.add(writers, (w) => w.stop());
    // On redis-server a stream consumer group is read, acknowledged and claimed from throughout.
    const consumers = kind === 'redis' ? new GroupConsumers(cleanup.client(proxyClient(master))) : undefined;
    if (consumers) {
      await consumers.prepare();
      cleanup.add(consumers.start(), (g) => g.stop());
    }
    await sleep(50 + Math.random() * 700);
    const started = Date.now();
    await rc.call('SLAVEOF', '127.0.0.1', String(master.port));
    await waitFor('sync_confirmed:1', async () => (await replInfo(rc)).sync_confirmed === '1', 120_000, 20);
    result.syncMs = Date.now() - started;
    await sleep(Math.random() * 1500);
    await writers.stop();
    await consumers?.stop();
    if (consumers?.errors.length) throw new Error(`group consumer errors: ${consumers.errors.slice(0, 3).join('; ')}`);
    result.writerOps = writers.ops + (consumers?.ops ?? 0);
    result.ttlKeys = writers.ttlKeys.size;
    if (writers.errors.length > 0) throw new Error(`writer errors: ${writers.errors.slice(0, 3).join('; ')}`);
    await waitCaughtUp(mc, rc, 60_000);
    const diffs = await compareNodes(masterNode, replicaNode);
    if (diffs.length > 0) throw new Error(`nodes differ: ${diffs.slice(0, 5).join('; ')}`);
    if (consumers) {
      const [m, r] = [cleanup.client(masterNode.client()), cleanup.client(replicaNode.client())];
      const [ms, rs] = [await groupState(m), await groupState(r)];
      if (ms !== rs) throw new Error(`consumer group differs: master ${ms.slice(0, 300)} replica ${rs.slice(0, 300)}`);
    }
    await expectTtlKeysKept(writers.ttlKeys, masterNode, replicaNode);
    const verify = String(await rc.call('SYNCPROXY', 'VERIFY'));
    if (!/^result: ok$/m.test(verify)) throw new Error(`SYNCPROXY VERIFY: ${verify.replace(/\n/g, '; ')}`);
    result.keysVerified = Number(/^keys: (\d+)$/m.exec(verify)?.[1] ?? 0);
    result.exact = true;
  } catch (err) {
    result.problem = (err as Error).message.slice(0, 500);
  } finally {
    await cleanup.run().catch((err: Error) => (result.problem ??= `cleanup: ${err.message}`));
  }
  return result;
}

async function main(): Promise<void> {
  const kind = arg('kind', 'pika') as NodeKind;
  const runs = Number(arg('runs', '20'));
  const results: RunResult[] = [];
  for (let run = 1; run <= runs; run++) {
    const r = await oneRun(kind, run);
    results.push(r);
    console.error(`run ${run}/${runs}: ${r.exact ? 'exact' : `NOT EXACT: ${r.problem}`} (${r.strings} strings/db seeded, ${r.writerOps} writes, ${r.ttlKeys} TTL-form keys, sync ${r.syncMs} ms, ${r.keysVerified} keys verified)`);
  }
  const exact = results.filter((r) => r.exact).length;
  console.log(`| node | runs | exact | writes per run (min-max) | TTL-form keys per run | sync ms (min-max) |`);
  console.log(`| --- | --- | --- | --- | --- | --- |`);
  const span = (xs: number[]): string => `${Math.min(...xs)}-${Math.max(...xs)}`;
  console.log(`| ${kind} | ${runs} | ${exact} | ${span(results.map((r) => r.writerOps))} | ${span(results.map((r) => r.ttlKeys))} | ${span(results.map((r) => r.syncMs))} |`);
  process.exit(exact === runs ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

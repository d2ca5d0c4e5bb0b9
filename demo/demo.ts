/**
 * `npm run demo`: a full sync you can watch, end to end, with real processes.
 *
 *  1. Two redis-servers and two pika-sync-proxy processes (the built CLI) on free ports, temp dirs.
 *  2. Sample data of every type into the master through its proxy (db 0 and db 3, TTL keys, a
 *     stream, a 50,000-field hash), and a little write traffic that keeps running during the sync.
 *  3. SLAVEOF on the replica proxy; GET on the replica every 100 ms prints each distinct answer:
 *     -MASTERDOWN with the state and progress until the sync is confirmed.
 *  4. sync_confirmed:1, then every key of every db compared through both proxies (type, value,
 *     TTL), the verdict, SLAVEOF NO ONE, and cleanup of every process and temp dir (also on an
 *     error or Ctrl-C). Exit code 0 only when the replica equals the master.
 */
import Redis from 'ioredis';
import { Cleanup, parseInfo, sleep } from '../bench/lib/tools';
import { ProxyProcess } from '../test/helpers/proxy-process';
import { RedisServer } from '../test/helpers/redis-server';
import { compareDb } from './compare';
import { BIG_HASH_FIELDS, loadSampleData, startBackgroundWrites } from './sample-data';

const POLL_MS = 100;
const SYNC_TIMEOUT_MS = 5 * 60_000;

function step(text: string): void {
  console.log(`\n== ${text}`);
}

function elapsed(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1).padStart(5)} s`;
}

/** GET on the replica until it answers a value; prints every distinct refusal on the way. */
async function watchSync(replica: Redis, probeKey: string): Promise<void> {
  const started = Date.now();
  let last = '';
  for (;;) {
    try {
      const value = await replica.get(probeKey);
      console.log(`${elapsed(started)}  GET ${probeKey} -> ${JSON.stringify(value)} (reads served)`);
      return;
    } catch (err) {
      const text = (err as Error).message;
      if (text !== last) console.log(`${elapsed(started)}  GET ${probeKey} -> -${text}`);
      last = text;
      if (!text.startsWith('MASTERDOWN')) throw new Error(`expected -MASTERDOWN while syncing, got -${text}`);
      if (/\bfailed\b/.test(text)) throw new Error(`the sync failed: ${text}`);
    }
    if (Date.now() - started > SYNC_TIMEOUT_MS) throw new Error(`sync not confirmed after ${SYNC_TIMEOUT_MS / 1000} s`);
    await sleep(POLL_MS);
  }
}

/** After the writers stopped: the replica has applied the master's last write-log offset. */
async function waitForCatchUp(master: Redis, replica: Redis): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const masterOffset = Number(parseInfo((await master.call('INFO', 'replication')) as string).master_repl_offset);
    const replicaInfo = parseInfo((await replica.call('INFO', 'replication')) as string);
    // slave_repl_offset: what the replica applied (Redis's meaning); master_repl_offset on a
    // replica is the master's offset as last heard.
    const replicaOffset = Number(replicaInfo.slave_repl_offset ?? replicaInfo.master_repl_offset);
    if (Number.isFinite(masterOffset) && replicaOffset >= masterOffset) {
      console.log(`replica applied write-log offset ${replicaOffset} (master ${masterOffset})`);
      return;
    }
    if (Date.now() > deadline) throw new Error(`replica at offset ${replicaOffset}, master at ${masterOffset} after 30 s`);
    await sleep(POLL_MS);
  }
}

async function databases(client: Redis): Promise<number> {
  try {
    const reply = (await client.call('CONFIG', 'GET', 'databases')) as string[];
    return Number(reply[1]) || 1;
  } catch {
    return 1; // a node that refuses CONFIG (Pika may): one database
  }
}

/** Proxies started so far, so a failure can show their last log lines. */
const runningProxies: Array<{ name: string; proxy: ProxyProcess }> = [];

async function run(cleanup: Cleanup): Promise<boolean> {
  step('starting two redis-servers and two pika-sync-proxy processes');
  const nodeA = await RedisServer.start();
  cleanup.add('redis A', () => nodeA.stop());
  const nodeB = await RedisServer.start();
  cleanup.add('redis B', () => nodeB.stop());
  const master = await ProxyProcess.start({ backend: nodeA });
  cleanup.add('master proxy', () => master.stop());
  const replicaProxy = await ProxyProcess.start({ backend: nodeB });
  cleanup.add('replica proxy', () => replicaProxy.stop());
  runningProxies.push({ name: 'master proxy', proxy: master }, { name: 'replica proxy', proxy: replicaProxy });
  console.log(`master : proxy 127.0.0.1:${master.port} (sync ${master.syncPort}) -> redis ${nodeA.address}`);
  console.log(`replica: proxy 127.0.0.1:${replicaProxy.port} (sync ${replicaProxy.syncPort}) -> redis ${nodeB.address}`);

  const clients: Redis[] = [];
  cleanup.add('clients', () => clients.forEach((c) => c.disconnect()));
  const connect = (proxy: ProxyProcess) => (db: number) => {
    const c = new Redis({ host: '127.0.0.1', port: proxy.port, db, maxRetriesPerRequest: 1 });
    clients.push(c);
    return c;
  };

  step('loading sample data into the master through its proxy');
  const summary = await loadSampleData(connect(master));
  console.log(`strings, hashes, lists, sets, zsets, a stream, TTL keys; db 0: ${summary.keysByDb[0]} keys (one hash of ${BIG_HASH_FIELDS} fields), db 3: ${summary.keysByDb[3]} keys`);

  const replica = connect(replicaProxy)(0);
  const masterClient = connect(master)(0);
  console.log(`replica before SLAVEOF: GET db0:string:1 -> ${JSON.stringify(await replica.get('db0:string:1'))} (its node is empty)`);

  step(`SLAVEOF 127.0.0.1 ${master.port} on the replica proxy (writes keep going on the master)`);
  const writes = startBackgroundWrites(connect(master)(0));
  console.log(`SLAVEOF -> ${String(await replica.call('SLAVEOF', '127.0.0.1', String(master.port)))}`);
  try {
    await replica.set('demo:write-to-replica', 'x');
    console.log('SET on the replica was accepted (unexpected)');
  } catch (err) {
    console.log(`SET on the replica -> -${(err as Error).message}`);
  }
  await watchSync(replica, 'db0:string:1');

  const info = parseInfo((await replica.call('INFO', 'replication')) as string);
  console.log(`sync_confirmed:${info.sync_confirmed}  (sync_state:${info.sync_state}, master_link_status:${info.master_link_status}, sync_attempts:${info.sync_attempts})`);
  if (info.sync_confirmed !== '1') throw new Error('reads were served but INFO does not show sync_confirmed:1');
  const written = await writes.stop();
  console.log(`${written} transactions written to the master during the sync; waiting for the replica to apply them`);
  await waitForCatchUp(masterClient, replica);

  step('comparing every key through both proxies (type, value, TTL)');
  const dbCount = await databases(masterClient);
  let equal = true;
  for (let db = 0; db < dbCount; db++) {
    const result = await compareDb(connect(master)(db), connect(replicaProxy)(db), db);
    if (result.masterKeys === 0 && result.replicaKeys === 0) continue;
    const ok = result.differences.length === 0 && result.masterKeys === result.replicaKeys;
    equal &&= ok;
    console.log(`db ${db}: master ${result.masterKeys} keys, replica ${result.replicaKeys} keys: ${ok ? 'identical' : 'DIFFERENT'}`);
    for (const d of result.differences) console.log(`   ${d}`);
  }
  console.log(equal ? '\nVERDICT: the replica equals the master.' : '\nVERDICT: the replica DIFFERS from the master.');

  step('SLAVEOF NO ONE');
  console.log(`SLAVEOF NO ONE -> ${String(await replica.call('SLAVEOF', 'NO', 'ONE'))}`);
  return equal;
}

async function main(): Promise<void> {
  const cleanup = new Cleanup();
  let exitCode = 1;
  try {
    exitCode = (await run(cleanup)) ? 0 : 1;
  } catch (err) {
    if (cleanup.interrupted) return; // the signal handler cleans up and exits with 130
    console.error(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}`);
    for (const { name, proxy } of runningProxies) console.error(`\n-- last log lines of the ${name}:\n${proxy.tail(15)}`);
  } finally {
    step('cleanup: stopping every process, removing temp dirs');
    await cleanup.run();
  }
  process.exit(exitCode);
}

void main();

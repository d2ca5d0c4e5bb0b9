/**
 * Real Pika 4.0.1 nodes for the Pika benchmarks: started through `<repo>/../shared/pika/start-pika
 * PORT DIR` (foreground; the script execs pika, so the child's pid is Pika's), on a port from the
 * tests' freePikaPort (its companions PORT+1000, PORT+2000 and PORT+10001 free too), in a temp dir
 * that stop() removes. Also: seeding the mixed data set as raw RESP through `redis-cli --pipe`, counting
 * keys by SCAN (Pika's DBSIZE is stale) and reading Pika's own keyspace statistics.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
// Below the ephemeral range with its three companions free (an outgoing connection may hold a
// port there, and Pika dies at start when its rsync port +10001 is taken).
import { freePikaPort } from '../../test/helpers/pika-server';
import { encodeResp, mixedCommands, MixedOptions } from './mixed-data';
import { sleep } from './tools';

/** dist/bench/lib/pika.js → <repo>/../shared/pika/start-pika (shared/ sits beside the repo). */
export const START_PIKA = process.env.PIKA_START ?? path.resolve(__dirname, '../../../../shared/pika/start-pika');

/** Exits with a message when the Pika build is not beside the repo. */
export function requirePika(): void {
  if (existsSync(START_PIKA)) return;
  console.error(`missing: ${START_PIKA} (the Pika 4.0.1 build, ../shared/pika/ beside the repo; see its README)`);
  process.exit(2);
}

export class PikaNode {
  readonly host = '127.0.0.1';
  private exited?: Promise<void>;

  private constructor(readonly port: number, readonly dir: string, private readonly proc: ChildProcess) {}

  static async start(timeoutMs = 60_000): Promise<PikaNode> {
    const port = await freePikaPort();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-bench-pika-'));
    const proc = spawn('bash', [START_PIKA, String(port), dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    const node = new PikaNode(port, dir, proc);
    node.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`start-pika ${port} exited with ${proc.exitCode}: ${stderr}`);
      const client = new Redis({ host: node.host, port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
      client.on('error', () => undefined); // refused while Pika starts: expected
      const ok = await client
        .connect()
        .then(() => client.ping())
        .then((r) => r === 'PONG')
        .catch(() => false);
      client.disconnect();
      if (ok) return node;
      if (Date.now() > deadline) {
        await node.stop();
        throw new Error(`pika on ${port} did not answer PING within ${timeoutMs} ms: ${stderr}`);
      }
      await sleep(100);
    }
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** Where Pika keeps its bgsave dumps (what its full sync sends). */
  get dumpDir(): string {
    return path.join(this.dir, 'dump');
  }

  client(): Redis {
    return new Redis({ host: this.host, port: this.port, maxRetriesPerRequest: 1 });
  }

  /** SIGTERM, SIGKILL after `timeoutMs`; removes the data dir. */
  async stop(timeoutMs = 30_000): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      const stopped = await Promise.race([this.exited!.then(() => true), sleep(timeoutMs).then(() => false)]);
      if (!stopped) {
        this.proc.kill('SIGKILL');
        await this.exited;
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Writes `count` mixed keys (bench/lib/mixed-data.ts; with `ttlEvery`, some with TTLs) straight
 * into a node as raw RESP through `pipes` parallel `redis-cli --pipe` processes (Pika runs one
 * connection on one thread at a time), batches of whole keys dealt round-robin: a key's write and
 * its EXPIRE stay in one batch, in order. Throws when redis-cli reports an error reply.
 */
export async function seedMixedKeys(port: number, count: number, options: MixedOptions & { pipes?: number; onProgress?: (keys: number) => void } = {}): Promise<{ keys: number; commands: number; ttlKeys: number; valueBytes: number; ms: number }> {
  const started = Date.now();
  const pipes = Array.from({ length: options.pipes ?? 3 }, () => {
    const child = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--pipe'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const pipe = { child, output: '', commands: 0, done: new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code))) };
    child.stdout.on('data', (d: Buffer) => (pipe.output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (pipe.output += d.toString()));
    return pipe;
  });
  let commands = 0;
  let ttlKeys = 0;
  let valueBytes = 0;
  let batch: Buffer[] = [];
  let batchBytes = 0;
  let batchCommands = 0;
  let next = 0;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const pipe = pipes[next++ % pipes.length];
    const chunk = Buffer.concat(batch);
    pipe.commands += batchCommands;
    batch = [];
    batchBytes = 0;
    batchCommands = 0;
    if (!pipe.child.stdin.write(chunk)) await new Promise<void>((resolve) => pipe.child.stdin.once('drain', () => resolve()));
  };
  for (const item of mixedCommands(count, options)) {
    for (const command of item.commands) {
      const bytes = encodeResp(command);
      batch.push(bytes);
      batchBytes += bytes.length;
      batchCommands++;
      commands++;
    }
    if (item.ttl) ttlKeys++;
    valueBytes += item.valueBytes;
    if (batchBytes >= 256 * 1024) await flush();
    if ((item.index + 1) % 100_000 === 0) options.onProgress?.(item.index + 1);
  }
  await flush();
  for (const pipe of pipes) pipe.child.stdin.end();
  for (const pipe of pipes) {
    const code = await pipe.done;
    const m = /errors:\s*(\d+),\s*replies:\s*(\d+)/.exec(pipe.output);
    if (code !== 0 || !m || Number(m[1]) !== 0 || Number(m[2]) !== pipe.commands) {
      throw new Error(`redis-cli --pipe into ${port} exited ${code} after ${pipe.commands} commands: ${pipe.output.trim()}`);
    }
  }
  return { keys: count, commands, ttlKeys, valueBytes, ms: Date.now() - started };
}

/** Keys in the node by SCAN (what Pika's stale DBSIZE cannot tell). */
export async function countKeysByScan(client: Redis, count = 10_000): Promise<number> {
  let cursor = '0';
  let keys = 0;
  do {
    const [next, batch] = (await client.call('SCAN', cursor, 'COUNT', String(count))) as [string, string[]];
    keys += batch.length;
    cursor = next;
  } while (cursor !== '0');
  return keys;
}

export interface PikaKeyspace {
  /** keys per type, e.g. { Strings: 400000, Hashes: 150000, … } */
  keys: Record<string, number>;
  /** keys with a TTL, per type */
  expires: Record<string, number>;
  total: number;
  totalExpires: number;
}

function parseKeyspace(text: string): PikaKeyspace | undefined {
  const result: PikaKeyspace = { keys: {}, expires: {}, total: 0, totalExpires: 0 };
  let seen = false;
  for (const m of text.matchAll(/^db\d+ (\w+)_keys=(\d+), expires=(\d+), invalid_keys=(\d+)/gm)) {
    seen = true;
    result.keys[m[1]] = (result.keys[m[1]] ?? 0) + Number(m[2]);
    result.expires[m[1]] = (result.expires[m[1]] ?? 0) + Number(m[3]);
    result.total += Number(m[2]);
    result.totalExpires += Number(m[3]);
  }
  return seen ? result : undefined;
}

/**
 * Pika's own key statistics (keys and keys with a TTL per type): `INFO keyspace 1` starts a
 * background scan and answers the previous one; `INFO keyspace 0` then shows the last finished
 * scan. Polls until a scan newer than the one before has finished.
 */
export async function pikaKeyspace(client: Redis, timeoutMs = 120_000): Promise<PikaKeyspace | undefined> {
  const stamp = (text: string) => `${/^# Time:(.*)$/m.exec(text)?.[1] ?? ''}|${/^# Duration:(.*)$/m.exec(text)?.[1] ?? ''}`;
  const before = (await client.call('INFO', 'keyspace', '0')) as string;
  // The stamp has a resolution of one second: a scan started within the same second as the
  // previous one could not be told apart from it.
  await sleep(1100);
  await client.call('INFO', 'keyspace', '1');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await sleep(200);
    const text = (await client.call('INFO', 'keyspace', '0')) as string;
    if (stamp(text) !== stamp(before) && /^# Duration: *\d+s/m.test(text)) return parseKeyspace(text);
    if (Date.now() > deadline) return undefined;
  }
}

export function formatKeyspace(k: PikaKeyspace | undefined): string {
  if (!k) return 'n/a';
  return `${k.total} keys (${k.totalExpires} with TTL)`;
}

/**
 * Starts a real Pika 4.0.1 node (`<repo>/../shared/pika/start-pika PORT DIR`) for tests, with the
 * same surface as RedisServer (start, host, port, address, pid, client, stop, kill, restart).
 *
 * Pika binds PORT, PORT+1000, PORT+2000 (replication) and PORT+10001 (rsync); all four are checked
 * free before it starts. Ports are picked below the kernel's ephemeral range (32768+), apart from
 * the range freePort() (redis-server, proxies) picks from (ports.ts), and the start is retried on
 * another port if Pika exits before it answers PING (a lost race for one of its four ports).
 *
 * Data: Pika persists to its dir (RocksDB), so `restart()` — SIGKILL, then start again on the same
 * ports and dir — comes back WITH the data it had written (`persistsAcrossRestart` is true), unlike
 * RedisServer.restart(). `restart({ wipe: true })` removes the dir first (an empty node).
 */
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { PIKA_PORT_HIGH, PIKA_PORT_LOW, portFree } from './ports';

/** dist/test/helpers → repo root is three levels up; shared/ sits beside the repo. */
/** The Pika launcher: PIKA_START (.ci/run sets it), else ../shared/pika beside the repository. */
export const START_PIKA = process.env.PIKA_START ?? path.resolve(__dirname, '../../..', '../shared/pika/start-pika');

/** The extra ports Pika binds beside PORT. */
const PORT_OFFSETS = [0, 1000, 2000, 10001];
const START_TIMEOUT_MS = 30_000;

export interface PikaServerOptions {
  port?: number;
}

/** A PORT such that PORT, +1000, +2000 and +10001 are free now. */
export async function freePikaPort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = PIKA_PORT_LOW + Math.floor(Math.random() * (PIKA_PORT_HIGH - PIKA_PORT_LOW));
    let ok = true;
    for (const off of PORT_OFFSETS) if (!(await portFree(port + off))) ok = false;
    if (ok) return port;
  }
  throw new Error('no free port with +1000, +2000 and +10001 free for Pika');
}

async function ping(host: string, port: number): Promise<boolean> {
  const c = new Redis({ host, port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return (await c.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    c.disconnect();
  }
}

export class PikaServer {
  readonly kind = 'pika' as const;
  readonly host = '127.0.0.1';
  /** restart() keeps the data Pika persisted in its dir. */
  readonly persistsAcrossRestart = true;
  private proc?: ChildProcess;
  private exited = false;
  private readonly logFile: string;

  private constructor(public port: number, private readonly dir: string, private readonly fixedPort: boolean) {
    this.logFile = path.join(dir, 'start-pika.out');
  }

  static async start(options: PikaServerOptions = {}): Promise<PikaServer> {
    if (!existsSync(START_PIKA)) throw new Error(`start-pika not found at ${START_PIKA} (shared/ must sit beside the repo, or set PIKA_START)`);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-pika-'));
    const server = new PikaServer(options.port ?? (await freePikaPort()), dir, options.port !== undefined);
    try {
      await server.spawn();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** An ioredis client straight to the node. Pika has one database: only db 0 is valid. */
  client(db = 0): Redis {
    return new Redis({ host: this.host, port: this.port, db, lazyConnect: false, maxRetriesPerRequest: 1 });
  }

  /** SIGKILL, as a crash (the dir stays). */
  async kill(): Promise<void> {
    await this.stopProcess('SIGKILL');
  }

  /**
   * Stops the node and removes its dir. SIGKILL, not SIGTERM: Pika 4.0.1 takes ~10 s to exit on
   * SIGTERM, and nothing of the dir is kept anyway.
   */
  async stop(): Promise<void> {
    await this.stopProcess('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** SIGKILL, then start on the same ports: the persisted data is kept unless `wipe`. */
  async restart(options: { wipe?: boolean } = {}): Promise<void> {
    await this.stopProcess('SIGKILL');
    if (options.wipe) {
      rmSync(this.dir, { recursive: true, force: true });
      mkdirSync(this.dir, { recursive: true });
    }
    await this.spawn(true);
  }

  private async spawn(samePort = false): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const out = openSync(this.logFile, 'a');
      this.exited = false;
      const proc = spawn(START_PIKA, [String(this.port), this.dir], { stdio: ['ignore', out, out] });
      closeSync(out);
      this.proc = proc;
      proc.once('exit', () => {
        if (this.proc === proc) this.exited = true;
      });
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (!this.exited && Date.now() < deadline && !(await ping(this.host, this.port))) await new Promise((r) => setTimeout(r, 50));
      if (!this.exited && Date.now() < deadline) return;
      await this.stopProcess('SIGKILL');
      const tail = readFileSync(this.logFile, 'utf8').split('\n').slice(-15).join('\n');
      // After a restart the ports must stay the same; a fresh start may move to other ports.
      if (samePort || this.fixedPort || attempt >= 3) throw new Error(`Pika did not answer PING on ${this.address}:\n${tail}`);
      this.port = await freePikaPort();
    }
  }

  private async stopProcess(signal: NodeJS.Signals): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill(signal);
    });
  }
}

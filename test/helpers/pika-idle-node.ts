/**
 * A real Pika 4.0.1 node (../shared/pika/start-pika) for the idle-timeout tests: free ports for
 * PORT and the three Pika derives from it (PORT+1000, PORT+2000, PORT+10001), a temp dir, a
 * SIGTERM stop that waits for the exit, and `idleTimeout(seconds)` (CONFIG SET timeout), so a
 * test sees Pika end idle connections in seconds instead of its shipped 60.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { START_PIKA } from './pika-server';
import { waitForPort } from './ports';

const DERIVED_PORT_OFFSETS = [0, 1000, 2000, 10001];
const STOP_GRACE_MS = 2_000;

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '0.0.0.0', () => server.close(() => resolve(true)));
  });
}

/** A base port whose derived ports are free too (Pika binds all four). */
async function pikaPort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    const free = await Promise.all(DERIVED_PORT_OFFSETS.map((o) => portFree(base + o)));
    if (free.every(Boolean)) return base;
  }
  throw new Error('no free port set for Pika');
}

export class PikaIdleNode {
  readonly host = '127.0.0.1';
  private exited?: Promise<void>;

  private constructor(readonly port: number, private readonly dir: string, private readonly proc: ChildProcess) {}

  static available(): boolean {
    return existsSync(START_PIKA);
  }

  static async start(): Promise<PikaIdleNode> {
    const port = await pikaPort();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-pika-idle-'));
    const proc = spawn(START_PIKA, [String(port), dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const node = new PikaIdleNode(port, dir, proc);
    node.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    try {
      await Promise.race([
        waitForPort(port, 30_000),
        node.exited.then(() => Promise.reject(new Error(`pika exited at start: ${stderr.trim()}`))),
      ]);
    } catch (err) {
      await node.stop();
      throw err;
    }
    return node;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** A client straight to the node (not through a proxy). */
  client(): Redis {
    return new Redis({ host: this.host, port: this.port, maxRetriesPerRequest: 1 });
  }

  /** Pika ends a client connection idle for `seconds` (its shipped default is 60). */
  async idleTimeout(seconds: number): Promise<void> {
    const c = this.client();
    try {
      await c.config('SET', 'timeout', String(seconds));
      const [, value] = (await c.config('GET', 'timeout')) as string[];
      if (Number(value) !== seconds) throw new Error(`pika kept timeout ${value}`);
    } finally {
      c.disconnect();
    }
  }

  /** SIGTERM, then SIGKILL after STOP_GRACE_MS (Pika takes about 9 s to stop; its data here is scratch). */
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      const killed = setTimeout(() => this.proc.kill('SIGKILL'), STOP_GRACE_MS);
      await this.exited;
      clearTimeout(killed);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

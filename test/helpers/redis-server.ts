/**
 * Starts real redis-server processes on free ports for tests and benchmarks, and stops them.
 * `pikaProfile: true` removes the commands Pika lacks (DESIGN.md §6) with rename-command, so the
 * portable code paths run against a real server.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { freePort, waitForPort } from './ports';

/** How long stop() waits after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 10_000;

export const PIKA_MISSING_COMMANDS = ['DUMP', 'RESTORE', 'RENAME', 'RENAMENX', 'LMOVE', 'BLMOVE', 'COPY', 'SWAPDB', 'OBJECT', 'DEBUG'];

export interface RedisServerOptions {
  pikaProfile?: boolean;
  password?: string;
  databases?: number;
  port?: number;
  extraArgs?: string[];
}

export class RedisServer {
  readonly kind = 'redis' as const;
  readonly host = '127.0.0.1';
  /** restart() comes back empty (no persistence); see PikaServer for the opposite. */
  readonly persistsAcrossRestart = false;
  private proc?: ChildProcess;
  private dir?: string;

  private constructor(readonly port: number, private readonly options: RedisServerOptions) {}

  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const server = new RedisServer(options.port ?? (await freePort()), options);
    await server.spawn();
    return server;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  private async spawn(): Promise<void> {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'psp-redis-'));
    const args = [
      '--port', String(this.port), '--bind', this.host, '--save', '', '--appendonly', 'no',
      '--dir', this.dir, '--databases', String(this.options.databases ?? 16), '--protected-mode', 'no',
      '--loglevel', 'warning',
    ];
    if (this.options.password) args.push('--requirepass', this.options.password);
    if (this.options.pikaProfile) for (const cmd of PIKA_MISSING_COMMANDS) args.push('--rename-command', cmd, '');
    args.push(...(this.options.extraArgs ?? []));
    this.proc = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] });
    await waitForPort(this.port);
  }

  /** An ioredis client straight to the node (not through a proxy). */
  client(db = 0): Redis {
    return new Redis({ host: this.host, port: this.port, password: this.options.password, db, lazyConnect: false, maxRetriesPerRequest: 1 });
  }

  /** SIGKILL, as a crash. */
  async kill(): Promise<void> {
    await this.stopProcess('SIGKILL');
  }

  async stop(): Promise<void> {
    await this.stopProcess('SIGTERM');
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Starts again on the same port (empty dataset: tests run without persistence). */
  async restart(): Promise<void> {
    await this.stopProcess('SIGKILL');
    await this.spawn();
  }

  private async stopProcess(signal: NodeJS.Signals): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc || proc.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      // A server inside a script that never ends does not act on SIGTERM (it is handled in its
      // cron, which the script holds off): after a bound, SIGKILL, so nothing is left running.
      const escalate = signal === 'SIGKILL' ? undefined : setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS);
      proc.once('exit', () => {
        clearTimeout(escalate);
        resolve();
      });
      proc.kill(signal);
    });
  }
}

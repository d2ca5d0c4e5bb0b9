/**
 * Runs the built CLI (`node dist/src/main.js`) as a child process, as an operator would, for tests,
 * the demo and the benchmarks: free ports, a temp data dir, every stdout/stderr byte captured (pino
 * JSON lines) for assertions, crash (`kill('SIGKILL')`), graceful `stop()` and `restart()` on the
 * same ports and data dir.
 *
 * Depends only on the CLI's flags (src/config.ts): --port, --sync-port, --backend, --data-dir and
 * whatever `extraArgs` a test adds (e.g. ['--requirepass', 'pw', '--sync-workers', '2']).
 */
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { freePort } from './ports';

/** dist/test/helpers/proxy-process.js → dist/src/main.js */
export const CLI_PATH = path.resolve(__dirname, '../../src/main.js');

/** Captured output beyond this is dropped from the front (a runaway logger must not eat memory). */
const MAX_LOG_BYTES = 64 * 1024 * 1024;

export interface ProxyProcessOptions {
  /** The node behind the proxy: `{host, port}` (e.g. a RedisServer) or 'host:port'. */
  backend: { host: string; port: number } | string;
  port?: number;
  syncPort?: number;
  /** Defaults to a fresh temp dir, removed by stop() unless keepDataDir. */
  dataDir?: string;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** How long start/restart wait for the listeners. */
  startTimeoutMs?: number;
  /** Another entry point than dist/src/main.js (e.g. an older build); same flags. */
  cliPath?: string;
  /** Also copy the child's output to this process's stderr (debugging). */
  echo?: boolean;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class ProxyProcess {
  readonly host = '127.0.0.1';
  private proc?: ChildProcess;
  private output: Buffer[] = [];
  private outputBytes = 0;
  private exitInfo?: ExitInfo;
  private exitPromise?: Promise<ExitInfo>;
  private readonly ownsDataDir: boolean;

  private constructor(
    readonly port: number,
    readonly syncPort: number,
    readonly dataDir: string,
    private readonly options: ProxyProcessOptions,
  ) {
    this.ownsDataDir = options.dataDir === undefined;
  }

  static async start(options: ProxyProcessOptions): Promise<ProxyProcess> {
    const port = options.port ?? (await freePort());
    let syncPort = options.syncPort ?? (await freePort());
    while (syncPort === port) syncPort = await freePort();
    const dataDir = options.dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'psp-proxy-'));
    const proxy = new ProxyProcess(port, syncPort, dataDir, options);
    try {
      await proxy.spawn();
    } catch (err) {
      await proxy.stop().catch(() => undefined);
      throw err;
    }
    return proxy;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** Set once the current process exited. */
  get exited(): ExitInfo | undefined {
    return this.exitInfo;
  }

  get cliPath(): string {
    return this.options.cliPath ?? CLI_PATH;
  }

  get args(): string[] {
    const backend = typeof this.options.backend === 'string' ? this.options.backend : `${this.options.backend.host}:${this.options.backend.port}`;
    return ['--port', String(this.port), '--sync-port', String(this.syncPort), '--backend', backend, '--data-dir', this.dataDir, ...(this.options.extraArgs ?? [])];
  }

  /** Everything the process (and earlier incarnations, across restarts) wrote. */
  logs(): string {
    return Buffer.concat(this.output).toString('utf8');
  }

  /** The pino JSON lines of logs(); other lines are skipped. */
  logEntries(): Array<Record<string, unknown>> {
    const entries: Array<Record<string, unknown>> = [];
    for (const line of this.logs().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        entries.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line cut by a crash: not an entry
      }
    }
    return entries;
  }

  /** Resolves with the first log entry that matches; rejects after the timeout or on exit. */
  async waitForLog(match: RegExp | ((entry: Record<string, unknown>) => boolean), timeoutMs = 30_000): Promise<Record<string, unknown> | string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (match instanceof RegExp) {
        const line = this.logs().split('\n').find((l) => match.test(l));
        if (line !== undefined) return line;
      } else {
        const entry = this.logEntries().find(match);
        if (entry) return entry;
      }
      if (this.exitInfo) throw new Error(`proxy exited (${describeExit(this.exitInfo)}) before the expected log line\n${this.tail()}`);
      if (Date.now() > deadline) throw new Error(`expected log line not seen after ${timeoutMs} ms\n${this.tail()}`);
      await sleep(50);
    }
  }

  /** An ioredis client to the proxy's RESP port. */
  client(options: { db?: number; password?: string } = {}): Redis {
    return new Redis({ host: this.host, port: this.port, db: options.db ?? 0, password: options.password, maxRetriesPerRequest: 1, retryStrategy: () => null });
  }

  /** Sends a signal and waits for the exit (SIGKILL by default: a crash). The data dir stays. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<ExitInfo | undefined> {
    const proc = this.proc;
    if (!proc || this.exitInfo) return this.exitInfo;
    proc.kill(signal);
    return this.exitPromise;
  }

  /**
   * SIGTERM and wait for a graceful exit. A process that does not exit within `timeoutMs` is
   * SIGKILLed and the call rejects, so a broken shutdown fails the test that caused it.
   */
  async stop(options: { keepDataDir?: boolean; timeoutMs?: number } = {}): Promise<ExitInfo | undefined> {
    let info = this.exitInfo;
    let hung = false;
    if (this.proc && !this.exitInfo) {
      this.proc.kill('SIGTERM');
      const timeout = sleep(options.timeoutMs ?? 10_000).then(() => undefined);
      info = await Promise.race([this.exitPromise, timeout]);
      if (!info) {
        hung = true;
        info = await this.kill('SIGKILL');
      }
    }
    if (this.ownsDataDir && !options.keepDataDir) rmSync(this.dataDir, { recursive: true, force: true });
    if (hung) throw new Error(`proxy did not exit within ${options.timeoutMs ?? 10_000} ms of SIGTERM\n${this.tail()}`);
    return info;
  }

  /** Stops the running process (if any) gracefully, then starts it again: same ports and data dir. */
  async restart(): Promise<void> {
    if (this.proc && !this.exitInfo) await this.stop({ keepDataDir: true });
    await this.spawn();
  }

  /** The last lines of output, for error messages. */
  tail(lines = 30): string {
    return this.logs().split('\n').slice(-lines).join('\n');
  }

  private async spawn(): Promise<void> {
    this.exitInfo = undefined;
    const proc = spawn(process.execPath, [this.cliPath, ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...this.options.env },
    });
    this.proc = proc;
    this.exitPromise = new Promise<ExitInfo>((resolve) => {
      proc.once('exit', (code, signal) => {
        const info = { code, signal };
        if (this.proc === proc) this.exitInfo = info;
        resolve(info);
      });
      proc.once('error', (err) => {
        this.capture(Buffer.from(`spawn error: ${err.message}\n`));
        const info = { code: -1, signal: null };
        if (this.proc === proc) this.exitInfo = info;
        resolve(info);
      });
    });
    proc.stdout?.on('data', (d: Buffer) => this.capture(d));
    proc.stderr?.on('data', (d: Buffer) => this.capture(d));
    await this.waitForListeners(this.options.startTimeoutMs ?? 15_000);
  }

  private capture(chunk: Buffer): void {
    if (this.options.echo) process.stderr.write(chunk);
    this.output.push(chunk);
    this.outputBytes += chunk.length;
    while (this.outputBytes > MAX_LOG_BYTES && this.output.length > 1) this.outputBytes -= this.output.shift()!.length;
  }

  /** Both the RESP and the sync port accept, or the process died (fail fast with its output). */
  private async waitForListeners(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const port of [this.port, this.syncPort]) {
      while (!(await accepts(this.host, port))) {
        if (this.exitInfo) throw new Error(`proxy exited during start (${describeExit(this.exitInfo)}): node ${this.cliPath} ${this.args.join(' ')}\n${this.tail()}`);
        if (Date.now() > deadline) throw new Error(`proxy did not listen on ${this.host}:${port} within ${timeoutMs} ms\n${this.tail()}`);
        await sleep(50);
      }
    }
  }
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function describeExit(info: ExitInfo): string {
  return info.signal ? `signal ${info.signal}` : `exit code ${info.code}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

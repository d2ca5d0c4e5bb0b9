/**
 * Shared pieces of the benchmarks: external tools (redis-benchmark, nutcracker), RSS sampling from
 * /proc, INFO parsing, markdown tables and result files. Benchmarks print how to install a missing
 * tool instead of installing it themselves.
 */
import { ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitForPort } from '../../test/helpers/ports';

/** dist/bench/lib/tools.js → <repo>/bench/results */
export const RESULTS_DIR = path.resolve(__dirname, '../../../bench/results');

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** Exits with a how-to-install message when a tool is missing. */
export function requireCommands(tools: Array<{ command: string; aptPackage: string }>): void {
  const missing = tools.filter((t) => !hasCommand(t.command));
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((t) => t.aptPackage))].join(' ');
  console.error(`missing: ${missing.map((t) => t.command).join(', ')}\ninstall on Debian/Ubuntu: sudo apt-get install -y ${packages}`);
  process.exit(2);
}

/** Simple `--name value` flags with numeric defaults. */
export function numericFlag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} expects a positive number, got '${process.argv[i + 1]}'`);
  return value;
}

/** Resident set size of a process in bytes (VmRSS), undefined once it is gone. */
export function readRss(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) a process has used so far, in seconds; undefined once it is gone. */
export function readCpuSeconds(pid: number): number | undefined {
  try {
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15 (proc(5)).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}
/** USER_HZ: 100 on every Linux architecture Node supports. */
const CLOCK_TICKS_PER_SECOND = 100;

/** Starts measuring the CPU time of named processes; the returned function reads what each used since. */
export function cpuMeter(pids: Record<string, number | undefined>): () => Array<{ name: string; seconds: number }> {
  const start = Object.entries(pids).map(([name, pid]) => ({ name, pid, at: pid === undefined ? undefined : readCpuSeconds(pid) }));
  return () => start.map(({ name, pid, at }) => ({ name, seconds: pid === undefined || at === undefined ? Number.NaN : (readCpuSeconds(pid) ?? Number.NaN) - at }));
}

export function formatCpu(used: Array<{ name: string; seconds: number }>): string {
  const total = used.reduce((sum, u) => sum + u.seconds, 0);
  return `${used.map((u) => `${u.name} ${u.seconds.toFixed(2)} s`).join(', ')}; total ${total.toFixed(2)} s`;
}

/** Samples VmRSS of a process at a fixed interval and keeps the peak. */
export class RssSampler {
  peak = 0;
  samples = 0;
  private timer?: NodeJS.Timeout;

  constructor(private readonly pid: number, private readonly intervalMs = 200) {}

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    return this;
  }

  stop(): number {
    if (this.timer) clearInterval(this.timer);
    this.sample();
    return this.peak;
  }

  private sample(): void {
    const rss = readRss(this.pid);
    if (rss === undefined) return;
    this.samples++;
    this.peak = Math.max(this.peak, rss);
  }
}

export interface BenchmarkResult {
  /** requests per second by test name, e.g. { SET: 123456, GET: 234567 } */
  rps: Record<string, number>;
  raw: string;
}

/** Runs redis-benchmark (CSV output, redis-benchmark 6/7 format) and parses ops/s per test. */
export function runRedisBenchmark(port: number, args: { tests: string; clients: number; requests: number; pipeline: number }): Promise<BenchmarkResult> {
  const argv = ['-h', '127.0.0.1', '-p', String(port), '-t', args.tests, '-c', String(args.clients), '-n', String(args.requests), '-P', String(args.pipeline), '-q', '--csv'];
  return new Promise((resolve, reject) => {
    execFile('redis-benchmark', argv, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`redis-benchmark ${argv.join(' ')} failed: ${err.message}\n${stderr}`));
      const rps: Record<string, number> = {};
      for (const line of stdout.split('\n')) {
        const m = /^"([A-Z_ ]+[A-Z])[^"]*","([\d.]+)"/.exec(line.trim());
        if (m) rps[m[1]] = Number(m[2]);
      }
      if (Object.keys(rps).length === 0) return reject(new Error(`redis-benchmark printed no results:\n${stdout}\n${stderr}`));
      resolve({ rps, raw: stdout });
    });
  });
}

/** twemproxy (nutcracker) in front of one redis, with a temp YAML config. */
export class Nutcracker {
  private constructor(readonly port: number, private readonly proc: ChildProcess, private readonly dir: string) {}

  get pid(): number | undefined {
    return this.proc.pid;
  }

  static async start(redisPort: number): Promise<Nutcracker> {
    const port = await freePort();
    const statsPort = await freePort();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-nutcracker-'));
    const conf = path.join(dir, 'nutcracker.yml');
    writeFileSync(
      conf,
      [
        'bench:',
        `  listen: 127.0.0.1:${port}`,
        '  hash: fnv1a_64',
        '  distribution: ketama',
        '  redis: true',
        '  preconnect: true',
        '  servers:',
        `    - 127.0.0.1:${redisPort}:1`,
        '',
      ].join('\n'),
    );
    const proc = spawn('nutcracker', ['-c', conf, '-s', String(statsPort), '-a', '127.0.0.1', '-o', path.join(dir, 'nutcracker.log'), '-p', path.join(dir, 'nutcracker.pid')], { stdio: 'ignore' });
    await waitForPort(port);
    return new Nutcracker(port, proc, dir);
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null) {
      await new Promise<void>((resolve) => {
        this.proc.once('exit', () => resolve());
        this.proc.kill('SIGTERM');
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** `INFO` text → field map (sections merged). */
export function parseInfo(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) fields[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return fields;
}

export function markdownTable(headers: string[], rows: Array<Array<string | number>>): string {
  const line = (cells: Array<string | number>) => `| ${cells.map(String).join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

export function formatOps(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function formatMiB(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function ratio(a: number, b: number): string {
  return b > 0 ? a / b >= 10 ? (a / b).toFixed(1) : (a / b).toFixed(2) : 'n/a';
}

/** Writes bench/results/<name>.md and returns its path. */
export function writeResult(name: string, markdown: string): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${name}.md`);
  writeFileSync(file, markdown.endsWith('\n') ? markdown : `${markdown}\n`);
  return file;
}

/** Taken before a benchmark starts anything: what other work was doing on the machine. */
const LOAD_AT_START = os.loadavg()[0];

/** A warning for the result when other work kept the CPUs busy before the run started. */
export function busyMachineWarning(): string {
  const cpus = os.cpus().length;
  return LOAD_AT_START > cpus / 2
    ? `**Warning: the 1-minute load average was ${LOAD_AT_START.toFixed(2)} on ${cpus} CPUs before this run started: other work competed with it; the numbers are unreliable.**\n`
    : '';
}

/** Machine facts for a result header: numbers mean little without them. */
export function environmentLine(): string {
  const redisVersion = spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout?.match(/v=(\S+)/)?.[1] ?? '?';
  return `${os.cpus().length} CPU (${os.cpus()[0]?.model.trim() ?? '?'}), ${formatMiB(os.totalmem())} RAM, Node ${process.version}, redis-server ${redisVersion}, load average ${LOAD_AT_START.toFixed(2)} before the run, ${new Date().toISOString()}`;
}

/**
 * Stops everything a benchmark (or the demo) started, in reverse order, also on an error, SIGINT
 * or SIGTERM, so no redis-server or proxy outlives the run.
 */
export class Cleanup {
  private readonly steps: Array<{ label: string; run: () => unknown }> = [];
  private running?: Promise<void>;
  /** Set when SIGINT/SIGTERM started the cleanup: errors after that are its consequence. */
  interrupted = false;

  constructor() {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        this.interrupted = true;
        console.error(`\n${signal}: cleaning up`);
        void this.run().finally(() => process.exit(130));
      });
    }
  }

  add(label: string, run: () => unknown): void {
    this.steps.push({ label, run });
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      for (const step of this.steps.splice(0).reverse()) {
        try {
          await step.run();
        } catch (err) {
          console.error(`cleanup (${step.label}) failed: ${(err as Error).message}`);
        }
      }
    })();
    return this.running;
  }
}

/**
 * Drop-in fidelity (issue 12): runs units of Redis 7.0.15's own test suite (`./runtest` in
 * external-server mode) once directly against a fresh redis-server and once through a fresh proxy
 * (`dist/src/main.js`) in front of another fresh redis-server, and counts per unit the tests that
 * pass directly and also through the proxy. Tests that pass directly but not through the proxy are
 * "lost" and listed by name with the first line of the suite's error message.
 *
 *   npm run fidelity -- <suite dir | redis git dir> unit/type/incr unit/type/list … \
 *     [--redis-tags] [--tags T]… [--timeout-s 300] [--out NAME] [--cache DIR]
 *
 * writes bench/results/NAME.md (default fidelity, or fidelity-redis-tags with --redis-tags).
 *
 * The suite: a directory with `runtest` and `tests/`, or a git dir of github.com/redis/redis (also
 * from $REDIS_GIT_DIR) from which `git archive 7.0.15 tests runtest` is extracted into the cache dir
 * (default $FIDELITY_CACHE or <tmp>/psp-redis-suite-7.0.15). Preparation (idempotent): src/redis-*
 * linked to the installed binaries, and `r function flush` (run before every unit in external mode)
 * wrapped in `catch {…}` in tests/support/server.tcl, as the proxy (like Pika) may refuse FUNCTION.
 *
 * --redis-tags excludes the tags Redis's own CI excludes for external servers without DEBUG,
 * replication, SAVE and so on (needs:debug, needs:repl, …); --tags T is passed through to runtest.
 * Units run one at a time with --clients 1; a unit that exceeds the timeout is recorded as a hang
 * with the last test that finished. Raw runtest output: <cache>/logs/<unit>.<direct|proxy>.log.
 *
 * Needs: redis-server/redis-cli/redis-benchmark/redis-check-* 7.0.x (apt: redis-server redis-tools)
 * and tclsh 8.5+ (apt: tcl). Not part of `npm test`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync, lstatSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RedisServer } from '../test/helpers/redis-server';
import { ProxyProcess } from '../test/helpers/proxy-process';
import { Cleanup, environmentLine, hasCommand, markdownTable, requireCommands, writeResult } from './lib/tools';

const REDIS_TAG = '7.0.15';
const REDIS_TAGS_EXCLUDED = ['needs:debug', 'needs:repl', 'needs:save', 'needs:pfdebug', 'needs:reset', 'needs:latency', 'needs:local-process', 'needs:config-maxmemory', 'needs:config-resetstat'];
const BINARIES = ['redis-server', 'redis-cli', 'redis-benchmark', 'redis-check-aof', 'redis-check-rdb'];

interface Options {
  source: string;
  units: string[];
  tags: string[];
  redisTags: boolean;
  timeoutMs: number;
  out: string;
  cache: string;
}

function parseArgs(argv: string[]): Options {
  const positional: string[] = [];
  const tags: string[] = [];
  let redisTags = false;
  let timeoutS = 300;
  let out: string | undefined;
  let cache = process.env.FIDELITY_CACHE ?? path.join(os.tmpdir(), `psp-redis-suite-${REDIS_TAG}`);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--redis-tags') redisTags = true;
    else if (a === '--tags') tags.push(argv[++i]);
    else if (a === '--timeout-s') timeoutS = Number(argv[++i]);
    else if (a === '--out') out = argv[++i];
    else if (a === '--cache') cache = argv[++i];
    else if (a.startsWith('--')) throw new Error(`unknown flag ${a}`);
    else positional.push(a);
  }
  let source: string | undefined = positional[0];
  let units = positional.slice(1);
  if (source !== undefined && /^unit\//.test(source) && process.env.REDIS_GIT_DIR) {
    units = positional;
    source = process.env.REDIS_GIT_DIR;
  }
  source ??= process.env.REDIS_GIT_DIR;
  if (!source || units.length === 0 || !(timeoutS > 0)) {
    console.error('usage: npm run fidelity -- <suite dir | redis git dir> unit/… [unit/…] [--redis-tags] [--tags T]… [--timeout-s 300] [--out NAME] [--cache DIR]');
    process.exit(2);
  }
  if (redisTags) for (const t of REDIS_TAGS_EXCLUDED) tags.push(`-${t}`);
  return { source: path.resolve(source), units, tags, redisTags, timeoutMs: timeoutS * 1000, out: out ?? (redisTags ? 'fidelity-redis-tags' : 'fidelity'), cache: path.resolve(cache) };
}

/** Returns the suite dir, extracting it from a git dir into the cache when needed, and prepares it. */
function prepareSuite(options: Options): string {
  let dir = options.source;
  if (!existsSync(path.join(dir, 'tests', 'test_helper.tcl'))) {
    const isGit = spawnSync('git', ['--git-dir', dir, 'rev-parse', '--verify', `${REDIS_TAG}^{commit}`], { encoding: 'utf8' });
    if (isGit.status !== 0) throw new Error(`${dir} is neither a suite dir (tests/test_helper.tcl) nor a redis git dir with tag ${REDIS_TAG}: ${isGit.stderr.trim()}`);
    dir = options.cache;
    if (!existsSync(path.join(dir, 'tests', 'test_helper.tcl'))) {
      mkdirSync(dir, { recursive: true });
      const r = spawnSync('sh', ['-c', `git --git-dir "$0" archive ${REDIS_TAG} tests runtest | tar -x -C "$1"`, options.source, dir], { stdio: 'inherit' });
      if (r.status !== 0) throw new Error(`extracting ${REDIS_TAG} tests from ${options.source} failed`);
    }
  }
  mkdirSync(path.join(dir, 'src'), { recursive: true });
  for (const bin of BINARIES) {
    const target = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).stdout.trim();
    const link = path.join(dir, 'src', bin);
    try {
      if (lstatSync(link)) unlinkSync(link);
    } catch {
      // absent
    }
    symlinkSync(target, link);
  }
  const serverTcl = path.join(dir, 'tests', 'support', 'server.tcl');
  const text = readFileSync(serverTcl, 'utf8');
  const patched = text.replace(/^(\s*)r function flush$/m, '$1catch {r function flush}');
  if (patched !== text) writeFileSync(serverTcl, patched);
  else if (!/catch \{r function flush\}/.test(text)) console.error(`warning: 'r function flush' not found in ${serverTcl}`);
  return dir;
}

interface UnitRun {
  passed: string[];
  failed: Array<{ name: string; message: string }>;
  exception?: string;
  hang?: string;
  exitCode: number | null;
  seconds: number;
}

// eslint-disable-next-line no-control-regex
const stripAnsi = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '').replace(/\r/g, '\\r');

/** Parses runtest output: `[ok]: name (N ms)`, `[err]: name in file` + message lines, `[exception]: …`. */
function parseOutput(raw: string): Omit<UnitRun, 'exitCode' | 'seconds' | 'hang'> {
  const lines = stripAnsi(raw).split('\n');
  const passed: string[] = [];
  const failed: Array<{ name: string; message: string }> = [];
  let exception: string | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    let m = /^\[ok\]: (.*) \(\d+ ms\)$/.exec(line);
    if (m) {
      passed.push(m[1]);
      continue;
    }
    m = /^\[err\]: (.*) in tests\/\S+\.tcl$/.exec(line);
    if (m) {
      failed.push({ name: m[1], message: (lines[i + 1] ?? '').trim() });
      continue;
    }
    m = /^\[exception\]: (.*)$/.exec(line);
    if (m) exception = [m[1], ...lines.slice(i + 1, i + 4).map((l) => l.trim())].filter(Boolean).join(' / ');
  }
  return { passed, failed, exception };
}

/** The running ./runtest (its own process group), killed by the cleanup on an error or Ctrl-C. */
let runningTest: number | undefined;

function runUnit(suite: string, port: number, unit: string, tags: string[], timeoutMs: number, logFile: string): Promise<UnitRun> {
  const args = ['--host', '127.0.0.1', '--port', String(port), '--single', unit, '--clients', '1', ...tags.flatMap((t) => ['--tags', t])];
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn('./runtest', args, { cwd: suite, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    runningTest = child.pid;
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.on('data', (c: Buffer) => chunks.push(c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // gone
      }
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      runningTest = undefined;
      const raw = Buffer.concat(chunks).toString('utf8');
      writeFileSync(logFile, `$ ./runtest ${args.join(' ')}\n${raw}`);
      const parsed = parseOutput(raw);
      const last = stripAnsi(raw).split('\n').filter((l) => /^\[(ok|err)\]: /.test(l)).pop();
      resolve({
        ...parsed,
        hang: timedOut ? `timeout after ${timeoutMs / 1000} s; last finished test: ${last ?? '(none)'}` : undefined,
        exitCode: code,
        seconds: (Date.now() - started) / 1000,
      });
    });
  });
}

/**
 * runtest's output is block-buffered into a pipe and lost when a hung run is killed; in external
 * mode every test starts with `DEBUG LOG "### Starting test NAME in FILE"`, so the redis-server's
 * log (the backend's, through the proxy) names the test that hung.
 */
function noteCurrentTest(run: UnitRun, redisLog: string): void {
  if (!run.hang) return;
  let text = '';
  try {
    text = readFileSync(redisLog, 'utf8');
  } catch {
    return;
  }
  const started = [...text.matchAll(/### Starting test (.*) in tests\/\S+\.tcl/g)].map((m) => m[1]);
  run.hang = `${run.hang}; last test started (redis log): ${started.pop() ?? '(none)'}`;
}

const SERVER_ARGS = ['--enable-debug-command', 'yes', '--enable-protected-configs', 'yes'];

async function runBoth(suite: string, unit: string, options: Options, cleanup: Cleanup): Promise<{ direct: UnitRun; proxy: UnitRun }> {
  const logs = path.join(options.cache, 'logs');
  mkdirSync(logs, { recursive: true });
  const base = unit.replace(/\//g, '_');

  const a = await RedisServer.start({ extraArgs: [...SERVER_ARGS, '--logfile', path.join(logs, `${base}.direct.redis.log`)] });
  cleanup.add(`redis ${a.port}`, () => a.stop());
  let direct: UnitRun;
  try {
    direct = await runUnit(suite, a.port, unit, options.tags, options.timeoutMs, path.join(logs, `${base}.direct.log`));
    noteCurrentTest(direct, path.join(logs, `${base}.direct.redis.log`));
  } finally {
    await a.stop();
  }

  const b = await RedisServer.start({ extraArgs: [...SERVER_ARGS, '--logfile', path.join(logs, `${base}.proxy.redis.log`)] });
  cleanup.add(`redis ${b.port}`, () => b.stop());
  let proxyRun: UnitRun;
  try {
    const proxy = await ProxyProcess.start({ backend: b, extraArgs: ['--log-level', 'warn'] });
    cleanup.add(`proxy ${proxy.port}`, () => proxy.stop());
    try {
      proxyRun = await runUnit(suite, proxy.port, unit, options.tags, options.timeoutMs, path.join(logs, `${base}.proxy.log`));
      noteCurrentTest(proxyRun, path.join(logs, `${base}.proxy.redis.log`));
    } finally {
      if (proxy.exited) proxyRun!.exception = `${proxyRun!.exception ?? ''} [proxy exited: ${JSON.stringify(proxy.exited)}]`;
      writeFileSync(path.join(logs, `${base}.proxy-process.log`), proxy.logs());
      await proxy.stop().catch((err: Error) => console.error(`proxy stop: ${err.message}`));
    }
  } finally {
    await b.stop();
  }
  return { direct, proxy: proxyRun! };
}

/** Counts names as a multiset: a unit may run a test of the same name more than once (encodings). */
function multiset(names: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const n of names) m.set(n, (m.get(n) ?? 0) + 1);
  return m;
}

function outcome(run: UnitRun): string {
  if (run.hang) return `hang (${run.hang})`;
  if (run.exception) return `exception: ${run.exception}`;
  return run.failed.length > 0 ? `${run.failed.length} err` : 'completed';
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  requireCommands(BINARIES.map((command) => ({ command, aptPackage: command === 'redis-server' ? 'redis-server' : 'redis-tools' })));
  if (!['tclsh8.5', 'tclsh8.6', 'tclsh8.7'].some(hasCommand)) {
    console.error('missing: tclsh 8.5+ (runtest looks for tclsh8.5/8.6/8.7)\ninstall on Debian/Ubuntu: sudo apt-get install -y tcl');
    process.exit(2);
  }
  const header = environmentLine();
  const suite = prepareSuite(options);
  const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: path.resolve(__dirname, '../..'), encoding: 'utf8' }).stdout.trim() || '?';
  console.log(`suite: ${suite} (Redis ${REDIS_TAG} tests); proxy commit ${commit}; tags: ${options.tags.join(' ') || '(none)'}`);

  const cleanup = new Cleanup();
  cleanup.add('runtest', () => {
    if (runningTest !== undefined) process.kill(-runningTest, 'SIGKILL');
  });
  const rows: Array<Array<string | number>> = [];
  const lostLines: string[] = [];
  let totalDirect = 0;
  let totalKept = 0;
  let totalDirectAll = 0;
  let totalProxyAll = 0;
  try {
    for (const unit of options.units) {
      const { direct, proxy } = await runBoth(suite, unit, options, cleanup);
      const proxyPassed = multiset(proxy.passed);
      let kept = 0;
      const lost: string[] = [];
      for (const name of direct.passed) {
        const left = proxyPassed.get(name) ?? 0;
        if (left > 0) {
          kept++;
          proxyPassed.set(name, left - 1);
        } else lost.push(name);
      }
      totalDirect += direct.passed.length;
      totalKept += kept;
      totalDirectAll += direct.passed.length + direct.failed.length;
      totalProxyAll += proxy.passed.length + proxy.failed.length;
      const failMsg = new Map(proxy.failed.map((f) => [f.name, f.message]));
      const reached = new Set([...proxy.passed, ...proxy.failed.map((f) => f.name)]);
      console.log(`\n${unit}: direct ${direct.passed.length} ok / ${direct.failed.length} err (${outcome(direct)}, ${direct.seconds.toFixed(1)} s); through the proxy ${kept} of them ok (${outcome(proxy)}, ${proxy.seconds.toFixed(1)} s)`);
      if (lost.length > 0) {
        lostLines.push(`### ${unit}: ${lost.length} lost`, '');
        if (proxy.exception) lostLines.push(`Through the proxy the unit stopped with: \`${proxy.exception.slice(0, 400)}\``, '');
        if (proxy.hang) lostLines.push(`Through the proxy: ${proxy.hang}`, '');
        const notReached: string[] = [];
        for (const name of lost) {
          if (!failMsg.has(name) && !reached.has(name)) {
            notReached.push(name);
            continue;
          }
          const why = failMsg.has(name) ? `err: ${failMsg.get(name)}` : 'passed fewer times than directly';
          const line = `- ${name} — ${why.slice(0, 300)}`;
          lostLines.push(line);
          console.log(`  lost: ${line.slice(2)}`);
        }
        if (notReached.length > 0) {
          const line = `- not reached through the proxy (the unit stopped earlier), ${notReached.length}: ${notReached.join('; ')}`;
          lostLines.push(line);
          console.log(`  lost, not reached: ${notReached.length}`);
        }
        lostLines.push('');
      }
      rows.push([
        unit,
        direct.passed.length,
        direct.failed.length,
        outcome(direct).slice(0, 80),
        kept,
        lost.length,
        direct.passed.length > 0 ? `${((kept / direct.passed.length) * 100).toFixed(1)}%` : 'n/a',
        outcome(proxy).replace(/\|/g, '\\|').slice(0, 120),
      ]);
    }
  } finally {
    await cleanup.run();
  }
  rows.push(['**total**', totalDirect, totalDirectAll - totalDirect, '', totalKept, totalDirect - totalKept, totalDirect > 0 ? `${((totalKept / totalDirect) * 100).toFixed(1)}%` : 'n/a', '']);
  const table = markdownTable(['unit', 'direct ok', 'direct err', 'direct run', 'ok through proxy too', 'lost', 'kept', 'proxy run'], rows);
  const markdown = [
    `# fidelity — Redis ${REDIS_TAG}'s test suite through the proxy`,
    '',
    `Environment: ${header}. Proxy commit ${commit}. Pass/fail, not speed, is measured; a busy machine can still fail timing-sensitive tests in either mode.`,
    '',
    `Command: \`npm run fidelity -- <suite> ${options.units.join(' ')}${options.redisTags ? ' --redis-tags' : ''}${options.tags.length && !options.redisTags ? options.tags.map((t) => ` --tags ${t}`).join('') : ''}\` (runtest --host 127.0.0.1 --port P --single UNIT --clients 1${options.tags.map((t) => ` --tags ${t}`).join('')}; a fresh redis-server per unit and mode, \`${SERVER_ARGS.join(' ')}\`; a fresh proxy in front of its own redis-server for the proxy run).`,
    '',
    table,
    '',
    `Tests reported by runtest (ok + err): ${totalDirectAll} directly, ${totalProxyAll} through the proxy.`,
    '',
    lostLines.length > 0 ? '## Lost tests (pass directly, not through the proxy)\n' : 'No lost tests.',
    ...lostLines,
  ].join('\n');
  const file = writeResult(options.out, markdown);
  console.log(`\n${table}\n\ntotal: ${totalKept} of ${totalDirect} tests that pass directly also pass through the proxy\nwritten to ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

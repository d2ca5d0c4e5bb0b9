/**
 * The package as operators install it: `npm pack` gives a tarball that ships only what the proxy
 * needs at run time (compiled src, the sync .proto, package.json, README), installs into an empty
 * folder with `npm install <tarball>` and runs there as `npx pika-sync-proxy`: `--version`, then a
 * real proxy in front of a real redis-server (SET/GET through it; SIGTERM to the proxy process, npx
 * exits 0).
 *
 * The build is the one mocha runs from (dist/), so `npm pack` is called with --ignore-scripts (its
 * prepack script would rebuild the tree under the running test). `npm install` needs the registry.
 */
import { expect } from 'chai';
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { RedisServer } from './helpers/redis-server';

const execFileP = promisify(execFile);

/** dist/test/package.test.js -> the repository root */
const REPO_ROOT = path.resolve(__dirname, '../..');
const PACKAGE = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

/** Paths that must never be in the tarball: sources, tests, benchmarks, the demo, source maps. */
const FORBIDDEN = /^(test|bench|demo|src|scripts|\.ci|dist\/(test|bench|demo))\/|\.map$|\.ts$/;

interface PackResult {
  filename: string;
  files: Array<{ path: string; mode: number }>;
}

/**
 * The environment for child npm commands: without the npm_* variables an outer `npm test` sets
 * (they would point the inner npm at this repository's config), no update check.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  env.npm_config_update_notifier = 'false';
  env.npm_config_fund = 'false';
  env.npm_config_audit = 'false';
  return env;
}

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { cwd, env: npmEnv(), maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd}: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

function parsePack(stdout: string): PackResult {
  // npm prints the JSON array last; anything before it (e.g. a notice) is not part of it.
  const parsed = JSON.parse(stdout.slice(stdout.indexOf('['))) as PackResult[];
  expect(parsed).to.have.length(1);
  return parsed[0];
}

describe('package (npm pack, install into an empty folder, npx pika-sync-proxy)', function () {
  this.timeout(600_000); // npm install fetches the dependencies
  let tmp: string;

  before(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'psp-package-'));
  });
  after(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('the tarball lists only run-time files: compiled src, the sync .proto, package.json, README', async () => {
    const pack = parsePack(await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], REPO_ROOT));
    const paths = pack.files.map((f) => f.path);
    expect(paths).to.include.members(['package.json', 'README.md', 'dist/src/main.js', 'dist/proto/pikasync/v1/sync.proto']);
    expect(paths.filter((p) => FORBIDDEN.test(p)), 'test/bench/demo/source files in the tarball').to.deep.equal([]);
    expect(paths.filter((p) => !/^dist\/(src|proto)\//.test(p) && !['package.json', 'README.md', 'LICENSE'].includes(p))).to.deep.equal([]);
    // every compiled module of src/ is there (nothing at run time requires a file outside the list)
    expect(paths.filter((p) => p.startsWith('dist/src/') && p.endsWith('.js')).length).to.be.greaterThan(40);
    const main = pack.files.find((f) => f.path === 'dist/src/main.js')!;
    expect(main.mode & 0o111, 'dist/src/main.js executable').to.not.equal(0);
    expect(readFileSync(path.join(REPO_ROOT, 'dist/src/main.js'), 'utf8').startsWith('#!/usr/bin/env node\n')).to.equal(true);
  });

  it('installs from the tarball into an empty folder; npx pika-sync-proxy prints the version, proxies SET/GET to a real node and exits 0 on SIGTERM', async () => {
    const packDir = path.join(tmp, 'pack');
    const installDir = path.join(tmp, 'install');
    const dataDir = path.join(tmp, 'data');
    mkdirSync(packDir);
    mkdirSync(installDir);
    mkdirSync(dataDir);

    const pack = parsePack(await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', packDir], REPO_ROOT));
    const tarball = path.join(packDir, pack.filename);
    expect(existsSync(tarball), tarball).to.equal(true);

    // A package.json of its own keeps npm from looking for a project in the parent folders.
    writeFileSync(path.join(installDir, 'package.json'), JSON.stringify({ name: 'psp-install-check', version: '1.0.0', private: true }));
    await run('npm', ['install', '--no-audit', '--no-fund', tarball], installDir);
    const installed = path.join(installDir, 'node_modules', PACKAGE.name);
    for (const dir of ['test', 'bench', 'demo', 'src', 'dist/test', 'dist/bench', 'dist/demo']) {
      expect(existsSync(path.join(installed, dir)), `${dir} installed`).to.equal(false);
    }

    const version = await run('npx', ['--no', '--', PACKAGE.name, '--version'], installDir);
    expect(version.trim()).to.equal(`${PACKAGE.name} ${PACKAGE.version}`);

    const node = await RedisServer.start();
    let proc: ChildProcess | undefined;
    let client: Redis | undefined;
    let proxyPid: number | undefined;
    try {
      proc = spawn('npx', ['--no', '--', PACKAGE.name, '--port', '0', '--sync-port', '0', '--backend', node.address, '--data-dir', dataDir], {
        cwd: installDir,
        env: npmEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc!.once('exit', (code, signal) => resolve({ code, signal })));
      let output = '';
      const listening = await new Promise<{ port: number; pid: number }>((resolve, reject) => {
        const onData = (d: Buffer): void => {
          output += d.toString('utf8');
          for (const line of output.split('\n')) {
            if (!line.includes('pika-sync-proxy listening')) continue;
            try {
              resolve(JSON.parse(line) as { port: number; pid: number });
            } catch {
              // the line is not complete yet
            }
          }
        };
        proc!.stdout!.on('data', onData);
        proc!.stderr!.on('data', onData);
        void exited.then((info) => reject(new Error(`installed proxy exited before listening (${JSON.stringify(info)})\n${output}`)));
      });
      const { port } = listening;
      proxyPid = listening.pid;
      expect(port).to.be.a('number').and.greaterThan(0);
      // npx runs the bin through `sh -c` in a child: the pid in the log is the installed proxy's own.
      expect(readFileSync(`/proc/${proxyPid}/cmdline`, 'utf8')).to.include(path.join(installDir, 'node_modules'));

      client = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, retryStrategy: () => null });
      expect(await client.set('package:k', 'installed')).to.equal('OK');
      expect(await client.get('package:k')).to.equal('installed');
      client.disconnect();
      client = undefined;
      const direct = node.client();
      expect(await direct.get('package:k'), 'the write reached the node').to.equal('installed');
      direct.disconnect();

      // SIGTERM to the proxy process, as a supervisor signals its main process (npm forwards a
      // signal sent to npx only to its `sh -c`, which dies without passing it on); npx exits with
      // the proxy's exit code.
      process.kill(proxyPid, 'SIGTERM');
      const info = await exited;
      expect(info, output).to.deep.equal({ code: 0, signal: null });
      expect(output).to.include('graceful stop requested');
      expect(output).to.not.match(/"level":(50|60)/); // no error or fatal line
      proxyPid = undefined;
    } finally {
      client?.disconnect();
      if (proxyPid !== undefined) {
        try {
          process.kill(proxyPid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await node.stop();
    }
  });
});

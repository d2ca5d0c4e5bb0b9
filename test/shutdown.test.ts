/**
 * Stopping always works (built CLI, real redis-server): a stdout whose reader went away never
 * holds the process (pino's default destination retried EPIPE every 100 ms forever at exit), a
 * stop that cannot finish ends after --shutdown-timeout-ms with status 1 and says on stderr what
 * was left, and a second signal exits at once.
 *
 * The time bounds of these assertions are generous on purpose: they tell "exits" from "hangs
 * forever", not fast from slow.
 */
import { expect } from 'chai';
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitForPort } from './helpers/ports';
import { CLI_PATH, ExitInfo, ProxyProcess } from './helpers/proxy-process';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';
import { encodeArgs } from '../src/resp/request-parser';

/** "Exits rather than hangs": far above any normal stop. */
const EXIT_BOUND_MS = 20_000;

function waitExit(proc: ChildProcess, timeoutMs: number): Promise<ExitInfo | 'timeout'> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve({ code: proc.exitCode, signal: proc.signalCode });
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), timeoutMs);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe('shutdown: stopping always works (CLI)', function () {
  this.timeout(90_000);
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    while (cleanups.length) await Promise.resolve(cleanups.pop()!()).catch(() => undefined);
  });

  async function startNode(): Promise<RedisServer> {
    const node = await RedisServer.start();
    cleanups.push(() => node.stop());
    return node;
  }

  /** `node dist/src/main.js` with the given stdio for stdout and stderr; killed at cleanup if still alive. */
  async function spawnProxy(node: RedisServer, out: 'pipe' | NodeJS.WritableStream, extraArgs: string[] = []): Promise<{ proc: ChildProcess; port: number }> {
    const port = await freePort();
    let syncPort = await freePort();
    while (syncPort === port) syncPort = await freePort();
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'psp-shutdown-'));
    const args = [CLI_PATH, '--port', String(port), '--sync-port', String(syncPort), '--backend', node.address, '--data-dir', dataDir, ...extraArgs];
    const proc = spawn(process.execPath, args, { stdio: ['ignore', out as 'pipe', out as 'pipe'] });
    cleanups.push(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    });
    await waitForPort(port, 15_000);
    await waitForPort(syncPort, 15_000);
    return { proc, port };
  }

  it('a. stdout is a pipe whose reader has gone (parent destroyed its read end): SIGTERM exits with status 0', async () => {
    const node = await startNode();
    const { proc } = await spawnProxy(node, 'pipe');
    proc.stderr!.resume();
    // Close our read end of the proxy's stdout: its next log line meets EPIPE.
    proc.stdout!.destroy();
    await sleep(100);
    // Its stop logs several lines ('graceful stop requested', 'stopped', ...): each meets EPIPE.
    proc.kill('SIGTERM');
    const exit = await waitExit(proc, EXIT_BOUND_MS);
    expect(exit, 'the proxy hung after SIGTERM with its stdout reader gone').to.deep.equal({ code: 0, signal: null });
  });

  it('a2. stdout and stderr piped into `head -c 1500`, which exits: SIGTERM exits with status 0 (the reported set-up)', async () => {
    const node = await startNode();
    const head = spawn('head', ['-c', '1500'], { stdio: ['pipe', 'ignore', 'inherit'] });
    cleanups.push(() => head.kill('SIGKILL'));
    const headExit = waitExit(head, EXIT_BOUND_MS);
    const { proc } = await spawnProxy(node, head.stdin!);
    // Only the proxy holds the pipe's write end now, only head its read end (as in a shell pipeline).
    head.stdin!.destroy();
    // The start-up lines alone pass 1500 bytes: head exits by itself.
    expect(await headExit, 'head did not get 1500 bytes of start-up log').to.deep.equal({ code: 0, signal: null });
    await sleep(100);
    proc.kill('SIGTERM');
    const exit = await waitExit(proc, EXIT_BOUND_MS);
    expect(exit, 'the proxy hung after SIGTERM with its stdout reader gone').to.deep.equal({ code: 0, signal: null });
  });

  /** A reader that never reads (`sleep`): the proxy's stdout pipe fills up, then its writes meet EAGAIN. */
  async function proxyWithStalledReader(): Promise<{ proc: ChildProcess; reader: ChildProcess }> {
    const node = await startNode();
    const reader = spawn('sleep', ['600'], { stdio: ['pipe', 'ignore', 'ignore'] });
    cleanups.push(() => reader.kill('SIGKILL'));
    const { proc, port } = await spawnProxy(node, reader.stdin!, ['--log-level', 'debug']);
    reader.stdin!.destroy();
    // 'client connected' / 'client disconnected' at debug: ~300 bytes a connection, far past the 64 KiB a pipe holds.
    for (let i = 0; i < 600; i++) {
      const c = await RespClient.connect(port);
      c.socket.write(encodeArgs(['PING']));
      await c.read();
      c.socket.destroy();
    }
    await sleep(200);
    return { proc, reader };
  }

  it('a3. stdout reader never reads (pipe full), then goes away during the stop: SIGTERM exits with status 0', async () => {
    const { proc, reader } = await proxyWithStalledReader();
    proc.kill('SIGTERM');
    await sleep(300);
    reader.kill('SIGKILL');
    const exit = await waitExit(proc, EXIT_BOUND_MS);
    expect(exit, 'the proxy hung after SIGTERM with its stdout pipe full, then its reader gone').to.deep.equal({ code: 0, signal: null });
  });

  it('a4. stdout reader alive but never reading (pipe full): SIGTERM still exits with status 0 (the logs that do not fit are dropped)', async () => {
    const { proc } = await proxyWithStalledReader();
    proc.kill('SIGTERM');
    const exit = await waitExit(proc, EXIT_BOUND_MS);
    expect(exit, 'the proxy hung after SIGTERM with its stdout pipe full').to.deep.equal({ code: 0, signal: null });
  });

  /** A proxy whose node is frozen (SIGSTOP) with a client request in flight: its stop cannot drain. */
  async function stuckProxy(extraArgs: string[]): Promise<{ proxy: ProxyProcess; node: RedisServer }> {
    const node = await startNode();
    const proxy = await ProxyProcess.start({ backend: node, extraArgs });
    cleanups.push(() => proxy.kill('SIGKILL'));
    const ready = proxy.client();
    cleanups.push(() => ready.disconnect());
    for (let i = 0; !(await ready.info('proxy')).includes('backend_link_status:up'); i++) {
      if (i > 300) throw new Error('backend link never came up');
      await sleep(50);
    }
    // Fully started (the node probed, the signal handlers in place): the last start-up line is the protection one.
    await proxy.waitForLog((e) => e.protection !== undefined, 15_000);
    await sleep(100);
    process.kill(node.pid!, 'SIGSTOP');
    cleanups.push(() => process.kill(node.pid!, 'SIGCONT'));
    const client = await RespClient.connect(proxy.port);
    cleanups.push(() => client.socket.destroy());
    client.socket.write(encodeArgs(['SET', 'in-flight', 'v']));
    await sleep(300);
    return { proxy, node };
  }

  it('b. a stop that cannot finish (node frozen, a request in flight) exits with status 1 after --shutdown-timeout-ms and says what was left', async () => {
    const { proxy } = await stuckProxy(['--shutdown-timeout-ms', '500']);
    const started = Date.now();
    await proxy.kill('SIGTERM');
    const exit = proxy.exited!;
    expect(exit).to.deep.equal({ code: 1, signal: null });
    expect(Date.now() - started).to.be.below(EXIT_BOUND_MS);
    expect(proxy.logs()).to.include('pika-sync-proxy: the graceful stop did not finish within --shutdown-timeout-ms 500; exiting with status 1; left undone: still running: draining replies in flight (1 node replies outstanding');
    expect(proxy.logs()).to.match(/not started: replication, sync service, snapshot store, node connection, write log/);
  });

  it('c. a second SIGTERM during a stop that cannot finish exits at once with status 1', async () => {
    const { proxy } = await stuckProxy(['--shutdown-timeout-ms', '600000']);
    const first = proxy.kill('SIGTERM');
    await proxy.waitForLog((e) => e.msg === 'graceful stop requested', EXIT_BOUND_MS);
    await sleep(200);
    expect(proxy.exited, 'exited before the second signal').to.equal(undefined);
    const started = Date.now();
    process.kill(proxy.pid!, 'SIGTERM');
    const exit = await first;
    // "At once": well below the 5 s the drain step alone may take, and nowhere near the 600 s timeout.
    expect(Date.now() - started).to.be.below(3_000);
    expect(exit).to.deep.equal({ code: 1, signal: null });
    expect(proxy.logs()).to.include('pika-sync-proxy: SIGTERM during the graceful stop: exiting at once; left undone: still running: draining replies in flight');
  });
});

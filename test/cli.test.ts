/**
 * The CLI as operators run it: flag errors name the flag and exit 2; SIGTERM stops gracefully
 * (no new connections, replies in flight delivered, exit 0); pino JSON logs per component.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { encodeArgs } from '../src/resp/request-parser';
import { CLI_PATH, ProxyProcess } from './helpers/proxy-process';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';

describe('cli', function () {
  let node: RedisServer;
  before(async () => {
    node = await RedisServer.start();
  });
  after(async () => node?.stop());

  it('refuses a bad flag with a message that names it, exit code 2', () => {
    const r = spawnSync(process.execPath, [CLI_PATH, '--port', '99999', '--backend', node.address], { encoding: 'utf8' });
    expect(r.status).to.equal(2);
    expect(r.stderr).to.include('--port: must be at most 65535, got 99999');
    const r2 = spawnSync(process.execPath, [CLI_PATH, '--backend', 'localhost'], { encoding: 'utf8' });
    expect(r2.status).to.equal(2);
    expect(r2.stderr).to.include("--backend: expected host:port");
  });

  it('--help lists every flag', () => {
    const r = spawnSync(process.execPath, [CLI_PATH, '--help'], { encoding: 'utf8' });
    expect(r.status).to.equal(0);
    for (const flag of ['--port', '--backend', '--sync-port', '--data-dir', '--requirepass', '--backend-password', '--masterauth', '--log-level', '--sync-max-attempts']) {
      expect(r.stdout).to.include(flag);
    }
  });

  it('SIGTERM: replies in flight are delivered, then the process exits 0 and stops listening', async () => {
    const proxy = await ProxyProcess.start({ backend: node });
    const c = await RespClient.connect(proxy.port);
    const n = 20_000;
    const batch = Buffer.concat(Array.from({ length: n }, (_, i) => encodeArgs(['SET', `drain:${i}`, 'v'])));
    c.send(batch);
    expect((await c.read()).toString()).to.equal('+OK\r\n');
    const exit = proxy.stop({ keepDataDir: false });
    let received = 1;
    try {
      while (received < n) {
        await c.read(5000);
        received++;
      }
    } catch {
      /* the connection closed: count what arrived */
    }
    const info = await exit;
    expect(info?.code).to.equal(0);
    const direct = node.client();
    // Every command the node executed was answered: none lost between node and client.
    const executed = (await direct.keys('drain:*')).length;
    direct.disconnect();
    expect(received).to.equal(executed);
    const refused = await RespClient.connect(proxy.port).then(
      (x) => (x.close(), 'connected'),
      () => 'refused',
    );
    expect(refused).to.equal('refused');
    expect(proxy.logs()).to.match(/"component":"proxy".*graceful stop requested|graceful stop requested/);
  });

  it('logs are pino JSON with a component per line and no passwords', async () => {
    const proxy = await ProxyProcess.start({ backend: node, extraArgs: ['--requirepass', 'hunter2-secret', '--log-level', 'debug'] });
    const c = await RespClient.connect(proxy.port);
    expect(await c.text('AUTH', 'hunter2-secret')).to.equal('+OK\r\n');
    expect(await c.text('AUTH', 'wrong-secret-xyz')).to.match(/^-WRONGPASS/);
    c.close();
    await proxy.stop({ keepDataDir: true });
    const entries = proxy.logEntries();
    expect(entries.length).to.be.greaterThan(2);
    expect(entries.every((e) => typeof e.level === 'number' && typeof e.msg === 'string')).to.equal(true);
    expect(entries.some((e) => e.component === 'proxy')).to.equal(true);
    expect(proxy.logs()).to.not.include('hunter2-secret');
    expect(proxy.logs()).to.not.include('wrong-secret-xyz');
  });
});

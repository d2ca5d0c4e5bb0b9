/**
 * The proxy under load and abuse: long pipelines keep their order, many concurrent clients,
 * malformed RESP, oversized lengths, clients that never read, the node killed mid-traffic,
 * and the proxy's own password.
 */
import { expect } from 'chai';
import Redis from 'ioredis';
import { encodeArgs } from '../src/resp/request-parser';
import { RespClient } from './helpers/resp-client';
import { RedisServer } from './helpers/redis-server';
import { TestProxy, startTestProxy } from './helpers/proxy-fixture';

describe('proxy: load, bad input and node failures', function () {
  let node: RedisServer;
  let proxy: TestProxy;

  before(async () => {
    node = await RedisServer.start();
    proxy = await startTestProxy(node, ['--client-output-limit', '1mb']);
  });
  after(async () => {
    await proxy?.stop();
    await node?.stop();
  });

  it('a pipeline of 10,000 mixed commands is answered in order, reads after their writes', async () => {
    const c = await RespClient.connect(proxy.port);
    const parts: Buffer[] = [];
    for (let i = 0; i < 5000; i++) parts.push(encodeArgs(['SET', `p:${i}`, `v${i}`]), encodeArgs(['GET', `p:${i}`]));
    c.send(Buffer.concat(parts));
    for (let i = 0; i < 5000; i++) {
      expect((await c.read()).toString()).to.equal('+OK\r\n');
      expect((await c.read()).toString()).to.equal(`$${`v${i}`.length}\r\nv${i}\r\n`);
    }
    c.close();
  });

  it('200 concurrent clients each see their own writes', async () => {
    const clients = Array.from({ length: 200 }, () => new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 }));
    await Promise.all(clients.map((c) => c.connect()));
    await Promise.all(
      clients.map(async (c, i) => {
        for (let j = 0; j < 20; j++) await c.incr(`cc:${i}`);
        expect(await c.get(`cc:${i}`)).to.equal('20');
      }),
    );
    await Promise.all(clients.map((c) => c.quit()));
    const direct = node.client();
    expect(await direct.get('cc:199')).to.equal('20');
    direct.disconnect();
  });

  const malformed: [string, string, string][] = [
    ['a bulk length that is not a number', '*1\r\n$abc\r\n', '-ERR Protocol error: invalid bulk length'],
    ['a bulk length over 512 MB', '*1\r\n$600000000\r\n', '-ERR Protocol error: invalid bulk length'],
    ['an absurd multibulk count', '*99999999\r\n', '-ERR Protocol error: invalid multibulk length'],
    ['a bulk without its $ header', '*1\r\nGET\r\n', "-ERR Protocol error: expected '$', got 'G'"],
    ['unbalanced quotes inline', 'SET "a b\r\n', '-ERR Protocol error: unbalanced quotes in request'],
  ];
  for (const [what, bytes, expected] of malformed) {
    it(`${what}: protocol error, connection closed, proxy still serves others`, async () => {
      const bad = await RespClient.connect(proxy.port);
      bad.send('PING\r\n');
      bad.send(bytes);
      expect((await bad.read()).toString()).to.equal('+PONG\r\n');
      expect((await bad.read()).toString()).to.equal(`${expected}\r\n`);
      await bad.waitClosed();
      const good = await RespClient.connect(proxy.port);
      expect(await good.text('PING')).to.equal('+PONG\r\n');
      good.close();
    });
  }

  it('inline commands work as on Redis', async () => {
    const c = await RespClient.connect(proxy.port);
    c.send('SET inl "a b"\r\nGET inl\r\n');
    expect((await c.read()).toString()).to.equal('+OK\r\n');
    expect((await c.read()).toString()).to.equal('$3\r\na b\r\n');
    c.close();
  });

  it('a 10,000-argument command is handled', async () => {
    const c = await RespClient.connect(proxy.port);
    const args = ['SADD', 'wide'];
    for (let i = 0; i < 9998; i++) args.push(`m${i}`);
    expect(await c.text(...args)).to.equal(':9998\r\n');
    c.close();
  });

  it('a client that never reads its replies is disconnected past the output limit; others unaffected', async () => {
    const setup = await RespClient.connect(proxy.port);
    await setup.call('SET', 'bigval', 'x'.repeat(256 * 1024));
    const lazy = await RespClient.connect(proxy.port);
    lazy.socket.pause(); // never read
    const burst = Buffer.concat(Array.from({ length: 400 }, () => encodeArgs(['GET', 'bigval'])));
    lazy.socket.write(burst);
    lazy.socket.write(burst);
    const deadline = Date.now() + 15_000;
    let disconnected = false;
    while (Date.now() < deadline && !disconnected) {
      const info = await setup.text('INFO', 'proxy');
      disconnected = /client_output_limit_disconnections:[1-9]/.test(info);
      if (!disconnected) await new Promise((r) => setTimeout(r, 100));
    }
    expect(disconnected).to.equal(true);
    expect(await setup.text('PING')).to.equal('+PONG\r\n');
    lazy.close();
    setup.close();
  });

  it('node killed mid-traffic: prompt -ERR naming the backend, then recovery after restart', async () => {
    const c = await RespClient.connect(proxy.port);
    expect(await c.text('SET', 'before', '1')).to.equal('+OK\r\n');
    await node.kill();
    const reply = await c.text('GET', 'before');
    expect(reply).to.match(/^-ERR BACKEND_(UNAVAILABLE|CONNECTION_LOST): backend 127\.0\.0\.1:\d+ /);
    expect(reply).to.include(node.address);
    await node.restart();
    const deadline = Date.now() + 10_000;
    let after = '';
    while (Date.now() < deadline) {
      after = await c.text('SET', 'after', '2');
      if (after === '+OK\r\n') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(after).to.equal('+OK\r\n');
    expect(await c.text('GET', 'after')).to.equal('$1\r\n2\r\n');
    c.close();
  });

  it('INFO carries the node sections and a # Proxy section', async () => {
    const c = await RespClient.connect(proxy.port);
    const info = await c.text('INFO');
    expect(info).to.include('redis_version:');
    expect(info).to.include('# Proxy');
    expect(info).to.include('backend_link_status:up');
    expect(info).to.include('# Replication');
    expect(info.match(/# Replication/g)).to.have.length(1);
    c.close();
  });
});

describe('proxy: --requirepass', function () {
  let node: RedisServer;
  let proxy: TestProxy;
  before(async () => {
    node = await RedisServer.start({ password: 'nodepw' });
    proxy = await startTestProxy(node, ['--requirepass', 'proxypw', '--backend-password', 'nodepw']);
  });
  after(async () => {
    await proxy?.stop();
    await node?.stop();
  });

  it('NOAUTH before AUTH, WRONGPASS for a wrong password, the node password stays the proxy\'s', async () => {
    const c = await RespClient.connect(proxy.port);
    expect(await c.text('GET', 'x')).to.equal('-NOAUTH Authentication required.\r\n');
    expect(await c.text('AUTH', 'nodepw')).to.equal('-WRONGPASS invalid username-password pair or user is disabled.\r\n');
    expect(await c.text('AUTH', 'default', 'wrong')).to.equal('-WRONGPASS invalid username-password pair or user is disabled.\r\n');
    expect(await c.text('AUTH', 'proxypw')).to.equal('+OK\r\n');
    expect(await c.text('SET', 'x', '1')).to.equal('+OK\r\n');
    expect(await c.text('GET', 'x')).to.equal('$1\r\n1\r\n');
    c.close();
  });
});

describe('proxy: guards of its own node link', function () {
  let node: RedisServer;
  let proxy: TestProxy;
  before(async () => {
    node = await RedisServer.start();
    proxy = await startTestProxy(node);
  });
  after(async () => {
    await proxy?.stop();
    await node?.stop();
  });

  it('refuses CONFIG SET requirepass/masterauth (it would lock the proxy out of its node); other CONFIG goes through', async () => {
    const c = await RespClient.connect(proxy.port);
    expect(await c.text('CONFIG', 'SET', 'requirepass', 'x')).to.match(/^-ERR CONFIG SET of requirepass\/masterauth\/masteruser is not allowed/);
    expect(await c.text('CONFIG', 'SET', 'maxmemory-policy', 'noeviction', 'masterauth', 'y')).to.match(/^-ERR CONFIG SET/);
    expect(await c.text('CONFIG', 'SET', 'maxmemory-policy', 'noeviction')).to.equal('+OK\r\n');
    expect(await c.text('SET', 'still', 'works')).to.equal('+OK\r\n');
    c.close();
  });
});

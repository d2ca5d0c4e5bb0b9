/**
 * Hostile and broken clients against the built CLI (a separate process, so its RSS can be read
 * from /proc): malformed RESP, giant lengths, 10,000-argument commands, half-sent commands and
 * disconnects, 1,000 concurrent clients, clients that never read. The proxy stays up, its memory
 * stays bounded and a well-behaved client next to them is served correctly all along.
 */
import { expect } from 'chai';
import net from 'node:net';
import type Redis from 'ioredis';
import { encodeArgs } from '../src/resp/request-parser';
import { ProxyProcess } from './helpers/proxy-process';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';
import { redisClient, rssOf, waitBackendUp, waitFor } from './faults-fixture';

/** Generous bound for a proxy that must never buffer what its clients send or fail to read. */
const RSS_BOUND = 300 * 1024 * 1024;

describe('bad client input against the CLI proxy', function () {
  this.timeout(60_000);
  let node: RedisServer;
  let proxy: ProxyProcess;
  let good: Redis;
  let baselineRss: number;

  before(async () => {
    node = await RedisServer.start();
    proxy = await ProxyProcess.start({ backend: node, extraArgs: ['--client-output-limit', '1mb'] });
    good = redisClient('127.0.0.1', proxy.port);
    await waitBackendUp(good);
    await good.set('canary', 'alive');
    baselineRss = await rssOf(proxy.pid!);
  });
  after(async () => {
    good?.disconnect();
    await proxy?.stop();
    await node?.stop();
  });
  afterEach(async () => {
    // after every abuse: process alive, the good client served, memory bounded
    expect(proxy.exited, proxy.tail()).to.equal(undefined);
    expect(await good.get('canary')).to.equal('alive');
    expect(await rssOf(proxy.pid!)).to.be.lessThan(RSS_BOUND);
  });

  const connectedClients = async (): Promise<number> => Number(/connected_clients:(\d+)/.exec(await good.info('proxy'))![1]);

  it('malformed RESP and giant lengths get a protocol error and a closed connection, nothing allocated for them', async () => {
    const cases: Array<[string, RegExp]> = [
      ['*2\r\n$abc\r\n', /^-ERR Protocol error/],
      ['*1\r\n$2147483648\r\n', /^-ERR Protocol error: invalid bulk length/],
      ['*1\r\n$-7\r\n', /^-ERR Protocol error/],
      ['*9999999999\r\n', /^-ERR Protocol error: invalid multibulk length/],
      ['*1\r\nGET\r\n', /^-ERR Protocol error: expected '\$'/],
      // an inline line that never ends: refused past the inline limit, not buffered forever
      ['A'.repeat(100_000), /^-ERR Protocol error: too big inline request/],
    ];
    for (const [bytes, expected] of cases) {
      const bad = await RespClient.connect(proxy.port);
      bad.send(bytes);
      const reply = await bad.read().catch((e: Error) => Buffer.from(`closed: ${e.message}`));
      expect(reply.toString(), JSON.stringify(bytes.slice(0, 40))).to.match(expected);
      await bad.waitClosed();
    }
    expect(Number(/protocol_errors:(\d+)/.exec(await good.info('proxy'))![1])).to.be.at.least(cases.length);
  });

  it('a 10,000-argument command is answered correctly', async () => {
    const c = await RespClient.connect(proxy.port);
    const args = ['RPUSH', 'wide'];
    for (let i = 0; i < 9998; i++) args.push(`e${i}`);
    expect(await c.text(...args)).to.equal(':9998\r\n');
    expect(await c.text('LLEN', 'wide')).to.equal(':9998\r\n');
    expect(await c.text('DEL', 'wide')).to.equal(':1\r\n');
    c.close();
  });

  it('200 half-sent commands followed by a disconnect leave no client, no write and no leak behind', async () => {
    const before = await connectedClients();
    const sockets = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(proxy.port, '127.0.0.1', () => resolve(s));
          s.on('error', () => undefined);
          s.once('error', reject);
          // a SET cut inside its value, and a bulk header promising 1 MB that never comes
          s.write(i % 2 === 0 ? '*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$5\r\nab' : '*2\r\n$3\r\nGET\r\n$1048576\r\nxyz');
        }),
      ),
    );
    await waitFor('all 200 connected', async () => (await connectedClients()) >= before + 200, 15_000);
    for (const s of sockets) s.destroy();
    await waitFor('half-open clients gone', async () => (await connectedClients()) <= before, 15_000);
    expect(await good.exists('half')).to.equal(0);
  });

  it('1,000 concurrent clients each get their own answers', async () => {
    const clients = await Promise.all(Array.from({ length: 1000 }, () => RespClient.connect(proxy.port)));
    try {
      const answers = await Promise.all(
        clients.map(async (c, i) => {
          await c.call('SET', `c:${i}`, `v${i}`);
          return (await c.call('GET', `c:${i}`)).toString();
        }),
      );
      answers.forEach((a, i) => expect(a).to.equal(`$${`v${i}`.length}\r\nv${i}\r\n`));
      expect(await connectedClients()).to.be.at.least(1000);
    } finally {
      for (const c of clients) c.close();
    }
    await waitFor('clients closed', async () => (await connectedClients()) < 10, 15_000);
    const p = good.pipeline();
    for (let i = 0; i < 1000; i++) p.del(`c:${i}`);
    await p.exec();
  });

  it('clients that never read are cut at the output limit; RSS stays bounded; others unaffected', async () => {
    await good.set('big', 'x'.repeat(256 * 1024));
    const lazies = await Promise.all(Array.from({ length: 10 }, () => RespClient.connect(proxy.port)));
    const burst = Buffer.concat(Array.from({ length: 200 }, () => encodeArgs(['GET', 'big'])));
    for (const lazy of lazies) {
      lazy.socket.pause(); // never read: 10 x 200 x 256 KB = 500 MB of replies it will never take
      lazy.socket.write(burst);
    }
    await waitFor('lazy clients disconnected', async () => Number(/client_output_limit_disconnections:(\d+)/.exec(await good.info('proxy'))![1]) >= 10, 30_000);
    const rss = await rssOf(proxy.pid!);
    expect(rss, `rss ${rss} (baseline ${baselineRss})`).to.be.lessThan(baselineRss + 200 * 1024 * 1024);
    for (const lazy of lazies) lazy.close();
    await good.del('big');
  });
});

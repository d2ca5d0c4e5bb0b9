/**
 * The fault proxy's every mode against a real redis-server: each test asserts what a client (or the
 * node) can observe, so later tests that rely on these faults rely on something proven.
 */
import net from 'node:net';
import { expect } from 'chai';
import Redis from 'ioredis';
import { FaultProxy } from './helpers/fault-proxy';
import { RedisServer } from './helpers/redis-server';

/** A raw RESP connection that records every byte it receives and when it closed. */
class RawClient {
  readonly socket: net.Socket;
  received = Buffer.alloc(0);
  closed = false;
  error?: Error;
  private waiters: Array<() => void> = [];

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('data', (d: Buffer) => {
      this.received = Buffer.concat([this.received, d]);
      this.notify();
    });
    this.socket.on('error', (err) => (this.error = err));
    this.socket.on('close', () => {
      this.closed = true;
      this.notify();
    });
  }

  send(...args: string[]): void {
    this.socket.write(resp(args));
  }

  /** Resolves when `predicate` holds, rejects after `timeoutMs`. */
  async until(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`condition not met after ${timeoutMs} ms; received ${this.received.length} bytes, closed=${this.closed}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

function resp(args: string[]): Buffer {
  return Buffer.from(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
}

function bulk(value: string): Buffer {
  return Buffer.from(`$${Buffer.byteLength(value)}\r\n${value}\r\n`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('FaultProxy (against a real redis-server)', function () {
  let redis: RedisServer;
  let direct: Redis;
  let proxy: FaultProxy;
  const clients: Array<RawClient | Redis> = [];

  function raw(): RawClient {
    const c = new RawClient(proxy.port);
    clients.push(c);
    return c;
  }

  function viaProxy(): Redis {
    const c = new Redis({ host: '127.0.0.1', port: proxy.port, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
    clients.push(c);
    return c;
  }

  before(async () => {
    redis = await RedisServer.start();
    direct = redis.client();
  });

  after(async () => {
    direct.disconnect();
    await redis.stop();
  });

  beforeEach(async () => {
    await direct.flushall();
    proxy = await FaultProxy.start({ target: { host: redis.host, port: redis.port } });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) {
      if (c instanceof RawClient) c.socket.destroy();
      else c.disconnect();
    }
    await proxy.stop();
  });

  it("'pass' forwards commands and replies and counts bytes and connections", async () => {
    const client = viaProxy();
    await client.connect();
    expect(await client.set('k', 'v1')).to.equal('OK');
    expect(await client.get('k')).to.equal('v1');
    expect(await direct.get('k')).to.equal('v1');
    expect(proxy.counters.connectionsAccepted).to.equal(1);
    expect(proxy.counters.connectionsActive).to.equal(1);
    expect(proxy.counters.bytesUp).to.be.greaterThan(0);
    expect(proxy.counters.bytesDown).to.be.greaterThan(0);
  });

  it("'refuse' stops listening (ECONNREFUSED) and 'pass' listens again on the same port", async () => {
    const port = proxy.port;
    await proxy.setMode('refuse');
    const c = raw();
    await c.until(() => c.closed);
    expect((c.error as NodeJS.ErrnoException | undefined)?.code).to.equal('ECONNREFUSED');
    await proxy.setMode('pass');
    expect(proxy.port).to.equal(port);
    const again = raw();
    again.send('PING');
    await again.until(() => again.received.toString() === '+PONG\r\n');
  });

  it("'blackhole' accepts but never answers; the held request is answered once the mode changes", async () => {
    await proxy.setMode('blackhole');
    const c = raw();
    c.send('SET', 'bh', 'x');
    await sleep(300);
    expect(c.received.length).to.equal(0);
    expect(c.closed).to.equal(false);
    expect(await direct.exists('bh')).to.equal(0); // the node never saw the request
    await proxy.setMode('pass');
    await c.until(() => c.received.toString() === '+OK\r\n');
    expect(await direct.get('bh')).to.equal('x');
  });

  it("'blackhole' on a live connection stalls it without losing data", async () => {
    const c = raw();
    c.send('PING');
    await c.until(() => c.received.length === 7);
    await proxy.setMode('blackhole');
    c.send('SET', 'live', 'y');
    await sleep(300);
    expect(c.received.toString()).to.equal('+PONG\r\n');
    await proxy.setMode('pass');
    await c.until(() => c.received.toString() === '+PONG\r\n+OK\r\n');
  });

  it("'delay' holds every chunk for at least the given time", async () => {
    await proxy.setMode({ mode: 'delay', ms: 300 });
    const client = viaProxy();
    await client.connect();
    const started = Date.now();
    expect(await client.ping()).to.equal('PONG');
    // Request and reply are each delayed: at least 2 × 300 ms (a lower bound, never flaky).
    expect(Date.now() - started).to.be.at.least(590);
  });

  it("'throttle' limits the bytes per second of a reply", async () => {
    const value = 'v'.repeat(100_000);
    await direct.set('big', value);
    await proxy.setMode({ mode: 'throttle', bytesPerSec: 50_000 });
    const client = viaProxy();
    await client.connect();
    const started = Date.now();
    expect(await client.get('big')).to.equal(value);
    // 100 kB at 50 kB/s with a 5 kB burst cannot arrive in less than ~1.9 s.
    expect(Date.now() - started).to.be.at.least(1800);
  });

  it("'cut-after' down forwards exactly that many reply bytes, then closes both sides", async () => {
    await direct.set('k', 'z'.repeat(1000));
    await proxy.setMode({ mode: 'cut-after', bytes: 100, direction: 'down' });
    const c = raw();
    c.send('GET', 'k');
    await c.until(() => c.closed);
    expect(c.received).to.deep.equal(bulk('z'.repeat(1000)).subarray(0, 100));
    expect(proxy.counters.cuts).to.equal(1);
    expect(proxy.counters.connectionsActive).to.equal(0);
  });

  it("'cut-after' up delivers a truncated request that the node never executes", async () => {
    await proxy.setMode({ mode: 'cut-after', bytes: 50, direction: 'up' });
    const c = raw();
    c.send('SET', 'cut', 'q'.repeat(1000));
    await c.until(() => c.closed);
    expect(c.received.length).to.equal(0);
    expect(proxy.counters.bytesUp).to.equal(50);
    expect(await direct.exists('cut')).to.equal(0);
  });

  it("'cut-after' with once cuts one connection, then passes again", async () => {
    await direct.set('k', 'z'.repeat(1000));
    await proxy.setMode({ mode: 'cut-after', bytes: 10, direction: 'down', once: true });
    const first = raw();
    first.send('GET', 'k');
    await first.until(() => first.closed);
    expect(first.received.length).to.equal(10);
    const second = raw();
    second.send('GET', 'k');
    await second.until(() => second.received.length === bulk('z'.repeat(1000)).length);
    expect(second.received).to.deep.equal(bulk('z'.repeat(1000)));
  });

  it("'corrupt' down flips exactly `count` reply bytes after the given offset", async () => {
    const value = 'a'.repeat(200);
    await direct.set('k', value);
    await proxy.setMode({ mode: 'corrupt', afterBytes: 20, count: 5, direction: 'down' });
    const c = raw();
    c.send('GET', 'k');
    const expected = bulk(value);
    await c.until(() => c.received.length === expected.length);
    const differing = [...c.received.keys()].filter((i) => c.received[i] !== expected[i]);
    expect(differing).to.deep.equal([20, 21, 22, 23, 24]);
    expect(c.received[20]).to.equal(expected[20] ^ 0xff);
    expect(proxy.counters.corruptedBytes).to.equal(5);
  });

  it("'corrupt' up changes the value the node stores", async () => {
    await proxy.setMode({ mode: 'corrupt', afterBytes: 40, count: 3, direction: 'up' });
    const c = raw();
    const value = 'b'.repeat(100);
    c.send('SET', 'k', value);
    await c.until(() => c.received.toString() === '+OK\r\n');
    const stored = await direct.get('k');
    expect(stored).to.not.equal(value);
    expect(stored).to.have.length(100);
  });

  it('cutAll() destroys live connections; new ones work', async () => {
    const c = raw();
    c.send('PING');
    await c.until(() => c.received.length === 7);
    expect(proxy.cutAll()).to.equal(1);
    await c.until(() => c.closed);
    expect(proxy.counters.cuts).to.equal(1);
    const again = raw();
    again.send('PING');
    await again.until(() => again.received.toString() === '+PONG\r\n');
  });

  it('respects backpressure: a client that does not read stops the flow, nothing is lost', async () => {
    const size = 16 * 1024 * 1024;
    await direct.set('huge', Buffer.alloc(size, 0x61));
    const c = raw();
    c.socket.pause();
    c.send('GET', 'huge');
    await sleep(1000);
    // Kernel buffers hold a few hundred kB to a few MB; the proxy must not have read the rest.
    expect(proxy.counters.bytesDown).to.be.lessThan(size / 2);
    // ...and it did not read them into its own memory either: the upstream socket was paused.
    expect(proxy.counters.peakQueuedBytes).to.be.lessThan(1024 * 1024);
    c.socket.resume();
    const expectedLength = 1 + String(size).length + 2 + size + 2; // $<len>\r\n<data>\r\n
    await c.until(() => c.received.length === expectedLength, 30_000);
    expect(proxy.counters.bytesDown).to.equal(expectedLength);
  });
});

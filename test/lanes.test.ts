/**
 * Lanes (--node-connections): several connections from the data path to the node, on real
 * redis-server and real Pika 4.0.1 nodes. What must hold: one stalled lane does not stall the
 * other clients; each client's commands take effect in the order it sent them, across lanes;
 * writes that span lanes and keyless writes see every earlier write done; Pika's FLUSHALL, which
 * deadlocks against a write in progress on another connection, never meets one.
 * (The log's order under concurrent writers: master-exactness and replica suites, which run on
 * Pika through its default 8 lanes and on redis-server through 4.)
 */
import { expect } from 'chai';
import { encodeArgs } from '../src/resp/request-parser';
import { NodeConnection } from '../src/backend/node-connection';
import { silentLogger } from '../src/logger';
import { Lane, exclusive, laneOfKey } from '../src/server/lanes';
import { NodeKind, TestNode, startNode } from './helpers/nodes';
import { TestProxy, startTestProxy } from './helpers/proxy-fixture';
import { RespClient } from './helpers/resp-client';

async function pipeline(c: RespClient, commands: string[][]): Promise<string[]> {
  c.send(Buffer.concat(commands.map((args) => encodeArgs(args))));
  const replies: string[] = [];
  for (let i = 0; i < commands.length; i++) replies.push((await c.read(30_000)).toString());
  return replies;
}

/** `count` key names that hash to `lane` of `lanes`. */
function keysOnLane(prefix: string, lane: number, lanes: number, count: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) if (laneOfKey(Buffer.from(`${prefix}${i}`), lanes) === lane) out.push(`${prefix}${i}`);
  return out;
}

function laneCountOf(info: string): number {
  return Number(/node_connections:(\d+)/.exec(info)?.[1]);
}

describe('lanes: several node connections, one key one lane', function () {
  this.timeout(120_000);
  const nodes: TestNode[] = [];
  const proxies: TestProxy[] = [];
  const clients: RespClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await Promise.all(proxies.splice(0).map((p) => p.stop()));
    await Promise.all(nodes.splice(0).map((n) => n.stop()));
  });

  async function setUp(kind: NodeKind, flags: string[] = []): Promise<{ node: TestNode; proxy: TestProxy }> {
    const node = await startNode(kind);
    nodes.push(node);
    const proxy = await startTestProxy(node, flags);
    proxies.push(proxy);
    return { node, proxy };
  }

  async function connect(port: number): Promise<RespClient> {
    const c = await RespClient.connect(port);
    clients.push(c);
    return c;
  }

  it('auto chooses 8 lanes for Pika and 1 for redis-server; a number sets them; the node sees that many connections', async () => {
    const pika = await setUp('pika');
    const redis = await setUp('redis');
    const forced = await setUp('redis', ['--node-connections', '4']);
    expect(laneCountOf(await (await connect(pika.proxy.port)).text('INFO', 'proxy'))).to.equal(8);
    expect(laneCountOf(await (await connect(redis.proxy.port)).text('INFO', 'proxy'))).to.equal(1);
    const probe = await connect(forced.proxy.port);
    expect(laneCountOf(await probe.text('INFO', 'proxy'))).to.equal(4);
    // Every lane is a live connection the node counts (plus this probe's none: it talks to the proxy).
    const direct = forced.node.client();
    try {
      const list = (await direct.call('CLIENT', 'LIST')) as string;
      expect(list.trim().split('\n').length, list).to.be.at.least(4 + 1);
    } finally {
      direct.disconnect();
    }
  });

  it('a write stalled on its lane (CLIENT PAUSE WRITE on redis-server) holds up only that lane: another client is answered first', async () => {
    for (const lanes of [4, 1]) {
      const { node, proxy } = await setUp('redis', ['--node-connections', String(lanes)]);
      const direct = node.client();
      const writer = await connect(proxy.port);
      const reader = await connect(proxy.port);
      expect(await reader.text('SET', 'other', 'value')).to.equal('+OK\r\n');
      const arrivals: string[] = [];
      await direct.call('CLIENT', 'PAUSE', '20000', 'WRITE');
      try {
        // A key off lane 0, where quick reads go first (ordered-path.ts readLane).
        const [stalled] = keysOnLane('stalled:', 1, 4, 1);
        const write = writer.call('SET', stalled, 'v').then((r) => arrivals.push(`writer ${r.toString().trim()}`));
        // The reader's GET leaves after the stalled SET (the SET was written first).
        await new Promise((r) => setTimeout(r, 50));
        const read = reader.call('GET', 'other').then((r) => arrivals.push(`reader ${r.toString().trim()}`));
        // With lanes the GET comes back while the SET is still paused; with one lane it cannot:
        // unpause once it came back, or after a while when it does not.
        await Promise.race([read, new Promise((r) => setTimeout(r, 1500))]);
        await direct.call('CLIENT', 'UNPAUSE');
        await Promise.all([write, read]);
      } finally {
        direct.disconnect();
      }
      const expected = lanes > 1 ? ['reader $5\r\nvalue', 'writer +OK'] : ['writer +OK', 'reader $5\r\nvalue'];
      expect(arrivals, `${lanes} lane(s)`).to.deep.equal(expected);
      await Promise.all(proxies.splice(0).map((p) => p.stop()));
      await Promise.all(nodes.splice(0).map((n) => n.stop()));
    }
  });

  it('an operation across lanes starts only once every lane it holds has answered what was sent on it before (redis-server, a write paused on one lane)', async () => {
    const node = await startNode('redis');
    nodes.push(node);
    const connections = [0, 1].map(() => new NodeConnection({ host: node.host, port: node.port, reconnect: false, logger: silentLogger() }));
    await Promise.all(connections.map((c) => c.connect()));
    const [lane0, lane1] = connections.map((c, i) => new Lane(i, c, silentLogger()));
    const direct = node.client();
    const events: string[] = [];
    try {
      await direct.call('CLIENT', 'PAUSE', '20000', 'WRITE');
      const paused = new Promise<void>((resolve) => lane1.send(0, encodeArgs(['SET', 'k', '1']), () => (events.push('paused write answered'), resolve())));
      const ran = new Promise<void>((resolve) => exclusive([lane0, lane1], lane0, (carrier, done) => {
        events.push(`exclusive runs on lane ${carrier.index}`);
        carrier.send(0, encodeArgs(['PING']), () => (done(), resolve()));
      }));
      // A command for lane 1 submitted after the operation waits for it (the lane is held).
      const after = new Promise<void>((resolve) => lane1.submit((l) => l.send(0, encodeArgs(['GET', 'k']), () => (events.push('later command answered'), resolve()))));
      await new Promise((r) => setTimeout(r, 300));
      events.push('unpause');
      await direct.call('CLIENT', 'UNPAUSE');
      await Promise.all([paused, ran, after]);
    } finally {
      direct.disconnect();
      for (const c of connections) c.destroy();
    }
    expect(events).to.deep.equal(['unpause', 'paused write answered', 'exclusive runs on lane 0', 'later command answered']);
  });

  for (const kind of ['redis', 'pika'] as const) {
    const flags = kind === 'redis' ? ['--node-connections', '4'] : [];
    const lanes = kind === 'redis' ? 4 : 8;

    it(`${kind}: a pipelined client's commands take effect in its order across lanes (read-your-writes, keyless and spanning writes after everything before)`, async () => {
      const { proxy } = await setUp(kind, flags);
      // Load on lane 0 from other clients, so the client's commands there answer late.
      const busyKeys = keysOnLane('busy:', 0, lanes, 4);
      const loaders = await Promise.all(busyKeys.map(() => connect(proxy.port)));
      const loading = loaders.map((c, i) => pipeline(c, Array.from({ length: 3000 }, (_, j) => ['APPEND', busyKeys[i], `${j},`])));
      const c = await connect(proxy.port);
      const commands: string[][] = [];
      const expected: string[] = [];
      for (let i = 0; i < 200; i++) {
        const key = `k:${i}`;
        commands.push(['SET', key, `v${i}`], ['GET', key], ['INCR', 'counter'], ['EXISTS', key, `k:${i + 1}`]);
        expected.push('+OK\r\n', `$${`v${i}`.length}\r\nv${i}\r\n`, `:${i + 1}\r\n`, ':1\r\n');
      }
      // A write spanning lanes sees the writes before it; a keyless one removes every one of them.
      const spanning = keysOnLane('m:', 1, lanes, 1).concat(keysOnLane('m:', 2, lanes, 1));
      commands.push(['MSET', spanning[0], 'a', spanning[1], 'b'], ['DEL', 'k:0', 'k:199', spanning[0], spanning[1]], ['FLUSHDB'], ['EXISTS', 'k:5', 'k:77', 'counter', spanning[0]], ['SET', 'after', '1'], ['EXISTS', 'after']);
      expected.push('+OK\r\n', ':4\r\n', '+OK\r\n', ':0\r\n', '+OK\r\n', ':1\r\n');
      expect(await pipeline(c, commands)).to.deep.equal(expected);
      await Promise.all(loading);
    });

    it(`${kind}: FLUSHALL among writers on every lane is answered, and so is everything after it (Pika deadlocks when a FLUSHALL meets a write in progress on another connection)`, async () => {
      const { proxy } = await setUp(kind, flags);
      const writers = await Promise.all(Array.from({ length: 8 }, () => connect(proxy.port)));
      const flusher = await connect(proxy.port);
      const value = 'x'.repeat(512);
      const writing = writers.map((c, w) => pipeline(c, Array.from({ length: 5000 }, (_, j) => ['SET', `w${w}:${j % 97}`, value])));
      const flushes: string[] = [];
      for (let i = 0; i < 40; i++) flushes.push(await flusher.text('FLUSHALL'));
      const written = await Promise.all(writing);
      expect(flushes).to.deep.equal(Array(40).fill('+OK\r\n'));
      for (const replies of written) expect(new Set(replies)).to.deep.equal(new Set(['+OK\r\n']));
      expect(await flusher.text('PING')).to.equal('+PONG\r\n');
    });

    it(`${kind}: WATCH of a key on one lane, a transaction writing on others: another client's write to the watched key aborts it`, async () => {
      const { proxy } = await setUp(kind, flags);
      const [watched] = keysOnLane('watched:', 0, lanes, 1);
      const written = keysOnLane('tx:', 1, lanes, 1).concat(keysOnLane('tx:', 2, lanes, 1));
      const a = await connect(proxy.port);
      const b = await connect(proxy.port);
      expect(await a.text('WATCH', watched)).to.equal('+OK\r\n');
      expect(await b.text('SET', watched, 'changed')).to.equal('+OK\r\n');
      expect(await pipeline(a, [['MULTI'], ['SET', written[0], '1'], ['SET', written[1], '2'], ['EXEC']])).to.deep.equal(['+OK\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '*-1\r\n']);
      expect(await a.text('EXISTS', ...written)).to.equal(':0\r\n');
      // Not dirty: the transaction across lanes runs as one.
      expect(await a.text('WATCH', watched)).to.equal('+OK\r\n');
      expect(await pipeline(a, [['MULTI'], ['SET', written[0], '1'], ['SET', written[1], '2'], ['GET', watched], ['EXEC']])).to.deep.equal([
        '+OK\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '*3\r\n+OK\r\n+OK\r\n$7\r\nchanged\r\n',
      ]);
    });
  }
});

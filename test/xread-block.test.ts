/**
 * XREAD BLOCK through the proxy (blocking-read.ts): it runs on the client's own connection to the
 * node, so it blocks that client only — other clients' commands on the shared lanes go on — it
 * wakes on another client's XADD, times out as the node does, reads the client's selected db, and
 * its connection is closed with the client. On Pika (whose XREAD BLOCK does not block) the client
 * gets what the node answers directly.
 */
import { expect } from 'chai';
import type Redis from 'ioredis';
import { RedisServer } from './helpers/redis-server';
import { PikaServer } from './helpers/pika-server';
import { nodeBehindProxy } from './helpers/proxy-fixture';
import { proxyClient, waitFor } from './replica-e2e-fixture';


/** The node's connections other than the asking one (CLIENT LIST straight to the node). */
async function nodeConnections(node: Redis): Promise<number> {
  return String(await node.call('CLIENT', 'LIST')).trim().split('\n').length - 1;
}

/** The node's connections blocked in a command (CLIENT LIST flags=b). */
async function blockedOnNode(node: Redis): Promise<number> {
  return String(await node.call('CLIENT', 'LIST')).split('\n').filter((line) => / flags=b /.test(line)).length;
}

describe('XREAD BLOCK through the proxy (redis-server)', function () {
  this.timeout(30_000);
  const fixture = nodeBehindProxy(() => RedisServer.start());
  const opened: Redis[] = [];
  let direct: Redis;
  beforeEach(() => {
    direct = fixture.node.client();
    opened.push(direct);
  });
  const open = (db = 0): Redis => {
    const c = proxyClient(fixture.proxy);
    if (db !== 0) void c.select(db);
    opened.push(c);
    return c;
  };
  afterEach(() => opened.splice(0).forEach((c) => c.disconnect()));

  it("blocks only its client: others are served meanwhile, and another client's XADD wakes it with the entry", async () => {
    const reader = open();
    const other = open();
    await reader.ping();
    const read = reader.call('XREAD', 'BLOCK', '0', 'STREAMS', 'events', '$');
    let answered = false;
    void read.then(() => (answered = true));
    // The reader is parked on the node: the shared lane still serves every other command.
    await waitFor('the reader blocked on the node', async () => (await blockedOnNode(direct)) === 1);
    expect(await other.set('k', 'v')).to.equal('OK');
    expect(await other.get('k')).to.equal('v');
    expect(answered, 'nothing was added yet').to.equal(false);
    const id = String(await other.call('XADD', 'events', '*', 'f', 'v'));
    expect(await read).to.deep.equal([['events', [[id, ['f', 'v']]]]]);
  });

  it('times out with a nil reply, as the node does, and the client goes on in order', async () => {
    const reader = open();
    const pipeline = reader.pipeline().set('before', '1').xread('BLOCK', 150, 'STREAMS', 'nothing-here', '$').get('before');
    const results = (await pipeline.exec())!.map(([err, value]) => (err ? err.message : value));
    expect(results).to.deep.equal(['OK', null, '1']);
    expect(await direct.xread('BLOCK', 150, 'STREAMS', 'nothing-here', '$')).to.equal(null);
  });

  it("reads the client's selected db", async () => {
    const reader = open(5);
    const writer = open(5);
    await reader.ping();
    const read = reader.call('XREAD', 'BLOCK', '0', 'STREAMS', 'db5stream', '$');
    await waitFor('the reader blocked on the node', async () => (await blockedOnNode(direct)) === 1);
    const id = String(await writer.call('XADD', 'db5stream', '*', 'in', 'five'));
    expect(await read).to.deep.equal([['db5stream', [[id, ['in', 'five']]]]]);
    expect(await direct.exists('db5stream'), 'the entry is in db 5, not db 0').to.equal(0);
  });

  it("the client's own node connection is closed when the client goes", async () => {
    await waitFor('no reader left blocked by the tests before', async () => (await blockedOnNode(direct)) === 0);
    const before = await nodeConnections(direct);
    const reader = proxyClient(fixture.proxy);
    const read = reader.call('XREAD', 'BLOCK', '0', 'STREAMS', 'never', '$').catch((e: Error) => e.message);
    await waitFor('a connection of its own, blocked', async () => (await blockedOnNode(direct)) === 1);
    expect(await nodeConnections(direct)).to.equal(before + 1);
    reader.disconnect();
    await read;
    await waitFor('that connection closed', async () => (await nodeConnections(direct)) === before);
    expect(await blockedOnNode(direct)).to.equal(0);
  });
});

describe('XREAD BLOCK through the proxy (real Pika)', function () {
  this.timeout(60_000);
  const fixture = nodeBehindProxy(() => PikaServer.start());

  it('answers what Pika answers directly, and other clients go on', async () => {
    const viaProxy = proxyClient(fixture.proxy);
    const direct = fixture.node.client();
    try {
      await viaProxy.call('XADD', 'ps', '*', 'f', 'v');
      for (const args of [['BLOCK', '100', 'STREAMS', 'ps', '0'], ['BLOCK', '100', 'STREAMS', 'ps', '$'], ['BLOCK', '100', 'STREAMS', 'ps-empty', '$']]) {
        const through = await viaProxy.call('XREAD', ...args).catch((e: Error) => `error ${e.message}`);
        const straight = await direct.call('XREAD', ...args).catch((e: Error) => `error ${e.message}`);
        expect(through, args.join(' ')).to.deep.equal(straight);
      }
      expect(await viaProxy.set('after', 'x')).to.equal('OK');
      expect(await direct.get('after')).to.equal('x');
    } finally {
      viaProxy.disconnect();
      direct.disconnect();
    }
  });
});

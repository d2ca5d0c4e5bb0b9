/**
 * SYNC through the proxy (issue 12): a client attaching as a replica gets the node's own RDB and
 * replication stream, as directly (Redis's test suite reads propagated writes this way). Only
 * REPLCONF reaches the node on that link afterwards, so nothing can write behind the write log.
 * Pika has no SYNC: the client gets Pika's error as the reply and goes on as a normal client.
 */
import { expect } from 'chai';
import net from 'node:net';
import { PikaServer } from './helpers/pika-server';
import { nodeBehindProxy } from './helpers/proxy-fixture';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';

/** A raw connection collecting everything it receives. */
async function rawConnection(port: number): Promise<{ socket: net.Socket; received: () => string; until: (re: RegExp) => Promise<string> }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const chunks: Buffer[] = [];
  socket.on('data', (d) => chunks.push(d));
  const received = (): string => Buffer.concat(chunks).toString('latin1');
  const until = async (re: RegExp): Promise<string> => {
    const deadline = Date.now() + 10_000;
    while (!re.test(received())) {
      if (Date.now() > deadline) throw new Error(`never received ${re}: ${JSON.stringify(received().slice(-200))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return received();
  };
  return { socket, received, until };
}

describe('SYNC through the proxy (redis-server with a password behind it)', function () {
  this.timeout(60_000);
  const f = nodeBehindProxy(() => RedisServer.start({ password: 'node-secret' }), ['--backend-password', 'node-secret']);

  it("streams the node's RDB and then the writes it propagates; the link writes nothing itself", async () => {
    const writer = await RespClient.connect(f.proxy.port);
    try {
      await writer.call('SET', 'before-sync', '1');
      const replica = await rawConnection(f.proxy.port);
      replica.socket.write('SYNC\r\n');
      // `$<rdb length>\r\n`, then the RDB (it starts with "REDIS").
      await replica.until(/^\n*\$\d+\r\nREDIS/);
      await writer.call('SET', 'sync-pipe:key', 'value');
      await replica.until(/\*3\r\n\$3\r\nset\r\n\$13\r\nsync-pipe:key\r\n\$5\r\nvalue\r\n/i);
      // A write sent on the replica link changes nothing (the proxy passes on only REPLCONF; Redis
      // itself also ignores a replica link's writes, so this pins the outcome, not the filter).
      replica.socket.write('*3\r\n$3\r\nSET\r\n$14\r\nsync-pipe:sneak\r\n$1\r\nx\r\n*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$1\r\n0\r\n');
      await writer.call('PING');
      await new Promise((r) => setTimeout(r, 200));
      expect(await writer.text('EXISTS', 'sync-pipe:sneak')).to.equal(':0\r\n');
      replica.socket.destroy();
      expect(await writer.text('GET', 'sync-pipe:key')).to.equal('$5\r\nvalue\r\n');
    } finally {
      writer.close();
    }
  });
});

describe('SYNC through the proxy (real Pika: no SYNC)', function () {
  this.timeout(60_000);
  const f = nodeBehindProxy(() => PikaServer.start());

  it("answers Pika's own error and the client goes on as a normal client", async () => {
    const direct = await RespClient.connect(f.node.port);
    const expected = await direct.text('SYNC');
    direct.close();
    expect(expected).to.match(/^-ERR/);
    const c = await RespClient.connect(f.proxy.port);
    try {
      expect(await c.text('SYNC')).to.equal(expected);
      expect(await c.text('SET', 'sync-pipe:after', 'v')).to.equal('+OK\r\n');
      expect(await c.text('GET', 'sync-pipe:after')).to.equal('$1\r\nv\r\n');
    } finally {
      c.close();
    }
  });
});

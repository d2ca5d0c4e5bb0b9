/**
 * A lost link starts a new write-log generation only when a write's reply was lost with it
 * (src/server/ordered-path.ts): a read or a keep-alive PING lost with the link keeps the log id,
 * so replicas continue without a full sync. The node here is a socket that reads and never
 * answers; the test drops the link while the request is in flight.
 */
import { expect } from 'chai';
import net from 'node:net';
import { NodeConnection } from '../src/backend/node-connection';
import { silentLogger } from '../src/logger';
import { encodeArgs, requestOf } from '../src/resp/request-parser';
import { LogSink, OrderedPath } from '../src/server/ordered-path';

class ResetCounter implements LogSink {
  resets: string[] = [];
  lastOffset = 0;
  append(): number {
    return ++this.lastOffset;
  }
  appendRequest(): number {
    return ++this.lastOffset;
  }
  reset(reason: string): void {
    this.resets.push(reason);
  }
}

describe('ordered path: link loss and the write-log generation', () => {
  let server: net.Server;
  const sockets = new Set<net.Socket>();
  let received = 0;
  let connection: NodeConnection;

  beforeEach(async () => {
    server = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('data', () => received++);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    connection = new NodeConnection({ host: '127.0.0.1', port, reconnect: true, logger: silentLogger(), keepAliveMs: 3_600_000 });
    await connection.connect();
  });

  afterEach(async () => {
    connection.destroy();
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  /** Sends with `send`, waits until the node has the bytes, drops the link; resolves with the error. */
  async function loseLinkDuring(send: (done: (err?: Error) => void) => void): Promise<Error | undefined> {
    const before = received;
    const failed = new Promise<Error | undefined>((resolve) => send(resolve));
    while (received === before) await new Promise((r) => setTimeout(r, 5));
    for (const s of sockets) s.destroy();
    return failed;
  }

  it('keeps the log id when only reads or pings were in flight', async () => {
    const log = new ResetCounter();
    const path = new OrderedPath(connection, log, silentLogger());
    const err = await loseLinkDuring((done) => path.send(0, encodeArgs(['GET', 'k']), (_r, e) => done(e)));
    expect(err?.message).to.match(/connection lost/);
    expect(log.resets).to.deep.equal([]);
  });

  it('starts a new log generation when a write was unanswered', async () => {
    const log = new ResetCounter();
    const path = new OrderedPath(connection, log, silentLogger());
    const scope = { kind: 'keys' as const, db: 0, keys: [Buffer.from('k')] };
    const err = await loseLinkDuring((done) => path.sendWrite(0, requestOf([Buffer.from('SET'), Buffer.from('k'), Buffer.from('v')]), scope, (_r, e) => done(e), 0));
    expect(err?.message).to.match(/connection lost/);
    expect(log.resets).to.deep.equal(['backend link lost with a write unanswered']);
  });

  it('starts a new log generation when a transaction with a write was unanswered', async () => {
    const log = new ResetCounter();
    const path = new OrderedPath(connection, log, silentLogger());
    const set = [Buffer.from('SET'), Buffer.from('k'), Buffer.from('v')];
    const err = await loseLinkDuring((done) => path.sendTransaction(0, [{ args: set, raw: encodeArgs(set), write: true }], [{ kind: 'keys', db: 0, keys: [set[1]] }], (_r, e) => done(e)));
    expect(err?.message).to.match(/connection lost/);
    expect(log.resets).to.have.length(1);
  });
});

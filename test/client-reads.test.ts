/**
 * Client sockets read through one shared buffer (src/server/client-reads.ts): on real sockets,
 * every byte arrives once, in order, in chunks the session owns, for tiny and for large writes,
 * from several clients at once, and pause()/resume() still hold the reads back.
 */
import { expect } from 'chai';
import net from 'node:net';
import { readClientChunks, sharedReadsAvailable } from '../src/server/client-reads';

interface Received {
  chunks: Buffer[];
  socket: net.Socket;
}

async function withServer(run: (port: number, accepted: Promise<Received>[]) => Promise<void>): Promise<void> {
  const accepted: Promise<Received>[] = [];
  const waiting: ((r: Received) => void)[] = [];
  for (let i = 0; i < 8; i++) accepted.push(new Promise((resolve) => waiting.push(resolve)));
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    const received: Received = { chunks: [], socket };
    readClientChunks(socket, (chunk) => received.chunks.push(chunk));
    waiting.shift()!(received);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  try {
    await run((server.address() as net.AddressInfo).port, accepted);
  } finally {
    server.close();
  }
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
  });
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((r) => setTimeout(r, 5));
}

const total = (r: Received): number => r.chunks.reduce((n, c) => n + c.length, 0);

describe('client socket reads through the shared buffer', () => {
  it('is the path taken on this Node version (not the data-event fallback)', () => {
    expect(sharedReadsAvailable).to.equal(true);
  });

  it('delivers every byte once and in order, from two clients interleaved, tiny writes and ones larger than the buffer', async () => {
    await withServer(async (port, accepted) => {
      const a = await connect(port);
      const b = await connect(port);
      const [ra, rb] = await Promise.all([accepted[0], accepted[1]]);
      const big = Buffer.alloc(300 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
      const small = Buffer.from('*1\r\n$4\r\nPING\r\n');
      for (const byte of small) {
        a.write(Buffer.from([byte]));
        await new Promise((r) => setImmediate(r));
      }
      b.write(big);
      a.write(big);
      await until(() => total(ra) === small.length + big.length && total(rb) === big.length);
      // Compared only now, after every later read: a chunk that were a view of the reused read
      // buffer would have been overwritten by then.
      expect(Buffer.concat(ra.chunks).equals(Buffer.concat([small, big]))).to.equal(true);
      expect(Buffer.concat(rb.chunks).equals(big)).to.equal(true);
      a.destroy();
      b.destroy();
    });
  });

  it('pause() holds reads back until resume()', async () => {
    await withServer(async (port, accepted) => {
      const client = await connect(port);
      const received = await accepted[0];
      client.write('first');
      await until(() => total(received) === 5);
      received.socket.pause();
      client.write('second');
      await new Promise((r) => setTimeout(r, 100));
      expect(total(received)).to.equal(5);
      received.socket.resume();
      await until(() => total(received) === 11);
      expect(Buffer.concat(received.chunks).toString()).to.equal('firstsecond');
      client.destroy();
    });
  });
});

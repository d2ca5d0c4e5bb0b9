/**
 * Two ways a client used to wait forever, found by running Redis 7.0.15's own test suite through
 * the proxy. Every case sends the same bytes straight to the node and through the proxy and
 * expects the same bytes back:
 *
 * - (P|S)UNSUBSCRIBE answer one frame per channel (one with a nil channel when called without
 *   channels and nothing subscribed), SUBSCRIBE one per channel: the proxy passed on one frame
 *   per request. Checked on redis-server and on a real Pika node (which has no SSUBSCRIBE, and
 *   answers what it answers: the proxy passes that on).
 * - Protocol errors: Redis's text, after the replies to the commands before the bad bytes, then
 *   the connection closed; a client still writing its bad bytes is not left blocked.
 *
 * Each script ends with a PING and is read up to its PONG, so a missing frame fails (a hang ends at
 * the read's limit) and an extra one fails the comparison.
 */
import { expect } from 'chai';
import net from 'node:net';
import { RespClient } from './helpers/resp-client';
import { NODE_KINDS, TestNode, startNode } from './helpers/nodes';
import { TestProxy, startTestProxy } from './helpers/proxy-fixture';

const PONGS = new Set(['+PONG\r\n', '*2\r\n$4\r\npong\r\n$0\r\n\r\n']);

/** Sends `bytes` in one write and returns every frame up to and including the first PONG. */
async function framesUntilPong(port: number, bytes: string): Promise<string[]> {
  const c = await RespClient.connect(port);
  try {
    c.send(bytes);
    const frames: string[] = [];
    for (;;) {
      const frame = (await c.read()).toString('latin1');
      frames.push(frame);
      if (PONGS.has(frame)) return frames;
    }
  } finally {
    c.close();
  }
}

/** Sends `bytes` in one write and returns everything received until the server closes the connection. */
function untilClosed(port: number, bytes: Buffer | string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

const cmd = (...lines: string[]): string => lines.map((l) => `${l}\r\n`).join('');

/** Pipelined pub/sub scripts; each ends with PING (answered after every frame owed before it). */
const PUBSUB_SCRIPTS: Record<string, string> = {
  'UNSUBSCRIBE of three channels with no subscription': cmd('UNSUBSCRIBE foo bar quux', 'PING'),
  'UNSUBSCRIBE without arguments and no subscription (one nil-channel reply)': cmd('UNSUBSCRIBE', 'PING'),
  'PUNSUBSCRIBE with and without arguments, no subscription': cmd('PUNSUBSCRIBE a* b', 'PUNSUBSCRIBE', 'PING'),
  'SUNSUBSCRIBE with and without arguments, no subscription': cmd('SUNSUBSCRIBE a b', 'SUNSUBSCRIBE', 'PING'),
  'SUBSCRIBE of three channels, UNSUBSCRIBE of another, then of all, then again': cmd('SUBSCRIBE a b c', 'UNSUBSCRIBE x', 'UNSUBSCRIBE', 'UNSUBSCRIBE', 'PING'),
  'PSUBSCRIBE of two patterns, PUNSUBSCRIBE of all': cmd('PSUBSCRIBE a* b*', 'PUNSUBSCRIBE', 'PING'),
  'SSUBSCRIBE of two shard channels, SUNSUBSCRIBE of one, then of all': cmd('SSUBSCRIBE s1 s2', 'SUNSUBSCRIBE s1', 'SUNSUBSCRIBE', 'PING'),
  'channels and patterns, UNSUBSCRIBE then PUNSUBSCRIBE of all': cmd('SUBSCRIBE a', 'PSUBSCRIBE b*', 'UNSUBSCRIBE', 'PUNSUBSCRIBE', 'PING'),
  'ordinary commands again once every subscription is gone': cmd('SUBSCRIBE a', 'UNSUBSCRIBE a', 'ECHO back', 'UNSUBSCRIBE z', 'ECHO again', 'PING'),
};

for (const kind of NODE_KINDS) {
  describe(`client hangs: pub/sub reply framing (${kind})`, function () {
    this.timeout(120_000);
    let node: TestNode;
    let proxy: TestProxy;

    before(async () => {
      node = await startNode(kind);
      proxy = await startTestProxy(node);
    });
    after(async () => {
      await proxy?.stop();
      await node?.stop();
    });

    for (const [name, bytes] of Object.entries(PUBSUB_SCRIPTS)) {
      it(`${name}: the proxy passes on exactly the node's frames`, async () => {
        const direct = await framesUntilPong(node.port, bytes);
        const proxied = await framesUntilPong(proxy.port, bytes);
        expect(proxied).to.deep.equal(direct);
      });
    }

    it('UNSUBSCRIBE foo bar quux with no subscription: three replies with count 0, then the next command', async () => {
      const frames = await framesUntilPong(proxy.port, cmd('UNSUBSCRIBE foo bar quux', 'PING'));
      expect(frames).to.deep.equal([
        '*3\r\n$11\r\nunsubscribe\r\n$3\r\nfoo\r\n:0\r\n',
        '*3\r\n$11\r\nunsubscribe\r\n$3\r\nbar\r\n:0\r\n',
        '*3\r\n$11\r\nunsubscribe\r\n$4\r\nquux\r\n:0\r\n',
        '+PONG\r\n',
      ]);
    });
  });
}

/** Bad bytes (sent in one write) whose answer, and close, must equal redis-server's. */
const PROTOCOL_ERRORS: Record<string, Buffer | string> = {
  'a NUL byte and 64 KB without a newline (too big inline request)': Buffer.concat([Buffer.from([0]), Buffer.alloc(64 * 1024, 'A')]),
  "'*' and 64 KB without a CR (too big mbulk count string)": Buffer.concat([Buffer.from('*\x00'), Buffer.alloc(64 * 1024, 'A')]),
  "'$' and 64 KB without a newline (too big inline request)": Buffer.concat([Buffer.from('$\x00'), Buffer.alloc(64 * 1024, 'A')]),
  'a bulk header of 64 KB without a CR (too big bulk count string)': Buffer.concat([Buffer.from('*1\r\n$'), Buffer.alloc(64 * 1024, '1')]),
  'a multibulk count above INT_MAX': '*2147483648\r\n',
  'a multibulk count with a leading zero': '*01\r\n$4\r\nPING\r\n',
  'a multibulk count of -0': '*-0\r\n',
  'a multibulk count with a plus sign': '*+1\r\n',
  'a multibulk count that is not a number': '*abc\r\n',
  'a bulk length above proto-max-bulk-len (512 MB)': '*1\r\n$536870913\r\n',
  'a negative bulk length': '*1\r\n$-1\r\n',
  'a bulk length with a leading zero': '*1\r\n$04\r\nPING\r\n',
  "an argument without '$'": '*1\r\nPING\r\n',
  'unbalanced quotes in an inline command, after a valid one': 'PING\r\n"unbalanced\r\nPING\r\n',
  'a quote not followed by a space in an inline command': 'ECHO "a"b\r\n',
  'valid pipelined commands before a bad bulk length are answered first': 'SET hangs:k v\r\n*2\r\n$3\r\nGET\r\n$7\r\nhangs:k\r\n*1\r\n$-5\r\n',
};

describe('client hangs: protocol errors as Redis 7 (redis-server)', function () {
  this.timeout(120_000);
  let node: TestNode;
  let proxy: TestProxy;

  before(async () => {
    node = await startNode('redis');
    proxy = await startTestProxy(node);
  });
  after(async () => {
    await proxy?.stop();
    await node?.stop();
  });

  for (const [name, bytes] of Object.entries(PROTOCOL_ERRORS)) {
    it(`${name}: the same replies, then the connection closed`, async () => {
      const direct = await untilClosed(node.port, bytes);
      const proxied = await untilClosed(proxy.port, bytes);
      expect(direct, 'redis-server answers a protocol error').to.match(/-ERR Protocol error: [^\r]+\r\n$/);
      expect(proxied).to.equal(direct);
    });
  }

  it('a multibulk count above 1024*1024 is refused (the proxy bounds it; Redis 7.0.15 waits for the arguments)', async () => {
    expect(await untilClosed(proxy.port, '*1048577\r\n')).to.equal('-ERR Protocol error: invalid multibulk length\r\n');
  });

  it('bulks and lines not ended by CRLF are read as Redis reads them (the bytes after CR and after a bulk are skipped)', async () => {
    const bytes = '*1\r\n$4\rxPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhixx*1\r\n$4\r\nPING\r\n';
    expect(await framesUntilPong(proxy.port, bytes)).to.deep.equal(await framesUntilPong(node.port, bytes));
  });

  it('a client that keeps writing after a NUL byte gets the error and a closed connection, not a blocked write', async () => {
    for (const port of [node.port, proxy.port]) {
      const received = await new Promise<string>((resolve) => {
        const chunks: Buffer[] = [];
        const s = net.connect(port, '127.0.0.1');
        const chunk = Buffer.alloc(64 * 1024, 'A');
        let open = true;
        const writeMore = (): void => {
          while (open && s.write(chunk));
        };
        s.on('connect', () => {
          s.write(Buffer.from([0]));
          writeMore();
        });
        s.on('drain', writeMore);
        s.on('data', (d) => chunks.push(d));
        s.on('error', () => undefined); // a reset while writing, as from Redis
        s.on('close', () => {
          open = false;
          resolve(Buffer.concat(chunks).toString('latin1'));
        });
      });
      // Closed (else this never resolves); a reset may drop the reply, as it may from Redis.
      expect('-ERR Protocol error: too big inline request\r\n'.startsWith(received), `port ${port}: ${JSON.stringify(received.slice(0, 80))}`).to.equal(true);
    }
  });
});

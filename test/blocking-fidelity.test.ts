/**
 * Blocking pops whose wake-up finds the key missing or of the wrong type, as Redis 7.0 does them
 * (blocked.c: blocked clients are served after the whole command or transaction, and only from a
 * key of the right type; a key already of the wrong type when the command runs answers -WRONGTYPE
 * at once). Each scenario runs the same commands on a redis-server directly (the reference), on
 * the proxy in front of a redis-server and on the proxy in front of a real Pika, and the replies
 * must be the same.
 *
 * "Blocked" is checked, never guessed from a delay: INFO clients `blocked_clients`, on the node
 * and on a proxy in front of redis-server (whose Clients section adds the pops waiting in the
 * proxy, as Redis's test suite reads them); INFO proxy `blocked_clients` in front of Pika (whose
 * INFO has no such field). A blocked client's first reply must be the one that
 * serves it (a wrong -WRONGTYPE would arrive before it); the short read with nothing expected
 * only makes a failure show where it happened.
 */
import { expect } from 'chai';
import { encodeArgs } from '../src/resp/request-parser';
import { startNode, TestNode } from './helpers/nodes';
import { startTestProxy, TestProxy } from './helpers/proxy-fixture';
import { RespClient } from './helpers/resp-client';

interface Target {
  name: string;
  port: number;
  /** Pika 4.0 has no LMOVE/LMPOP. */
  hasListMoves: boolean;
  /** The proxy's node (its LPOP calls counted), absent for the redis-server reference. */
  node?: TestNode;
  blockedClients(c: RespClient): Promise<number>;
}

const WRONGTYPE = '-WRONGTYPE Operation against a key holding the wrong kind of value\r\n';

/** Pika's ZPOPMIN says `-ERR Invalid argument: WRONGTYPE, key: …, expected type: zset, got type: string`; the proxy passes it on. */
const normalize = (reply: string): string => (/^-ERR Invalid argument: WRONGTYPE,/.test(reply) ? WRONGTYPE : reply);

async function blockedField(c: RespClient, section: string): Promise<number> {
  const info = await c.text('INFO', section);
  const m = /blocked_clients:(\d+)/.exec(info);
  if (!m) throw new Error(`no blocked_clients in INFO ${section}`);
  return Number(m[1]);
}

/** Polls until `n` clients are blocked (a condition, not a delay; fails only if it never holds). */
async function untilBlocked(t: Target, c: RespClient, n: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const now = await t.blockedClients(c);
    if (now === n) return;
    if (Date.now() > deadline) throw new Error(`${t.name}: ${now} blocked clients, waiting for ${n}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Nothing has arrived for `c` (yet): the positive check that follows decides. */
async function nothingYet(c: RespClient): Promise<void> {
  const early = await c.read(150).then((r) => r.toString(), () => null);
  expect(early, 'a blocked client got a reply').to.equal(null);
}

const block = (c: RespClient, ...args: string[]): void => c.send(encodeArgs(args));

describe('blocking pops: a wake-up finding the key missing or of the wrong type keeps the client blocked (redis-server, proxy → redis-server, proxy → Pika)', function () {
  this.timeout(120_000);
  const nodes: TestNode[] = [];
  const proxies: TestProxy[] = [];
  const targets: Target[] = [];
  const clients: RespClient[] = [];

  before(async () => {
    const [direct, behindProxy, pika] = await Promise.all([startNode('redis'), startNode('redis'), startNode('pika')]);
    nodes.push(direct, behindProxy, pika);
    const [redisProxy, pikaProxy] = await Promise.all([startTestProxy(behindProxy), startTestProxy(pika)]);
    proxies.push(redisProxy, pikaProxy);
    targets.push(
      { name: 'redis-server', port: direct.port, hasListMoves: true, blockedClients: (c) => blockedField(c, 'clients') },
      { name: 'proxy → redis-server', port: redisProxy.port, hasListMoves: true, blockedClients: (c) => blockedField(c, 'clients'), node: behindProxy },
      { name: 'proxy → Pika', port: pikaProxy.port, hasListMoves: false, blockedClients: (c) => blockedField(c, 'proxy'), node: pika },
    );
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(proxies.map((p) => p.stop()));
    await Promise.all(nodes.map((n) => n.stop()));
  });

  async function connect(t: Target): Promise<RespClient> {
    const c = await RespClient.connect(t.port);
    clients.push(c);
    return c;
  }

  /** Runs `scenario` on every target; each transcript must equal the expected one (the reference's). */
  async function onEveryTarget(expected: string[], scenario: (t: Target, log: (reply: string | Buffer) => void) => Promise<void>, only?: (t: Target) => boolean): Promise<void> {
    for (const t of targets.filter(only ?? (() => true))) {
      const transcript: string[] = [];
      await scenario(t, (r) => transcript.push(normalize(r.toString())));
      expect(transcript, t.name).to.deep.equal(expected);
    }
  }

  it('BLPOP stays blocked through MULTI; LPUSH; DEL; SET; EXEC, then LPUSH serves the clients in the order they blocked', async () => {
    await onEveryTarget(
      ['*3\r\n:1\r\n:1\r\n+OK\r\n', '+PONG\r\n', ':1\r\n', ':1\r\n', '*2\r\n$4\r\nlist\r\n$1\r\nb\r\n', ':1\r\n', '*2\r\n$4\r\nlist\r\n$1\r\nc\r\n'],
      async (t, log) => {
        const [first, second, other] = [await connect(t), await connect(t), await connect(t)];
        await other.call('DEL', 'list');
        block(first, 'BLPOP', 'list', '0');
        await untilBlocked(t, other, 1);
        block(second, 'BLPOP', 'list', '0');
        await untilBlocked(t, other, 2);
        for (const cmd of [['MULTI'], ['LPUSH', 'list', 'a'], ['DEL', 'list'], ['SET', 'list', 'foo']]) expect(await other.text(...cmd)).to.match(/^\+(OK|QUEUED)/);
        log(await other.call('EXEC'));
        log(await other.call('PING'));
        await nothingYet(first);
        await nothingYet(second);
        expect(await t.blockedClients(other), `${t.name}: still blocked`).to.equal(2);
        log(await other.call('DEL', 'list'));
        log(await other.call('LPUSH', 'list', 'b'));
        log(await first.read());
        log(await other.call('LPUSH', 'list', 'c'));
        log(await second.read());
      },
    );
  });

  it('BLPOP woken by a SET that makes its key a string stays blocked until a list appears', async () => {
    await onEveryTarget(['+OK\r\n', '+PONG\r\n', ':1\r\n', ':1\r\n', '*2\r\n$2\r\nl2\r\n$1\r\nb\r\n'], async (t, log) => {
      const [waiter, other] = [await connect(t), await connect(t)];
      await other.call('DEL', 'l2');
      block(waiter, 'BLPOP', 'l2', '0');
      await untilBlocked(t, other, 1);
      log(await other.call('SET', 'l2', 'foo'));
      log(await other.call('PING'));
      await nothingYet(waiter);
      expect(await t.blockedClients(other)).to.equal(1);
      log(await other.call('DEL', 'l2'));
      log(await other.call('LPUSH', 'l2', 'b'));
      log(await waiter.read());
    });
  });

  it('BZPOPMIN stays blocked through MULTI; ZADD; DEL; SET; EXEC, then ZADD serves it', async () => {
    await onEveryTarget(['*3\r\n:1\r\n:1\r\n+OK\r\n', '+PONG\r\n', ':1\r\n', ':1\r\n', '*3\r\n$1\r\nz\r\n$1\r\nb\r\n$1\r\n2\r\n'], async (t, log) => {
      const [waiter, other] = [await connect(t), await connect(t)];
      await other.call('DEL', 'z');
      block(waiter, 'BZPOPMIN', 'z', '0');
      await untilBlocked(t, other, 1);
      for (const cmd of [['MULTI'], ['ZADD', 'z', '1', 'a'], ['DEL', 'z'], ['SET', 'z', 'foo']]) expect(await other.text(...cmd)).to.match(/^\+(OK|QUEUED)/);
      log(await other.call('EXEC'));
      log(await other.call('PING'));
      await nothingYet(waiter);
      expect(await t.blockedClients(other)).to.equal(1);
      log(await other.call('DEL', 'z'));
      log(await other.call('ZADD', 'z', '2', 'b'));
      log(await waiter.read());
    });
  });

  it('BRPOPLPUSH stays blocked when its source becomes a string, but answers WRONGTYPE when served into a destination of the wrong type', async () => {
    await onEveryTarget(
      ['*3\r\n:1\r\n:1\r\n+OK\r\n', '+PONG\r\n', ':1\r\n', ':1\r\n', '$1\r\nb\r\n', '*1\r\n$1\r\nb\r\n', '+OK\r\n', ':1\r\n', WRONGTYPE, '*1\r\n$1\r\nc\r\n'],
      async (t, log) => {
        const [waiter, other] = [await connect(t), await connect(t)];
        await other.call('DEL', 'src', 'dst');
        block(waiter, 'BRPOPLPUSH', 'src', 'dst', '0');
        await untilBlocked(t, other, 1);
        for (const cmd of [['MULTI'], ['RPUSH', 'src', 'a'], ['DEL', 'src'], ['SET', 'src', 'foo']]) expect(await other.text(...cmd)).to.match(/^\+(OK|QUEUED)/);
        log(await other.call('EXEC'));
        log(await other.call('PING'));
        await nothingYet(waiter);
        log(await other.call('DEL', 'src'));
        log(await other.call('RPUSH', 'src', 'b'));
        log(await waiter.read());
        log(await other.call('LRANGE', 'dst', '0', '-1'));
        // The destination of the wrong type (Redis's own "with wrong destination type" test).
        log(await other.call('SET', 'dst', 'nolist'));
        block(waiter, 'BRPOPLPUSH', 'src', 'dst', '0');
        await untilBlocked(t, other, 1);
        log(await other.call('RPUSH', 'src', 'c'));
        log(await waiter.read());
        log(await other.call('LRANGE', 'src', '0', '-1'));
      },
    );
  });

  it('BLMOVE and BLMPOP: a wake-up on a key of the wrong type keeps waiting, a list key serves (redis-server; Pika has no LMOVE/LMPOP)', async () => {
    await onEveryTarget(
      ['+OK\r\n', '+PONG\r\n', ':1\r\n', ':1\r\n', '$1\r\nb\r\n', '+OK\r\n', '+PONG\r\n', ':1\r\n', '*2\r\n$2\r\nk2\r\n*1\r\n$1\r\nv\r\n'],
      async (t, log) => {
        const [waiter, other] = [await connect(t), await connect(t)];
        await other.call('DEL', 'msrc', 'mdst', 'k1', 'k2');
        block(waiter, 'BLMOVE', 'msrc', 'mdst', 'LEFT', 'RIGHT', '0');
        await untilBlocked(t, other, 1);
        log(await other.call('SET', 'msrc', 'foo'));
        log(await other.call('PING'));
        await nothingYet(waiter);
        log(await other.call('DEL', 'msrc'));
        log(await other.call('RPUSH', 'msrc', 'b'));
        log(await waiter.read());
        // BLMPOP on two keys: the first becomes a string, the second then gets a list.
        block(waiter, 'BLMPOP', '0', '2', 'k1', 'k2', 'LEFT');
        await untilBlocked(t, other, 1);
        log(await other.call('SET', 'k1', 'foo'));
        log(await other.call('PING'));
        await nothingYet(waiter);
        log(await other.call('RPUSH', 'k2', 'v'));
        log(await waiter.read());
      },
      (t) => t.hasListMoves,
    );
  });

  it('two clients blocked on one empty key do not wake each other (one LPOP each per wake-up on the node, no busy loop)', async () => {
    for (const t of targets.filter((x) => x.node)) {
      const [first, second, other] = [await connect(t), await connect(t), await connect(t)];
      const node = await RespClient.connect(t.node!.port);
      clients.push(node);
      // Redis: `cmdstat_lpop:calls=N,…`; Pika: `lpop:calls=N, …`.
      const lpops = async (): Promise<number> => Number(/(?:^|\n)(?:cmdstat_)?lpop:calls=(\d+)/.exec(await node.text('INFO', 'commandstats'))?.[1] ?? 0);
      await other.call('DEL', 'empty');
      const before = await lpops();
      block(first, 'BLPOP', 'empty', '0');
      await untilBlocked(t, other, 1);
      block(second, 'BLPOP', 'empty', '0');
      await untilBlocked(t, other, 2);
      // Both first tries are answered before GET's reply (one ordered connection): 2 LPOPs, and no more later.
      await other.call('GET', 'empty');
      expect(await lpops(), t.name).to.equal(before + 2);
      await nothingYet(first);
      expect(await lpops(), t.name).to.equal(before + 2);
      // A write to the key wakes each once: one more LPOP each (WRONGTYPE: both stay blocked).
      expect(await other.text('SET', 'empty', 'x')).to.equal('+OK\r\n');
      await other.call('GET', 'empty');
      await nothingYet(second);
      expect(await lpops(), t.name).to.equal(before + 4);
      await other.call('DEL', 'empty');
      expect(await other.text('RPUSH', 'empty', '1', '2')).to.equal(':2\r\n');
      expect((await first.read()).toString()).to.equal('*2\r\n$5\r\nempty\r\n$1\r\n1\r\n');
      expect((await second.read()).toString()).to.equal('*2\r\n$5\r\nempty\r\n$1\r\n2\r\n');
    }
  });

  it('a key already of the wrong type when the command runs answers WRONGTYPE at once', async () => {
    await onEveryTarget(['+OK\r\n', WRONGTYPE, WRONGTYPE, WRONGTYPE, WRONGTYPE, '*2\r\n$2\r\nok\r\n$1\r\nx\r\n', ':0\r\n'], async (t, log) => {
      const c = await connect(t);
      await c.call('DEL', 'str', 'missing', 'ok');
      log(await c.call('SET', 'str', 'x'));
      log(await c.call('BLPOP', 'str', '0'));
      log(await c.call('BLPOP', 'missing', 'str', '0'));
      log(await c.call('BZPOPMIN', 'str', '0'));
      log(await c.call('BRPOPLPUSH', 'str', 'dst2', '0'));
      // A list before the string is served first, as the node tries the keys in order.
      await c.call('RPUSH', 'ok', 'x');
      log(await c.call('BLPOP', 'ok', 'str', '0'));
      log(await t.blockedClients(c).then(String).then((n) => `:${n}\r\n`));
    });
  });

  it('CLIENT UNBLOCK ends a blocking pop with its timeout reply or -UNBLOCKED, and answers 0 for a client not blocked; CLIENT LIST shows flags=b', async () => {
    const expected = [':1\r\n', '*-1\r\n', ':1\r\n', '-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n', ':0\r\n', '-ERR value is not an integer or out of range\r\n', 'flags=b', ':1\r\n', '*2\r\n$2\r\nul\r\n$1\r\nv\r\n'];
    await onEveryTarget(expected, async (t, log) => {
      const [blocked, other] = [await connect(t), await connect(t)];
      await other.call('DEL', 'ul');
      const id = (await blocked.text('CLIENT', 'ID')).slice(1).trim();
      for (const how of [[], ['ERROR']]) {
        block(blocked, 'BLPOP', 'ul', '0');
        await untilBlocked(t, other, 1);
        log(await other.call('CLIENT', 'UNBLOCK', id, ...how));
        log(await blocked.read());
      }
      log(await other.call('CLIENT', 'UNBLOCK', id));
      log(await other.call('CLIENT', 'UNBLOCK', 'asd'));
      block(blocked, 'BLPOP', 'ul', '0');
      await untilBlocked(t, other, 1);
      log(/flags=\w*b/.exec(await other.text('CLIENT', 'LIST', 'ID', id))?.[0] ?? 'not flagged');
      log(await other.call('RPUSH', 'ul', 'v'));
      log(await blocked.read());
    });
  });

  it('Circular BRPOPLPUSH: the pusher reads after both blocked clients were served (Redis serves them before its next command)', async () => {
    await onEveryTarget([':1\r\n', '*1\r\n$3\r\nfoo\r\n', '*0\r\n', '$3\r\nfoo\r\n', '$3\r\nfoo\r\n'], async (t, log) => {
      const [first, second, other] = [await connect(t), await connect(t), await connect(t)];
      await other.call('DEL', 'c1', 'c2');
      block(first, 'BRPOPLPUSH', 'c1', 'c2', '0');
      await untilBlocked(t, other, 1);
      block(second, 'BRPOPLPUSH', 'c2', 'c1', '0');
      await untilBlocked(t, other, 2);
      log(await other.call('RPUSH', 'c1', 'foo'));
      log(await other.call('LRANGE', 'c1', '0', '-1'));
      log(await other.call('LRANGE', 'c2', '0', '-1'));
      log(await first.read());
      log(await second.read());
    });
  });
});

/**
 * Drop-in fidelity for what Redis's own test suite leans on: DEBUG (passed or refused per
 * subcommand, command-table.ts DEBUG_SUBCOMMANDS) and WATCH across FLUSHALL/FLUSHDB/SWAPDB
 * (Redis 7.0 touches only watched keys that exist). Each case runs through the proxy and straight
 * against a second redis-server, and the replies are compared; DEBUG also against a real Pika.
 */
import { expect } from 'chai';
import { RespClient } from './helpers/resp-client';
import { RedisServer } from './helpers/redis-server';
import { startNode, TestNode } from './helpers/nodes';
import { TestProxy, startTestProxy } from './helpers/proxy-fixture';

const DEBUG_ON = ['--enable-debug-command', 'yes'];
const NULL_ARRAY = '*-1\r\n';

async function dbsize(port: number): Promise<string> {
  const c = await RespClient.connect(port);
  try {
    return await c.text('DBSIZE');
  } finally {
    c.close();
  }
}

/** DEBUG OBJECT's address and LRU clock differ between two servers; the rest must not. */
function objectShape(reply: string): string {
  return reply.replace(/at:0x[0-9a-f]+/, 'at:ADDR').replace(/lru:\d+/, 'lru:N').replace(/lru_seconds_idle:\d+/, 'lru_seconds_idle:N');
}

describe('fidelity: DEBUG and WATCH across flushes', function () {
  this.timeout(60_000);
  let direct: RedisServer;
  let behind: RedisServer;
  let proxy: TestProxy;

  before(async () => {
    [direct, behind] = await Promise.all([RedisServer.start({ extraArgs: DEBUG_ON }), RedisServer.start({ extraArgs: DEBUG_ON })]);
    proxy = await startTestProxy(behind);
  });

  after(async () => {
    await proxy?.stop();
    await Promise.all([direct?.stop(), behind?.stop()]);
  });

  /** One client straight to the reference node, one through the proxy, both emptied first. */
  async function pair(): Promise<{ d: RespClient; p: RespClient; close(): void }> {
    const d = await RespClient.connect(direct.port);
    const p = await RespClient.connect(proxy.port);
    await d.call('FLUSHALL');
    await p.call('FLUSHALL');
    return { d, p, close: () => (d.close(), p.close()) };
  }

  describe('DEBUG', () => {
    it('passes OBJECT, DIGEST, DIGEST-VALUE, SLEEP 0, SET-ACTIVE-EXPIRE and HELP, answering as the node does', async () => {
      const { d, p, close } = await pair();
      try {
        for (const c of [d, p]) {
          await c.call('SET', 'k', 'v');
          await c.call('RPUSH', 'l', 'a', 'b');
        }
        expect(objectShape(await p.text('DEBUG', 'OBJECT', 'k'))).to.equal(objectShape(await d.text('DEBUG', 'OBJECT', 'k')));
        expect(await p.text('DEBUG', 'OBJECT', 'k')).to.match(/^\+Value at:0x[0-9a-f]+ refcount:\d+ encoding:embstr /);
        expect(await p.text('debug', 'object', 'missing')).to.equal(await d.text('debug', 'object', 'missing'));
        // Same data, same digest: the proxy's node holds exactly what was written through it.
        const digest = await p.text('DEBUG', 'DIGEST');
        expect(digest).to.equal(await d.text('DEBUG', 'DIGEST'));
        expect(digest).to.not.equal('+0000000000000000000000000000000000000000\r\n');
        expect(await p.text('DEBUG', 'DIGEST-VALUE', 'k', 'l')).to.equal(await d.text('DEBUG', 'DIGEST-VALUE', 'k', 'l'));
        expect(await p.text('DEBUG', 'SLEEP', '0')).to.equal(await d.text('DEBUG', 'SLEEP', '0'));
        expect(await p.text('DEBUG', 'SET-ACTIVE-EXPIRE', '0')).to.equal('+OK\r\n');
        expect(await p.text('DEBUG', 'SET-ACTIVE-EXPIRE', '1')).to.equal(await d.text('DEBUG', 'SET-ACTIVE-EXPIRE', '1'));
        expect(await p.text('DEBUG', 'HELP')).to.equal(await d.text('DEBUG', 'HELP'));
        // Inside MULTI too, as on Redis.
        for (const c of [d, p]) {
          expect(await c.text('MULTI')).to.equal('+OK\r\n');
          expect(await c.text('DEBUG', 'DIGEST-VALUE', 'k')).to.equal('+QUEUED\r\n');
        }
        expect(await p.text('EXEC')).to.equal(await d.text('EXEC'));
      } finally {
        close();
      }
    });

    it('refuses POPULATE, RELOAD NOSAVE inside MULTI, LOADAOF without an AOF, SEGFAULT and unknown subcommands with the reason, leaving the node as it was', async () => {
      const { p, close } = await pair();
      try {
        await p.call('SET', 'keep', '1');
        const before = await dbsize(behind.port);
        expect(before).to.equal(':1\r\n');
        const refused = (sub: string, reason: string): string => `-ERR DEBUG ${sub} is refused by pika-sync-proxy: ${reason}\r\n`;
        const data = 'it changes data outside the write log (replicas would diverge)';
        expect(await p.text('DEBUG', 'POPULATE', '100')).to.equal(refused('POPULATE', data));
        expect(await p.text('debug', 'populate', '100', 'pfx')).to.equal(refused('POPULATE', data));
        // appendonly is off: there is no AOF holding the data to load back.
        expect(await p.text('DEBUG', 'LOADAOF')).to.equal('-ERR DEBUG LOADAOF is refused by pika-sync-proxy: the node does not write an AOF (appendonly no), so loading one would change data outside the write log\r\n');
        expect(await p.text('DEBUG', 'SEGFAULT')).to.equal(refused('SEGFAULT', 'it stops the node'));
        expect(await p.text('DEBUG', 'RESTART')).to.equal(refused('RESTART', 'it stops the node'));
        expect(await p.text('DEBUG', 'NO-SUCH-THING')).to.equal(refused('NO-SUCH-THING', 'it is not a subcommand the proxy knows to leave the data unchanged'));
        expect(await p.text('DEBUG')).to.equal("-ERR wrong number of arguments for 'debug' command\r\n");
        // Refused at queue time inside MULTI: the transaction is discarded, as after any queue-time error.
        expect(await p.text('MULTI')).to.equal('+OK\r\n');
        expect(await p.text('DEBUG', 'POPULATE', '10')).to.equal(refused('POPULATE', data));
        expect(await p.text('EXEC')).to.match(/^-EXECABORT/);
        // RELOAD NOSAVE runs only outside MULTI, where the proxy restarts its write log after it
        // (debug-reload.test.ts).
        expect(await p.text('MULTI')).to.equal('+OK\r\n');
        expect(await p.text('DEBUG', 'RELOAD', 'NOSAVE', 'NOFLUSH', 'MERGE')).to.equal(`-ERR DEBUG RELOAD is refused by pika-sync-proxy inside a transaction: ${data}\r\n`);
        expect(await p.text('EXEC')).to.match(/^-EXECABORT/);
        // The node is up and unchanged.
        expect(await dbsize(behind.port)).to.equal(before);
        const node = await RespClient.connect(behind.port);
        expect(await node.text('PING')).to.equal('+PONG\r\n');
        node.close();
        expect(await p.text('GET', 'keep')).to.equal('$1\r\n1\r\n');
      } finally {
        close();
      }
    });
  });

  describe('DEBUG RELOAD and LOADAOF: the same data read back', () => {
    it('DEBUG RELOAD (also NOFLUSH MERGE) passes and leaves the data as it was (same digest as the reference); LOADAOF passes once the node writes an AOF', async () => {
      const { d, p, close } = await pair();
      try {
        for (const c of [d, p]) {
          await c.call('SET', 'k', 'v');
          await c.call('RPUSH', 'l', 'a', 'b');
          await c.call('SET', 'ttl', 'v', 'PX', '600000');
        }
        const digest = await d.text('DEBUG', 'DIGEST');
        expect(await p.text('DEBUG', 'RELOAD')).to.equal(await d.text('DEBUG', 'RELOAD'));
        expect(await p.text('DEBUG', 'DIGEST')).to.equal(digest);
        // It saves first, so merging that file back changes nothing either.
        expect(await p.text('DEBUG', 'RELOAD', 'NOFLUSH', 'MERGE')).to.equal(await d.text('DEBUG', 'RELOAD', 'NOFLUSH', 'MERGE'));
        expect(await p.text('DEBUG', 'DIGEST')).to.equal(digest);
        expect(await p.text('CONFIG', 'SET', 'appendonly', 'yes')).to.equal('+OK\r\n');
        // The AOF's first rewrite runs in the background; LOADAOF needs it done (as directly).
        for (let i = 0; i < 100 && /aof_rewrite_in_progress:1/.test(await p.text('INFO', 'persistence')); i++) await new Promise((r) => setTimeout(r, 50));
        await p.call('SET', 'after-aof', '1');
        await d.call('SET', 'after-aof', '1');
        expect(await p.text('DEBUG', 'LOADAOF')).to.equal('+OK\r\n');
        expect(await p.text('DEBUG', 'DIGEST')).to.equal(await d.text('DEBUG', 'DIGEST'));
        expect(await p.text('GET', 'after-aof')).to.equal('$1\r\n1\r\n');
        // Inside MULTI, where the AOF cannot be checked first, it is refused.
        await p.call('MULTI');
        expect(await p.text('DEBUG', 'LOADAOF')).to.match(/^-ERR DEBUG LOADAOF is refused/);
        await p.call('DISCARD');
        expect(await p.text('CONFIG', 'SET', 'appendonly', 'no')).to.equal('+OK\r\n');
      } finally {
        close();
      }
    });
  });

  describe('WATCH of a key that expires before EXEC (Redis 7.0 aborts: multi.c isWatchedKeyExpired)', () => {
    it('a watched key with a TTL that passes before EXEC aborts it; one already expired or without a TTL does not', async () => {
      const { d, p, close } = await pair();
      try {
        const run = async (c: RespClient, key: string): Promise<string> => {
          await c.call('WATCH', key);
          await new Promise((r) => setTimeout(r, 250));
          await c.call('MULTI');
          await c.call('PING');
          return c.text('EXEC');
        };
        const seeded = async (c: RespClient, key: string, ...set: string[]): Promise<string> => {
          await c.call('SET', key, 'v', ...set);
          await new Promise((r) => setTimeout(r, 20));
          return run(c, key);
        };
        const cases: [string, string[]][] = [['expiring', ['PX', '150']], ['gone', ['PX', '1']], ['lasting', ['PX', '60000']], ['plain', []]];
        for (const [key, set] of cases) {
          const direct = await seeded(d, key, ...set);
          expect(await seeded(p, key, ...set), key).to.equal(direct);
          if (key === 'expiring') expect(direct).to.equal(NULL_ARRAY);
          else expect(direct).to.equal('*1\r\n+PONG\r\n');
        }
      } finally {
        close();
      }
    });
  });

  describe('MULTI with a command Redis does not allow inside a transaction', () => {
    it('SAVE and SHUTDOWN are refused at queue time with Redis\'s text, and EXEC answers EXECABORT, as directly', async () => {
      const { d, p, close } = await pair();
      try {
        for (const cmd of ['SAVE', 'SHUTDOWN']) {
          const transcript = async (c: RespClient): Promise<string[]> => [await c.text('MULTI'), await c.text(cmd), await c.text('EXEC')];
          const reference = await transcript(d);
          expect(reference[1]).to.equal('-ERR Command not allowed inside a transaction\r\n');
          expect(await transcript(p), cmd).to.deep.equal(reference);
        }
      } finally {
        close();
      }
    });
  });

  describe('WATCH and SMOVE (Redis 7.0 touches the destination only when the member is added)', () => {
    it('an SMOVE of a member the watched destination already holds leaves EXEC to run; one that adds it aborts EXEC', async () => {
      const { d, p, close } = await pair();
      try {
        const scenario = async (c: RespClient, port: number, inDst: boolean): Promise<string> => {
          const other = await RespClient.connect(port);
          try {
            await c.call('DEL', 'src', 'dst');
            await c.call('SADD', 'src', 'a', 'b');
            await c.call('SADD', 'dst', inDst ? 'a' : 'z');
            await c.call('WATCH', 'dst');
            await c.call('MULTI');
            await c.call('SADD', 'dst', 'c');
            expect(await other.text('SMOVE', 'src', 'dst', 'a')).to.equal(':1\r\n');
            return `${await c.text('EXEC')}${await c.text('SCARD', 'dst')}`;
          } finally {
            other.close();
          }
        };
        for (const inDst of [true, false]) {
          const reference = await scenario(d, direct.port, inDst);
          expect(reference).to.equal(inDst ? '*1\r\n:1\r\n:2\r\n' : `${NULL_ARRAY}:2\r\n`);
          expect(await scenario(p, proxy.port, inDst), `member ${inDst ? 'already' : 'not'} in dst`).to.equal(reference);
        }
      } finally {
        close();
      }
    });
  });

  describe('WATCH across FLUSHALL, FLUSHDB and SWAPDB (Redis 7.0: only keys that exist are touched)', () => {
    /**
     * On each side: client A watches `watched` in db 0 after `seed`, client B runs `flush`, then A
     * runs MULTI PING EXEC. Returns [direct EXEC reply, proxy EXEC reply].
     */
    async function scenario(seed: string[][], flush: string[][], watched = 'w'): Promise<[string, string]> {
      const out: string[] = [];
      for (const port of [direct.port, proxy.port]) {
        const a = await RespClient.connect(port);
        const b = await RespClient.connect(port);
        try {
          await b.call('FLUSHALL');
          for (const cmd of seed) await b.call(...cmd);
          expect(await a.text('WATCH', watched)).to.equal('+OK\r\n');
          for (const cmd of flush) await b.call(...cmd);
          await a.call('MULTI');
          await a.call('PING');
          out.push(await a.text('EXEC'));
        } finally {
          a.close();
          b.close();
        }
      }
      return [out[0], out[1]];
    }

    it('a missing watched key + FLUSHALL from another client: EXEC runs (PONG)', async () => {
      const [d, p] = await scenario([['SET', 'other', '1']], [['FLUSHALL']]);
      expect(d).to.equal('*1\r\n+PONG\r\n');
      expect(p).to.equal(d);
    });

    it('an existing watched key + FLUSHALL from another client: EXEC answers nil', async () => {
      const [d, p] = await scenario([['SET', 'w', '1']], [['FLUSHALL']]);
      expect(d).to.equal(NULL_ARRAY);
      expect(p).to.equal(d);
    });

    it('FLUSHDB: a missing watched key runs, an existing one aborts, a flush of another db does not touch it', async () => {
      const missing = await scenario([['SET', 'other', '1']], [['FLUSHDB']]);
      expect(missing[0]).to.equal('*1\r\n+PONG\r\n');
      expect(missing[1]).to.equal(missing[0]);
      const existing = await scenario([['SET', 'w', '1']], [['FLUSHDB']]);
      expect(existing[0]).to.equal(NULL_ARRAY);
      expect(existing[1]).to.equal(existing[0]);
      const elsewhere = await scenario([['SET', 'w', '1'], ['SELECT', '3'], ['SET', 'w', '3']], [['FLUSHDB']]);
      expect(elsewhere[0]).to.equal('*1\r\n+PONG\r\n');
      expect(elsewhere[1]).to.equal(elsewhere[0]);
    });

    it('FLUSHALL inside another client\'s transaction: judged by existence too', async () => {
      const tx = [['MULTI'], ['FLUSHALL'], ['EXEC']];
      const missing = await scenario([['SET', 'other', '1']], tx);
      expect(missing[0]).to.equal('*1\r\n+PONG\r\n');
      expect(missing[1]).to.equal(missing[0]);
      const existing = await scenario([['SET', 'w', '1']], tx);
      expect(existing[0]).to.equal(NULL_ARRAY);
      expect(existing[1]).to.equal(existing[0]);
    });

    it('SWAPDB: a watched key missing in both dbs runs; one that exists in the other db aborts', async () => {
      const neither = await scenario([['SELECT', '1'], ['SET', 'other', '1']], [['SWAPDB', '0', '1']]);
      expect(neither[0]).to.equal('*1\r\n+PONG\r\n');
      expect(neither[1]).to.equal(neither[0]);
      const inOther = await scenario([['SELECT', '1'], ['SET', 'w', '1']], [['SWAPDB', '0', '1']]);
      expect(inOther[0]).to.equal(NULL_ARRAY);
      expect(inOther[1]).to.equal(inOther[0]);
      const unrelated = await scenario([['SET', 'w', '1']], [['SWAPDB', '2', '3']]);
      expect(unrelated[0]).to.equal('*1\r\n+PONG\r\n');
      expect(unrelated[1]).to.equal(unrelated[0]);
    });

    it('an EXEC sent while the flush is still in the node\'s queue never sees a flush it was not aborted by', async () => {
      // DEBUG SLEEP holds the one ordered node connection (and the node): the FLUSHALL and its
      // existence probe wait behind it while A's EXEC arrives. Whatever the order, A's
      // transaction either ran before the flush (reads the value) or was aborted by it (nil);
      // a transaction that ran after the flush of its existing watched key ([nil]) is the bug.
      const a = await RespClient.connect(proxy.port);
      const b = await RespClient.connect(proxy.port);
      const c = await RespClient.connect(proxy.port);
      try {
        await b.call('FLUSHALL');
        await b.call('SET', 'w', 'v');
        await a.call('WATCH', 'w');
        await a.call('MULTI');
        await a.call('GET', 'w');
        c.send('*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n0.5\r\n');
        await new Promise((r) => setTimeout(r, 50));
        b.send('*1\r\n$8\r\nFLUSHALL\r\n');
        await new Promise((r) => setTimeout(r, 50));
        const exec = (await a.call('EXEC')).toString();
        expect([NULL_ARRAY, '*1\r\n$1\r\nv\r\n']).to.include(exec);
        expect((await c.read()).toString()).to.equal('+OK\r\n');
        expect((await b.read()).toString()).to.equal('+OK\r\n');
      } finally {
        a.close();
        b.close();
        c.close();
      }
    });
  });
});

describe('fidelity: DEBUG through the proxy to a real Pika', function () {
  this.timeout(120_000);
  let pika: TestNode;
  let proxy: TestProxy;

  before(async () => {
    pika = await startNode('pika');
    proxy = await startTestProxy(pika);
  });

  after(async () => {
    await proxy?.stop();
    await pika?.stop();
  });

  it('whatever Pika answers to a passed-through DEBUG subcommand reaches the client; refused ones never reach it', async () => {
    const d = await RespClient.connect(pika.port);
    const p = await RespClient.connect(proxy.port);
    try {
      await p.call('SET', 'k', 'v');
      for (const cmd of [['DEBUG', 'OBJECT', 'k'], ['DEBUG', 'DIGEST'], ['DEBUG', 'SLEEP', '0'], ['DEBUG', 'HELP'], ['DEBUG', 'SET-ACTIVE-EXPIRE', '1']]) {
        const viaProxy = await p.text(...cmd);
        expect(viaProxy, cmd.join(' ')).to.not.include('pika-sync-proxy');
        expect(viaProxy, cmd.join(' ')).to.equal(await d.text(...cmd));
      }
      const before = await d.text('DBSIZE');
      expect(await p.text('DEBUG', 'POPULATE', '50')).to.equal('-ERR DEBUG POPULATE is refused by pika-sync-proxy: it changes data outside the write log (replicas would diverge)\r\n');
      expect(await d.text('DBSIZE')).to.equal(before);
      expect(await d.text('PING')).to.equal('+PONG\r\n');
    } finally {
      d.close();
      p.close();
    }
  });
});

/**
 * RESP3 per client (issue 12): a client that says HELLO 3 gets the node's RESP3 replies, byte for
 * byte, while RESP2 clients of the same proxy keep getting RESP2 over the same lanes (each lane
 * switches protocol with the client whose command it carries). Writes answered in RESP3 are logged
 * exactly as in RESP2 (the proxy reads some replies to log them). A RESP3 subscriber gets pushes and
 * may run other commands. On Pika, which has no RESP3, the client gets the node's own HELLO answer
 * and stays in RESP2.
 */
import { expect } from 'chai';
import { encodeArgs } from '../src/resp/request-parser';
import { entriesOnDisk } from './helpers/log-entries';
import { PikaServer } from './helpers/pika-server';
import { TestProxy, nodeBehindProxy } from './helpers/proxy-fixture';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';

type Cmd = string[];

/** Writes every command in one write after `HELLO <proto>`, returns every reply but HELLO's, as text. */
async function run(port: number, proto: 2 | 3, commands: Cmd[]): Promise<string[]> {
  const c = await RespClient.connect(port);
  try {
    c.send(Buffer.concat([encodeArgs(['HELLO', String(proto)]), ...commands.map((cmd) => encodeArgs(cmd))]));
    await c.read();
    const replies: string[] = [];
    for (let i = 0; i < commands.length; i++) replies.push((await c.read()).toString('latin1'));
    return replies;
  } finally {
    c.close();
  }
}

/** A data set (one set of keys per protocol, so both runs see the same values). */
function seed(p: string): Cmd[] {
  return [
    ['DEL', `${p}h`, `${p}z`, `${p}s`, `${p}l`, `${p}f`],
    ['HSET', `${p}h`, 'a', '1', 'b', '2'],
    ['ZADD', `${p}z`, '1.5', 'one', '2', 'two', '3.25', 'three'],
    ['SADD', `${p}s`, 'x'],
    ['RPUSH', `${p}l`, 'a', 'b', 'c'],
    ['SET', `${p}f`, '1.5'],
  ];
}

/** Reads whose RESP3 form differs from RESP2 (maps, doubles, nulls, sets, attributes, verbatim). */
function reads(p: string): Cmd[] {
  return [
    ['HGETALL', `${p}h`],
    ['ZRANGE', `${p}z`, '0', '-1', 'WITHSCORES'],
    ['ZSCORE', `${p}z`, 'three'],
    ['ZSCORE', `${p}z`, 'missing'],
    ['SMEMBERS', `${p}s`],
    ['GET', `${p}missing`],
    ['LPOP', `${p}l`, '0'],
    ['ZPOPMIN', `${p}z`],
    ['ZRANDMEMBER', `${p}missing`, '-3', 'WITHSCORES'],
    ['CONFIG', 'GET', 'maxmemory'],
    ['DEBUG', 'PROTOCOL', 'attrib'],
    ['DEBUG', 'PROTOCOL', 'bignum'],
    ['DEBUG', 'PROTOCOL', 'true'],
    ['DEBUG', 'PROTOCOL', 'verbatim'],
    ['DEBUG', 'PROTOCOL', 'double'],
    ['DEBUG', 'PROTOCOL', 'null'],
    ['EVAL', "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", '1', `${p}h`],
    ['INCRBYFLOAT', `${p}f`, '0.25'],
    ['MULTI'],
    ['ZINCRBY', `${p}z`, '1', 'two'],
    ['HGETALL', `${p}h`],
    ['EXEC'],
  ];
}

describe('RESP3 per client (redis-server, 4 lanes)', function () {
  this.timeout(120_000);
  const f = nodeBehindProxy(() => RedisServer.start({ extraArgs: ['--enable-debug-command', 'yes'] }), ['--node-connections', '4']);

  it('HELLO 3 answers a map with proto 3 and the client id; HELLO 2 and RESET bring back RESP2', async () => {
    const c = await RespClient.connect(f.proxy.port);
    try {
      const hello = (await c.call('HELLO', '3')).toString();
      expect(hello).to.match(/^%7\r\n\$6\r\nserver\r\n/);
      const id = (await c.text('CLIENT', 'ID')).trim();
      expect(hello).to.contain(`$5\r\nproto\r\n:3\r\n$2\r\nid\r\n${id}\r\n`);
      expect(await c.text('GET', 'resp3:nokey')).to.equal('_\r\n');
      expect((await c.call('HELLO', '2')).toString()).to.match(/^\*14\r\n/);
      expect(await c.text('GET', 'resp3:nokey')).to.equal('$-1\r\n');
      await c.call('HELLO', '3');
      expect(await c.text('RESET')).to.equal('+RESET\r\n');
      expect(await c.text('GET', 'resp3:nokey')).to.equal('$-1\r\n');
      expect(await c.text('HELLO', '4')).to.equal('-NOPROTO unsupported protocol version\r\n');
      expect(await c.text('GET', 'resp3:nokey')).to.equal('$-1\r\n');
    } finally {
      c.close();
    }
  });

  it("a RESP3 and a RESP2 client at once each get the node's replies in their protocol, byte for byte", async () => {
    for (const [proto, p] of [[3, 'resp3:a:'], [2, 'resp3:b:']] as const) {
      expect(await run(f.node.port, proto, seed(`${p}direct:`)), 'seed directly').to.not.include.members(['-']);
      await run(f.proxy.port, proto, seed(`${p}proxy:`));
    }
    const direct3 = await run(f.node.port, 3, reads('resp3:a:direct:'));
    const direct2 = await run(f.node.port, 2, reads('resp3:b:direct:'));
    // Both clients pipelined at the same time: their commands meet on the same lanes.
    const [proxied3, proxied2] = await Promise.all([run(f.proxy.port, 3, reads('resp3:a:proxy:')), run(f.proxy.port, 2, reads('resp3:b:proxy:'))]);
    const sameKeys = (replies: string[]): string[] => replies.map((r) => r.replace(/direct:|proxy:/g, 'P:'));
    expect(direct3.some((r) => r.startsWith('%')) && direct3.some((r) => r.startsWith(','))).to.equal(true);
    expect(sameKeys(proxied3)).to.deep.equal(sameKeys(direct3));
    expect(sameKeys(proxied2)).to.deep.equal(sameKeys(direct2));
  });

  it('writes answered in RESP3 are logged from their RESP3 replies (SPOP with a count as SREM of the members, SET NX GET)', async () => {
    const replies = await run(f.proxy.port, 3, [
      ['SADD', 'resp3:pop', 'm1', 'm2', 'm3'],
      ['SPOP', 'resp3:pop', '2'],
      ['SET', 'resp3:nx', 'v', 'NX', 'GET'],
      ['INCRBYFLOAT', 'resp3:float', '2.5'],
    ]);
    expect(replies[1]).to.match(/^~2\r\n/);
    expect(replies[2]).to.equal('_\r\n');
    const logged = await loggedSince(f.proxy, 'SADD resp3:pop', 4);
    const popped = replies[1].split('\r\n').filter((_l, i) => i % 2 === 0 && i > 0).slice(0, 2);
    expect(logged).to.have.length(4);
    expect(logged[1]).to.deep.equal([`SREM resp3:pop ${popped.join(' ')}`]);
    expect(logged[2][0]).to.equal('SET resp3:nx v');
    expect(logged[3]).to.deep.equal(['INCRBYFLOAT resp3:float 2.5']);
  });

  it('a RESP3 subscriber gets pushes and runs other commands while subscribed, as on the node', async () => {
    const script = async (port: number, channel: string): Promise<string[]> => {
      const sub = await RespClient.connect(port);
      const pub = await RespClient.connect(port);
      try {
        await sub.call('HELLO', '3');
        const frames = [(await sub.call('SUBSCRIBE', channel)).toString()];
        frames.push((await sub.call('GET', 'resp3:nokey')).toString());
        frames.push((await sub.call('PING')).toString());
        expect(await pub.text('PUBLISH', channel, 'hello')).to.equal(':1\r\n');
        frames.push((await sub.read()).toString());
        frames.push((await sub.call('UNSUBSCRIBE', channel)).toString());
        frames.push((await sub.call('ECHO', 'after')).toString());
        return frames.map((f) => f.replace(channel, 'CH'));
      } finally {
        sub.close();
        pub.close();
      }
    };
    const direct = await script(f.node.port, 'resp3:d:ch');
    expect(direct[0]).to.match(/^>3\r\n/);
    expect(await script(f.proxy.port, 'resp3:p:ch')).to.deep.equal(direct);
  });

  it("INFO to a RESP3 client: the node's sections (sent as a verbatim string) and the proxy's", async () => {
    const c = await RespClient.connect(f.proxy.port);
    try {
      await c.call('HELLO', '3');
      const info = await c.text('INFO');
      expect(info).to.match(/# Server\r\nredis_version:/);
      expect(info).to.contain('# Proxy\r\n');
      expect(info).to.not.contain('backend_error');
    } finally {
      c.close();
    }
  });

  it('CLIENT REPLY OFF, SKIP and ON: the same replies as the node (pushes still delivered)', async () => {
    const commands: Cmd[] = [
      ['CLIENT', 'REPLY', 'OFF'], ['PING', 'a'], ['CLIENT', 'REPLY', 'ON'], ['PING', 'b'],
      ['CLIENT', 'REPLY', 'SKIP'], ['PING', 'c'], ['PING', 'd'], ['CLIENT', 'REPLY', 'ON'],
    ];
    const collect = async (port: number): Promise<string> => {
      const c = await RespClient.connect(port);
      try {
        c.send(Buffer.concat(commands.map((cmd) => encodeArgs(cmd))));
        const got: string[] = [];
        for (let i = 0; i < 4; i++) got.push((await c.read()).toString());
        await expectNothingMore(c);
        return got.join('');
      } finally {
        c.close();
      }
    };
    const direct = await collect(f.node.port);
    expect(direct).to.equal('+OK\r\n$1\r\nb\r\n$1\r\nd\r\n+OK\r\n');
    expect(await collect(f.proxy.port)).to.equal(direct);
  });

  it('a blocked RESP3 pop times out with the RESP3 null, and BZPOPMIN answers with a double, as the node', async () => {
    const pops = async (port: number, p: string): Promise<string[]> => {
      const c = await RespClient.connect(port);
      const other = await RespClient.connect(port);
      try {
        await c.call('HELLO', '3');
        const timedOut = (await c.call('BLPOP', `${p}none`, '0.05')).toString();
        c.send(encodeArgs(['BZPOPMIN', `${p}z`, '5']));
        await new Promise((r) => setTimeout(r, 100));
        await other.call('ZADD', `${p}z`, '2.5', 'm');
        return [timedOut, (await c.read()).toString().replace(p, 'P')];
      } finally {
        c.close();
        other.close();
      }
    };
    const direct = await pops(f.node.port, 'resp3:pd:');
    expect(direct[0]).to.equal('_\r\n');
    expect(await pops(f.proxy.port, 'resp3:pp:')).to.deep.equal(direct);
  });
});

/** The log entries from the first whose command starts with `first`, once `count` are on disk. */
async function loggedSince(proxy: TestProxy, first: string, count: number): Promise<string[][]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const entries = entriesOnDisk(proxy).map((e) => e.entry.commands.map((cmd) => cmd.map((a) => a.toString()).join(' ')));
    const from = entries.findIndex((e) => e[0].startsWith(first));
    if ((from >= 0 && entries.length - from >= count) || Date.now() > deadline) return from >= 0 ? entries.slice(from) : [];
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves if no further reply arrives within a short wait; fails with the reply otherwise. */
async function expectNothingMore(c: RespClient): Promise<void> {
  const extra = await c.read(300).then((r) => r.toString(), () => null);
  expect(extra, 'no further reply').to.equal(null);
}

describe('RESP3 on a node without it (real Pika)', function () {
  this.timeout(120_000);
  const f = nodeBehindProxy(() => PikaServer.start());

  it("HELLO 3 gets the node's own answer and the client stays in RESP2", async () => {
    const direct = await run(f.node.port, 3, [['HSET', 'resp3:h', 'a', '1'], ['HGETALL', 'resp3:h'], ['GET', 'resp3:nokey']]);
    const c = await RespClient.connect(f.node.port);
    const nodeHello = (await c.call('HELLO', '3')).toString();
    c.close();
    expect(nodeHello).to.match(/^\*\d+\r\n/);
    const p = await RespClient.connect(f.proxy.port);
    try {
      expect((await p.call('HELLO', '3')).toString()).to.equal(nodeHello);
      expect(await p.text('HSET', 'resp3:h', 'a', '1')).to.equal(':0\r\n');
      expect([await p.text('HGETALL', 'resp3:h'), await p.text('GET', 'resp3:nokey')]).to.deep.equal(direct.slice(1));
    } finally {
      p.close();
    }
  });
});

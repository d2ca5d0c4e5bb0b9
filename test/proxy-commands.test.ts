/**
 * Every command family through the proxy compared byte for byte with the same commands sent
 * straight to a node of the same kind: two fresh redis-servers, one behind the proxy.
 */
import { expect } from 'chai';
import { RespClient } from './helpers/resp-client';
import { RedisServer } from './helpers/redis-server';
import { TestProxy, startTestProxy } from './helpers/proxy-fixture';

type Script = (string | Buffer)[][];

const FAMILIES: Record<string, Script> = {
  strings: [
    ['SET', 's1', 'hello'], ['GET', 's1'], ['APPEND', 's1', ' world'], ['STRLEN', 's1'], ['GETRANGE', 's1', '0', '4'],
    ['SETNX', 's1', 'x'], ['MSET', 'a', '1', 'b', '2'], ['MGET', 'a', 'b', 'nope'], ['INCR', 'a'], ['INCRBY', 'a', '10'],
    ['DECR', 'b'], ['INCRBYFLOAT', 'f', '1.5'], ['GETSET', 'a', '100'], ['SET', 'bin', Buffer.from([0, 1, 2, 255, 13, 10])],
    ['GET', 'bin'], ['SETBIT', 'bits', '7', '1'], ['GETBIT', 'bits', '7'], ['BITCOUNT', 'bits'], ['INCR', 's1'],
    ['SET', 'big', 'x'.repeat(100_000)], ['GET', 'big'], ['DEL', 'a', 'b', 'nope'], ['EXISTS', 's1', 'a'], ['TYPE', 's1'],
  ],
  hashes: [
    ['HSET', 'h', 'f1', 'v1', 'f2', 'v2'], ['HGET', 'h', 'f1'], ['HMSET', 'h', 'f3', 'v3'], ['HGETALL', 'h'], ['HKEYS', 'h'],
    ['HVALS', 'h'], ['HLEN', 'h'], ['HEXISTS', 'h', 'f2'], ['HDEL', 'h', 'f2'], ['HINCRBY', 'h', 'n', '5'],
    ['HINCRBYFLOAT', 'h', 'fl', '0.25'], ['HMGET', 'h', 'f1', 'zz'], ['HSETNX', 'h', 'f1', 'no'], ['HSTRLEN', 'h', 'f1'],
  ],
  lists: [
    ['RPUSH', 'l', 'a', 'b', 'c'], ['LPUSH', 'l', 'z'], ['LRANGE', 'l', '0', '-1'], ['LLEN', 'l'], ['LINDEX', 'l', '1'],
    ['LSET', 'l', '0', 'y'], ['LINSERT', 'l', 'BEFORE', 'b', 'bb'], ['LREM', 'l', '0', 'bb'], ['LTRIM', 'l', '0', '2'],
    ['LPOP', 'l'], ['RPOP', 'l'], ['RPOPLPUSH', 'l', 'l2'], ['LRANGE', 'l2', '0', '-1'], ['LPOS', 'l2', 'b'],
  ],
  sets: [
    ['SADD', 'st', 'a', 'b', 'c'], ['SCARD', 'st'], ['SISMEMBER', 'st', 'a'], ['SREM', 'st', 'a'], ['SADD', 'st2', 'b', 'x'],
    ['SINTER', 'st', 'st2'], ['SMOVE', 'st', 'st2', 'c'], ['SINTERSTORE', 'dst', 'st', 'st2'], ['SMISMEMBER', 'st2', 'x', 'q'],
  ],
  zsets: [
    ['ZADD', 'z', '1', 'a', '2', 'b', '3.5', 'c'], ['ZRANGE', 'z', '0', '-1', 'WITHSCORES'], ['ZSCORE', 'z', 'c'],
    ['ZINCRBY', 'z', '2', 'a'], ['ZRANK', 'z', 'a'], ['ZREVRANGE', 'z', '0', '1'], ['ZCOUNT', 'z', '1', '3'],
    ['ZRANGEBYSCORE', 'z', '(1', '+inf'], ['ZREM', 'z', 'b'], ['ZCARD', 'z'], ['ZPOPMIN', 'z'], ['ZUNIONSTORE', 'zu', '2', 'z', 'z'],
  ],
  streams: [
    ['XADD', 'x', '1-1', 'f', 'v'], ['XADD', 'x', '2-1', 'g', 'w'], ['XLEN', 'x'], ['XRANGE', 'x', '-', '+'],
    ['XREVRANGE', 'x', '+', '-', 'COUNT', '1'], ['XDEL', 'x', '1-1'], ['XREAD', 'COUNT', '5', 'STREAMS', 'x', '0'],
  ],
  keysAndTtl: [
    ['SET', 'k', 'v'], ['EXPIRE', 'k', '1000'], ['PERSIST', 'k'], ['TTL', 'k'], ['PEXPIREAT', 'k', '99999999999999'],
    ['EXPIRE', 'missing', '10'], ['DEL', 'k'], ['EXISTS', 'k'], ['SELECT', '3'], ['SET', 'k3', 'three'], ['GET', 'k3'],
    ['SELECT', '0'], ['GET', 'k3'], ['SELECT', '99'], ['SELECT', 'x'], ['DBSIZE'],
  ],
  errors: [
    ['NOSUCHCOMMAND', 'x'], ['GET'], ['SET', 'k'], ['LPUSH', 'str', 'x'], ['SET', 'str', 'v'], ['LPUSH', 'str', 'x'],
    ['INCR', 'str'], ['HSET', 'h', 'f'],
  ],
  transactions: [
    ['MULTI'], ['SET', 't', '1'], ['INCR', 't'], ['GET', 't'], ['EXEC'], ['MULTI'], ['SET', 't', 'x'], ['INCR', 't'], ['EXEC'],
    ['GET', 't'], ['MULTI'], ['SET', 't', '2'], ['DISCARD'], ['GET', 't'], ['EXEC'], ['DISCARD'], ['MULTI'], ['GET'], ['EXEC'],
    ['MULTI'], ['MULTI'], ['DISCARD'], ['WATCH', 't'], ['MULTI'], ['INCR', 't'], ['EXEC'], ['UNWATCH'],
  ],
  connection: [['PING'], ['PING', 'hi'], ['ECHO', 'echo'], ['CLIENT', 'SETNAME', 'me'], ['CLIENT', 'GETNAME'], ['AUTH', 'x']],
  // Without --requirepass, AUTH <user> <pass> is checked by the node (its ACL users).
  aclUsers: [
    ['ACL', 'SETUSER', 'bob', 'on', '>123', '+@all', '~*'], ['AUTH', 'bob', '123'], ['AUTH', 'bob', 'wrong'], ['AUTH', 'nosuch', 'x'],
    ['AUTH', 'default', 'anything'], ['PING'],
  ],
  blockingTimeouts: [
    ['BLPOP', 'emptyl', '0.1'], ['BRPOP', 'emptyl', '0.1'], ['RPUSH', 'bl', 'v1'], ['BLPOP', 'emptyl', 'bl', '1'],
    ['BZPOPMIN', 'emptyz', '0.1'], ['ZADD', 'bz', '1', 'm'], ['BZPOPMAX', 'bz', '1'], ['BRPOPLPUSH', 'emptyl', 'x', '0.1'],
    ['RPUSH', 'src', 'e'], ['BRPOPLPUSH', 'src', 'dst', '1'], ['BLPOP', 'bl', '-1'], ['BLPOP', 'bl', 'abc'],
  ],
};

describe('proxy: command families compared with the node directly', function () {
  let direct: RedisServer;
  let behind: RedisServer;
  let proxy: TestProxy;

  before(async () => {
    [direct, behind] = await Promise.all([RedisServer.start(), RedisServer.start()]);
    proxy = await startTestProxy(behind);
  });
  after(async () => {
    await proxy?.stop();
    await Promise.all([direct?.stop(), behind?.stop()]);
  });

  for (const [family, script] of Object.entries(FAMILIES)) {
    it(`${family}: same replies byte for byte`, async () => {
      const a = await RespClient.connect(direct.port);
      const b = await RespClient.connect(proxy.port);
      try {
        for (const cmd of script) {
          const [viaNode, viaProxy] = await Promise.all([a.call(...cmd), b.call(...cmd)]);
          expect(viaProxy.toString('latin1'), `${cmd.join(' ').slice(0, 60)}`).to.equal(viaNode.toString('latin1'));
        }
      } finally {
        a.close();
        b.close();
      }
    });
  }

  it('WATCH aborts EXEC when another client wrote the key, like the node', async () => {
    for (const port of [direct.port, proxy.port]) {
      const c1 = await RespClient.connect(port);
      const c2 = await RespClient.connect(port);
      expect(await c1.text('SET', 'w', '1')).to.equal('+OK\r\n');
      expect(await c1.text('WATCH', 'w')).to.equal('+OK\r\n');
      expect(await c2.text('SET', 'w', '2')).to.equal('+OK\r\n');
      expect(await c1.text('MULTI')).to.equal('+OK\r\n');
      expect(await c1.text('SET', 'w', '3')).to.equal('+QUEUED\r\n');
      expect(await c1.text('EXEC'), `port ${port}`).to.equal('*-1\r\n');
      expect(await c1.text('GET', 'w')).to.equal('$1\r\n2\r\n');
      c1.close();
      c2.close();
    }
  });

  it('BLPOP waits and is woken by another client\'s push, like the node', async () => {
    for (const port of [direct.port, proxy.port]) {
      const waiter = await RespClient.connect(port);
      const pusher = await RespClient.connect(port);
      waiter.send('*3\r\n$5\r\nBLPOP\r\n$5\r\nwakeq\r\n$1\r\n5\r\n');
      await new Promise((r) => setTimeout(r, 150));
      expect(await pusher.text('RPUSH', 'wakeq', 'hello')).to.equal(':1\r\n');
      expect((await waiter.read()).toString()).to.equal('*2\r\n$5\r\nwakeq\r\n$5\r\nhello\r\n');
      expect(await pusher.text('LLEN', 'wakeq')).to.equal(':0\r\n');
      waiter.close();
      pusher.close();
    }
  });

  it('pub/sub: SUBSCRIBE, messages, UNSUBSCRIBE and back to normal commands', async () => {
    const transcripts: string[] = [];
    for (const port of [direct.port, proxy.port]) {
      const sub = await RespClient.connect(port);
      const pub = await RespClient.connect(port);
      const lines: string[] = [];
      lines.push(await sub.text('SUBSCRIBE', 'ch1', 'ch2'));
      lines.push((await sub.read()).toString());
      lines.push(await pub.text('PUBLISH', 'ch1', 'm1'));
      lines.push((await sub.read()).toString());
      lines.push(await sub.text('GET', 'x'));
      lines.push(await sub.text('PING'));
      lines.push(await sub.text('UNSUBSCRIBE', 'ch1'));
      lines.push(await sub.text('UNSUBSCRIBE', 'ch2'));
      lines.push(await sub.text('SET', 'afterpubsub', 'ok'));
      transcripts.push(lines.join('|'));
      sub.close();
      pub.close();
    }
    expect(transcripts[1]).to.equal(transcripts[0]);
    expect(transcripts[1]).to.include('message');
  });
});

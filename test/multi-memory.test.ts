/**
 * MULTI against a Redis node over its maxmemory (memory-limit.ts): Redis refuses every command
 * queued in MULTI with -OOM, aborts the EXEC, yet runs an EXEC of reads queued before the limit
 * was hit, and refuses an EXEC with a write naming OOM. The proxy queues transactions itself, so
 * each case is run through the proxy (1 and 4 node connections) and straight against a second
 * redis-server, and the replies must be the same bytes. (Pika never refuses a command for memory;
 * its maxmemory is a cache size, and the proxy asks it nothing: lanes/replica tests cover its MULTI.)
 */
import { expect } from 'chai';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';
import { nodeBehindProxy } from './helpers/proxy-fixture';

type Step = [who: 'a' | 'b', ...args: string[]];

/** Runs `steps` with clients a and b on `port`, maxmemory 0 first and last; every reply, in order. */
async function transcript(port: number, steps: Step[]): Promise<string[]> {
  const a = await RespClient.connect(port);
  const b = await RespClient.connect(port);
  try {
    await b.call('FLUSHALL');
    await b.call('CONFIG', 'SET', 'maxmemory', '0');
    const out: string[] = [];
    for (const [who, ...args] of steps) out.push(`${who} ${args.join(' ')} -> ${await (who === 'a' ? a : b).text(...args)}`);
    return out;
  } finally {
    await b.call('CONFIG', 'SET', 'maxmemory', '0');
    a.close();
    b.close();
  }
}

const CASES: Record<string, Step[]> = {
  'a command queued over maxmemory gets -OOM and the EXEC aborts': [
    ['a', 'MULTI'], ['a', 'SET', 'foo1', 'bar1'], ['b', 'CONFIG', 'SET', 'maxmemory', '1'], ['a', 'LPUSH', 'mylist', 'v'],
    ['b', 'CONFIG', 'SET', 'maxmemory', '0'], ['a', 'SET', 'foo2', 'bar2'], ['a', 'EXEC'], ['a', 'EXISTS', 'foo1', 'foo2'],
  ],
  'DISCARD works over maxmemory': [
    ['b', 'CONFIG', 'SET', 'maxmemory', '1'], ['a', 'MULTI'], ['a', 'SET', 'x', '1'], ['a', 'DISCARD'], ['b', 'CONFIG', 'SET', 'maxmemory', '0'], ['a', 'PING'],
  ],
  'an EXEC of reads queued before the limit runs': [
    ['a', 'SET', 'x', 'value'], ['a', 'MULTI'], ['a', 'GET', 'x'], ['a', 'PING'], ['a', 'SELECT', '3'], ['a', 'GET', 'x'],
    ['b', 'CONFIG', 'SET', 'maxmemory', '1'], ['a', 'EXEC'], ['b', 'CONFIG', 'SET', 'maxmemory', '0'], ['a', 'SELECT', '0'],
  ],
  'an EXEC with a write over the limit aborts, naming OOM': [
    ['a', 'MULTI'], ['a', 'SET', 'x', '1'], ['a', 'GET', 'x'], ['b', 'CONFIG', 'SET', 'maxmemory', '1'], ['a', 'EXEC'],
    ['b', 'CONFIG', 'SET', 'maxmemory', '0'], ['a', 'EXISTS', 'x'],
  ],
  'a limit set with units, and lifted: transactions run as usual again': [
    ['b', 'CONFIG', 'SET', 'maxmemory', '1gb'], ['a', 'MULTI'], ['a', 'INCR', 'n'], ['a', 'INCR', 'n'], ['a', 'EXEC'],
    ['b', 'CONFIG', 'SET', 'maxmemory', '0'], ['a', 'MULTI'], ['a', 'INCR', 'n'], ['a', 'EXEC'],
  ],
};

describe('MULTI over a Redis node\'s maxmemory: the same replies as directly', function () {
  this.timeout(60_000);
  let direct: RedisServer;

  before(async () => {
    direct = await RedisServer.start();
  });

  after(async () => {
    await direct?.stop();
  });

  for (const lanes of ['1', '4']) {
    describe(`through ${lanes} node connection(s)`, () => {
      const f = nodeBehindProxy(() => RedisServer.start(), ['--node-connections', lanes]);
      for (const [name, steps] of Object.entries(CASES)) {
        it(name, async () => {
          const expected = await transcript(direct.port, steps);
          expect(await transcript(f.proxy.port, steps)).to.deep.equal(expected);
          // The cases are not vacuous: each shows a refusal or a run that an OOM would refuse.
          expect(expected.join('\n')).to.match(/OOM|\*2\r\n:1\r\n:2\r\n|\$5\r\nvalue\r\n\+PONG/);
        });
      }
    });
  }
});

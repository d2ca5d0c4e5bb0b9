/**
 * Commands the proxy's table does not know (src/server/unknown-commands.ts): a write the node
 * names as one (its COMMAND INFO flags) is refused — it could not be logged, and replicas would
 * silently diverge — inside MULTI too; a read passes. The node here is a real redis-server with
 * commands renamed (`rename-command`), which is what a newer node's or a module's command looks
 * like to the proxy. On Pika (no COMMAND) an unknown command gets the node's own answer.
 */
import { expect } from 'chai';
import type Redis from 'ioredis';
import { PikaServer } from './helpers/pika-server';
import { nodeBehindProxy } from './helpers/proxy-fixture';
import { RedisServer } from './helpers/redis-server';
import { proxyClient, replInfo } from './replica-e2e-fixture';


const RENAMED = ['HSETNX', 'MYHSETNX', 'SETNX', 'MYSETNX', 'STRLEN', 'MYSTRLEN'];

describe('commands the table does not know (redis-server with renamed commands)', function () {
  this.timeout(30_000);
  const fixture = nodeBehindProxy(() => RedisServer.start({ extraArgs: RENAMED.flatMap((name, i) => (i % 2 === 0 ? ['--rename-command', name, RENAMED[i + 1]] : [])) }));
  let c: Redis;
  let direct: Redis;
  before(() => {
    c = proxyClient(fixture.proxy);
    direct = fixture.node.client();
  });
  after(() => {
    c.disconnect();
    direct.disconnect();
  });
  const offset = async (): Promise<string> => (await replInfo(c)).master_repl_offset;
  const refusal = /^ERR '(myhsetnx|mysetnx)' is a write on this node that pika-sync-proxy cannot replicate/;

  it('a write the node names as one is refused inside MULTI: the transaction is discarded, nothing runs or is logged', async () => {
    const before = await offset();
    const results = (await c.multi().set('t:a', '1').call('MYHSETNX', 't:h', 'f', 'v').exec().catch((e: Error) => e.message)) as string;
    expect(results).to.match(/EXECABORT/);
    expect(await direct.exists('t:a', 't:h')).to.equal(0);
    expect(await offset()).to.equal(before);
  });

  it('outside MULTI: refused at the first use and after, the node untouched, nothing logged', async () => {
    const before = await offset();
    for (const args of [['MYSETNX', 'k', 'v'], ['MYSETNX', 'k', 'v'], ['MYHSETNX', 'h', 'f', 'v']]) {
      const answer = await c.call(args[0], ...args.slice(1)).then((r) => `answered ${String(r)}`, (e: Error) => e.message);
      expect(answer, args[0]).to.match(refusal);
    }
    expect(await direct.exists('k', 'h')).to.equal(0);
    expect(await offset()).to.equal(before);
    // The client's connection goes on in order.
    expect(await c.set('after', 'x')).to.equal('OK');
  });

  it('a read the node knows passes, and an unknown name gets the node\'s own error', async () => {
    await c.set('s', 'hello');
    expect(await c.call('MYSTRLEN', 's')).to.equal(await direct.call('MYSTRLEN', 's'));
    const through = await c.call('NOSUCHCMD', 'x').catch((e: Error) => e.message);
    const straight = await direct.call('NOSUCHCMD', 'x').catch((e: Error) => e.message);
    expect(through).to.equal(straight);
  });
});

describe('commands the table does not know (real Pika: no COMMAND)', function () {
  this.timeout(60_000);
  const fixture = nodeBehindProxy(() => PikaServer.start());

  it("an unknown command gets Pika's own answer", async () => {
    const c = proxyClient(fixture.proxy);
    const direct = fixture.node.client();
    try {
      const through = await c.call('NOSUCHCMD', 'x').catch((e: Error) => e.message);
      const straight = await direct.call('NOSUCHCMD', 'x').catch((e: Error) => e.message);
      expect(through).to.equal(straight);
      expect(await c.set('k', 'v')).to.equal('OK');
    } finally {
      c.disconnect();
      direct.disconnect();
    }
  });
});

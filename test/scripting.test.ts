/**
 * EVAL/EVALSHA/FCALL, SCRIPT and FUNCTION through the proxy (src/server/scripting.ts): a script's
 * effect reaches replicas as the after-images of its declared keys, function libraries travel in
 * the snapshot and the write log, read-only forms are gated like reads, and a node without
 * scripting (real Pika) answers with its own error while nothing is logged.
 */
import { expect } from 'chai';
import Redis from 'ioredis';
import { execToLogCommands } from '../src/source/log-rewrite';
import { captureScript } from '../src/source/script-images';
import { Cleanup, FAST_RETRY, expectNodesEqual, proxyClient, replInfo, seed, waitCaughtUp, waitConfirmed, waitFor } from './replica-e2e-fixture';
import type { TestNode } from './helpers/nodes';
import type { ProxyProcess } from './helpers/proxy-process';

/** Writes three declared keys: a string holding the node's clock (replay would differ), a hash, a TTL key. */
const WRITE_THREE = `
local t = redis.call('TIME')
redis.call('SET', KEYS[1], t[1] .. '.' .. t[2])
redis.call('HSET', KEYS[2], 'f1', ARGV[1], 'f2', t[2])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('PEXPIRE', KEYS[3], 600000)
return {t[2], 'done'}`;

const LIBRARY = (name: string): string => `#!lua name=${name}
redis.register_function('${name}_stamp', function(keys, args)
  local t = redis.call('TIME')
  redis.call('SET', keys[1], args[1] .. ':' .. t[2])
  return t[2]
end)
redis.register_function{function_name='${name}_get', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}`;

const B = (s: string): Buffer => Buffer.from(s);
const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;

describe('scripting: after-images in the write log (pure)', () => {
  it('a script and its read-backs become RESTORE + PEXPIREAT and DEL, even when the script failed', () => {
    const script = [B('EVAL'), B('return 1'), B('2'), B('a'), B('b')];
    const readBacks = captureScript(script, [B('a'), B('b')]);
    const reply = Buffer.from(`*5\r\n-ERR script failed\r\n${bulk('payload')}:1500\r\n$-1\r\n:-2\r\n`);
    const commands = execToLogCommands([script, ...readBacks], reply, 1_000_000)!.map((c) => c.map(String));
    expect(commands).to.deep.equal([
      ['RESTORE', 'a', '0', 'payload', 'REPLACE'],
      ['PEXPIREAT', 'a', '1001500'],
      ['DEL', 'b'],
    ]);
  });

  it('a captured script that declares no key logs nothing (it is never replayed)', () => {
    const script = [B('EVAL'), B("return redis.call('TIME')[2]"), B('0')];
    expect(captureScript(script, [])).to.deep.equal([]);
    const set = [B('SET'), B('k'), B('v')];
    const commands = execToLogCommands([script, set], Buffer.from(`*2\r\n:123\r\n+OK\r\n`), 0)!.map((c) => c.map(String));
    expect(commands).to.deep.equal([['SET', 'k', 'v']]);
  });

  it("a client's own DUMP after a script is not taken for a read-back", () => {
    const script = [B('EVAL'), B('return 1'), B('0')];
    const own = [B('DUMP'), B('a')];
    const reply = Buffer.from(`*2\r\n:1\r\n${bulk('payload')}`);
    // Without read-backs the script is logged as sent (a node without DUMP/RESTORE).
    const commands = execToLogCommands([script, own], reply, 0, (args) => args === script)!.map((c) => c.map(String));
    expect(commands).to.deep.equal([['EVAL', 'return 1', '0']]);
  });
});

for (const lanes of [1, 4]) describe(`scripting through the proxy (redis-server, ${lanes} lane(s))`, function () {
  this.timeout(60_000);
  let cleanup: Cleanup;
  let masterNode: TestNode;
  let replicaNode: TestNode;
  let master: ProxyProcess;
  let replica: ProxyProcess;
  let mc: Redis;
  let rc: Redis;

  beforeEach(async () => {
    cleanup = new Cleanup();
    masterNode = await cleanup.node('redis');
    replicaNode = await cleanup.node('redis');
    master = await cleanup.proxy(masterNode, ['--node-connections', String(lanes)]);
    replica = await cleanup.proxy(replicaNode, [...FAST_RETRY, '--node-connections', String(lanes)]);
    mc = cleanup.client(proxyClient(master));
    rc = cleanup.client(proxyClient(replica));
  });
  afterEach(async () => {
    await cleanup.run();
  });

  async function syncReplica(): Promise<void> {
    expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
    await waitConfirmed(replica, rc);
  }

  it('EVAL writing declared string, hash and TTL keys reaches the replica exactly, by full sync and while streaming', async () => {
    const reply = (await mc.call('EVAL', WRITE_THREE, '3', 's:1', 'h:1', 't:1', 'before')) as unknown[];
    expect(reply[1]).to.equal('done');
    await syncReplica();
    await mc.call('EVAL', WRITE_THREE, '3', 's:2', 'h:2', 't:2', 'after');
    // Overwrite and delete keys the full sync carried.
    await mc.call('EVAL', "redis.call('DEL', KEYS[1]); redis.call('HDEL', KEYS[2], 'f1'); return redis.call('TIME')[2]", '2', 's:1', 'h:1');
    const sha = String(await mc.call('SCRIPT', 'LOAD', WRITE_THREE));
    await mc.call('EVALSHA', sha, '3', 's:3', 'h:3', 't:3', 'sha');
    await waitCaughtUp(mc, rc);
    await expectNodesEqual(masterNode, replicaNode);
    const direct = cleanup.client(replicaNode.client());
    expect(await direct.exists('s:1')).to.equal(0);
    expect(await direct.hget('h:2', 'f1')).to.equal('after');
    expect(await direct.pttl('t:2')).to.be.within(500_000, 600_000);
    expect(await direct.pttl('t:1')).to.be.within(500_000, 600_000);
    // SCRIPT LOAD was logged: the replica's node has the script in its cache.
    expect(await direct.call('SCRIPT', 'EXISTS', sha)).to.deep.equal([1]);
    // A script that declares no key logs nothing (replaying it could differ: it reads the clock).
    const offset = (await replInfo(mc)).master_repl_offset;
    expect(await mc.call('EVAL', "return redis.call('TIME')[2]", '0')).to.match(/^\d+$/);
    expect((await replInfo(mc)).master_repl_offset).to.equal(offset);
  });

  it('scripts running on seeded keys before, during and after the full sync leave the replica exact', async () => {
    await seed(masterNode, { bigKeys: true, bigSize: 20_000 });
    mc.disconnect();
    await master.stop();
    master = await cleanup.proxy(masterNode, ['--snapshot-file-size', '256kb']);
    mc = cleanup.client(proxyClient(master));
    const clients = [mc, cleanup.client(proxyClient(master, 3))];
    // Each run rewrites one key with the node's clock, gives another a TTL and deletes a third.
    const script = `local t = redis.call('TIME')[2]
redis.call('APPEND', KEYS[1], ':' .. t)
redis.call('PEXPIRE', KEYS[2], 700000 + tonumber(t))
redis.call('DEL', KEYS[3])
return t`;
    let running = true;
    let runs = 0;
    const errors: string[] = [];
    const writer = (async () => {
      for (let i = 0; running; i++) {
        const db = i % 2 === 0 ? 0 : 3;
        const keys = [i % 500, (i * 7) % 500, (i * 13 + 1) % 500].map((n) => `s:str:${db}:${n}`);
        await clients[i % 2].call('EVAL', script, '3', ...keys).then(() => runs++, (e: Error) => errors.push(e.message));
      }
    })();
    await waitFor('scripts before SLAVEOF', () => runs > 20);
    const runsAtSlaveof = runs;
    await rc.call('SLAVEOF', '127.0.0.1', String(master.port));
    await waitConfirmed(replica, rc, 40_000);
    const runsAtConfirm = runs;
    expect(runsAtConfirm, 'scripts that ran during the full sync').to.be.greaterThan(runsAtSlaveof);
    await waitFor('scripts after the confirmation', () => runs > runsAtConfirm + 50);
    running = false;
    await writer;
    expect(errors).to.deep.equal([]);
    await waitCaughtUp(mc, rc);
    await expectNodesEqual(masterNode, replicaNode);
  });

  it('EVAL inside MULTI: the client sees only its own replies, the replica gets the effects in order', async () => {
    await syncReplica();
    const multi = await mc.multi().set('m:a', '1').eval("return redis.call('INCRBY', KEYS[1], redis.call('TIME')[2])", 1, 'm:a').get('m:a').exec();
    expect(multi).to.have.length(3);
    const [[, set], [, incr], [, got]] = multi as [Error | null, unknown][];
    expect(set).to.equal('OK');
    expect(String(incr)).to.equal(String(got));
    await waitCaughtUp(mc, rc);
    await expectNodesEqual(masterNode, replicaNode);
    expect(await cleanup.client(replicaNode.client()).get('m:a')).to.equal(String(got));
  });

  it('EVAL failing after a partial write: the client gets the error, the partial effect reaches the replica', async () => {
    await syncReplica();
    const script = "redis.call('SET', KEYS[1], 'partial'); redis.call('HSET', KEYS[2], 'f', 'v'); return redis.call('INCR', KEYS[1])";
    let error: Error | undefined;
    await mc.call('EVAL', script, '2', 'p:1', 'p:2').catch((e: Error) => (error = e));
    expect(error?.message).to.match(/not an integer/);
    // The same inside a client's MULTI: the element is the error, the other commands still run.
    const multi = await mc.multi().eval(script, 2, 'p:3', 'p:4').set('p:5', 'x').exec();
    expect((multi as [Error | null, unknown][])[0][0]?.message).to.match(/not an integer/);
    expect((multi as [Error | null, unknown][])[1][1]).to.equal('OK');
    await waitCaughtUp(mc, rc);
    const direct = cleanup.client(replicaNode.client());
    expect(await direct.get('p:1')).to.equal('partial');
    expect(await direct.get('p:3')).to.equal('partial');
    expect(await direct.hget('p:4', 'f')).to.equal('v');
    await expectNodesEqual(masterNode, replicaNode);
  });

  it('FCALL after FUNCTION LOAD: libraries reach the replica by the snapshot and by the write log', async () => {
    // A library the replica's node had before the sync is replaced by the master's.
    await cleanup.client(replicaNode.client()).call('FUNCTION', 'LOAD', LIBRARY('stray'));
    expect(await mc.call('FUNCTION', 'LOAD', LIBRARY('lib1'))).to.equal('lib1');
    await mc.call('FCALL', 'lib1_stamp', '1', 'f:1', 'x');
    await syncReplica();
    const direct = cleanup.client(replicaNode.client());
    const libraries = async (client: Redis): Promise<string[]> =>
      ((await client.call('FUNCTION', 'LIST')) as unknown[][]).map((lib) => String(lib[1])).sort();
    expect(await libraries(direct)).to.deep.equal(['lib1']);
    // Streaming: a library loaded now reaches the replica through the log.
    await mc.call('FUNCTION', 'LOAD', LIBRARY('lib2'));
    await mc.call('FCALL', 'lib2_stamp', '1', 'f:2', 'y');
    await mc.call('FCALL', 'lib1_stamp', '1', 'f:1', 'z');
    await waitCaughtUp(mc, rc);
    expect(await libraries(direct)).to.deep.equal(['lib1', 'lib2']);
    await expectNodesEqual(masterNode, replicaNode);
    // Read-only forms are reads: served by the confirmed replica.
    expect(await rc.call('FCALL_RO', 'lib2_get', '1', 'f:2')).to.equal(await mc.get('f:2'));
    // FUNCTION DELETE is logged too.
    await mc.call('FUNCTION', 'DELETE', 'lib1');
    await waitCaughtUp(mc, rc);
    expect(await libraries(direct)).to.deep.equal(['lib2']);
  });

  it('SCRIPT KILL from another client stops a script that never ends (it does not wait behind it on a lane)', async () => {
    const direct = cleanup.client(masterNode.client());
    await direct.config('SET', 'lua-time-limit', '10');
    const runner = cleanup.client(proxyClient(master));
    const running = runner.call('EVAL', 'while true do end', '0').then(() => 'returned', (err: Error) => err.message);
    await new Promise((r) => setTimeout(r, 300));
    expect(await mc.call('SCRIPT', 'KILL')).to.equal('OK');
    expect(await running).to.match(/killed by user/i);
    expect(await mc.call('PING')).to.equal('PONG');
  });

  it('a script the node refuses (NOREPLICAS) gets that refusal, as directly', async () => {
    const direct = cleanup.client(masterNode.client());
    await direct.config('SET', 'min-replicas-to-write', '1');
    try {
      const script = ['EVAL', "return redis.call('set', KEYS[1], 1)", '1', 'refused:x'];
      const expected = await direct.call(...(script as [string, ...string[]])).catch((err: Error) => err.message);
      expect(expected).to.match(/^NOREPLICAS /);
      expect(await mc.call(...(script as [string, ...string[]])).catch((err: Error) => err.message)).to.equal(expected);
    } finally {
      await direct.config('SET', 'min-replicas-to-write', '0');
    }
    expect(await mc.call('EVAL', "return redis.call('set', KEYS[1], 1)", '1', 'refused:x')).to.equal('OK');
  });

  it('under OOM a flag-less EVAL that only reads runs and one that writes is refused, as directly (the node meets a bare EVAL, not one inside MULTI)', async () => {
    const direct = cleanup.client(masterNode.client());
    await direct.set('oom:x', '123');
    await direct.config('SET', 'maxmemory', '1');
    try {
      const scripts: string[][] = [
        ['EVAL', "return redis.call('get', KEYS[1])", '1', 'oom:x'],
        ['EVAL', "redis.call('set', KEYS[1], 1) return 1", '1', 'oom:x'],
      ];
      for (const script of scripts) {
        const expected = await direct.call(...(script as [string, ...string[]])).catch((err: Error) => `err ${err.message}`);
        expect(await mc.call(...(script as [string, ...string[]])).catch((err: Error) => `err ${err.message}`), script[1]).to.equal(expected);
      }
    } finally {
      await direct.config('SET', 'maxmemory', '0');
    }
    expect(await mc.get('oom:x')).to.equal('123');
  });

  it("while a script runs past the node's busy threshold, other clients get its -BUSY (EXEC: EXECABORT … BUSY) and its own client's next command waits for it, as directly", async () => {
    const direct = cleanup.client(masterNode.client());
    await direct.config('SET', 'lua-time-limit', '10');
    const transcript = async (connect: () => Redis): Promise<string[]> => {
      const runner = cleanup.client(connect());
      const other = cleanup.client(connect());
      const killer = cleanup.client(connect());
      const out: string[] = [];
      const said = (p: Promise<unknown>): Promise<void> => p.then((v) => void out.push(`ok ${JSON.stringify(v)}`), (err: Error) => void out.push(`err ${err.message}`));
      await other.set('busy:x', '1');
      const running = runner.call('EVAL', 'while true do end', '0').then(() => 'returned', (err: Error) => err.message);
      await new Promise((r) => setTimeout(r, 300));
      // The runner's own next command: the node reads it only after the script (no -BUSY for it).
      const own = runner.ping().then((v) => `own ${v}`, (err: Error) => `own err ${err.message}`);
      await said(other.get('busy:x'));
      await said(other.ping());
      await said(other.call('MULTI'));
      await said(other.call('INCR', 'busy:x'));
      await said(other.call('EXEC'));
      await said(killer.call('SCRIPT', 'KILL'));
      out.push((await running).replace(/script: \S+/, 'script: SHA'));
      out.push(await own);
      await said(other.get('busy:x'));
      return out;
    };
    const expected = await transcript(() => masterNode.client());
    expect(expected[0]).to.match(/^err BUSY Redis is busy running a script/);
    expect(expected[1]).to.match(/^err BUSY/);
    expect(expected[4]).to.match(/^err EXECABORT Transaction discarded because of: BUSY/);
    expect(expected[7]).to.equal('own PONG');
    expect(await transcript(() => proxyClient(master))).to.deep.equal(expected);
  });

  it('EVAL_RO, EVALSHA_RO and FCALL_RO on a replica before confirmation are refused like reads; EVAL like writes', async () => {
    const unreachable = master.port; // a master proxy that is stopped: the replica never confirms
    mc.disconnect();
    await master.stop();
    expect(await rc.call('SLAVEOF', '127.0.0.1', String(unreachable))).to.equal('OK');
    const refusal = async (...args: string[]): Promise<string> => rc.call(args[0], ...args.slice(1)).then((r) => `answered ${String(r)}`, (e: Error) => e.message);
    const read = await refusal('GET', 'k');
    expect(read).to.match(/^MASTERDOWN/);
    expect(await refusal('EVAL_RO', "return redis.call('GET', KEYS[1])", '1', 'k')).to.match(/^MASTERDOWN/);
    expect(await refusal('EVALSHA_RO', 'a'.repeat(40), '1', 'k')).to.match(/^MASTERDOWN/);
    expect(await refusal('FCALL_RO', 'f', '1', 'k')).to.match(/^MASTERDOWN/);
    expect(await refusal('EVAL', 'return 1', '0')).to.match(/^READONLY/);
    expect(await refusal('FUNCTION', 'LOAD', LIBRARY('x'))).to.match(/^READONLY/);
    expect(await refusal('SCRIPT', 'LOAD', 'return 1')).to.match(/^READONLY/);
  });
});

describe('scripting through the proxy (real Pika)', function () {
  this.timeout(60_000);
  const cleanup = new Cleanup();
  after(async () => {
    await cleanup.run();
  });

  it("EVAL, FCALL and FUNCTION LOAD get Pika's own error and log nothing", async () => {
    const node = await cleanup.node('pika');
    const proxy = await cleanup.proxy(node);
    const pc = cleanup.client(proxyClient(proxy));
    const direct = cleanup.client(node.client());
    const before = (await replInfo(pc)).master_repl_offset;
    for (const command of [['EVAL', "redis.call('SET', KEYS[1], 'v')", '1', 'k'], ['FCALL', 'f', '1', 'k'], ['FUNCTION', 'LOAD', LIBRARY('p')]]) {
      const viaProxy = await pc.call(command[0], ...command.slice(1)).then((r) => `answered ${String(r)}`, (e: Error) => e.message);
      const viaNode = await direct.call(command[0], ...command.slice(1)).then((r) => `answered ${String(r)}`, (e: Error) => e.message);
      expect(viaProxy, command[0]).to.equal(viaNode);
      expect(viaProxy, command[0]).to.not.match(/pika-sync-proxy/);
    }
    expect((await replInfo(pc)).master_repl_offset).to.equal(before);
    expect(await direct.exists('k')).to.equal(0);
  });

  it('a full sync from a Pika master still confirms (its snapshot has no function record)', async () => {
    const masterNode = await cleanup.node('pika');
    const replicaNode = await cleanup.node('pika');
    const master = await cleanup.proxy(masterNode);
    const replica = await cleanup.proxy(replicaNode, FAST_RETRY);
    const mc = cleanup.client(proxyClient(master));
    const rc = cleanup.client(proxyClient(replica));
    await mc.set('pk:1', 'v1');
    expect(await rc.call('SLAVEOF', '127.0.0.1', String(master.port))).to.equal('OK');
    await waitConfirmed(replica, rc);
    await mc.set('pk:2', 'v2');
    await waitCaughtUp(mc, rc);
    await expectNodesEqual(masterNode, replicaNode);
    expect(await rc.mget('pk:1', 'pk:2')).to.deep.equal(['v1', 'v2']);
  });
});

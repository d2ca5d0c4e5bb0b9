/**
 * DEBUG RELOAD NOSAVE through a master proxy (debug-commands.ts): the node loads a file some
 * earlier save left, a change no write-log entry describes. The master proxy starts a new log
 * generation, so a replica following it runs a full sync to the reloaded data instead of keeping
 * what the log told it. Real redis-servers (DEBUG enabled) behind real proxy processes; Pika has
 * no DEBUG, its own error reaches the client and the log goes on.
 */
import { expect } from 'chai';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';
import { Cleanup, FAST_RETRY, expectNodesEqual, parseInfo, waitFor } from './replica-e2e-fixture';

const DEBUG_ON = ['--enable-debug-command', 'yes'];

async function logId(c: RespClient): Promise<string> {
  return parseInfo(await c.text('INFO', 'replication')).master_replid;
}

describe('DEBUG RELOAD NOSAVE and the write log', function () {
  this.timeout(120_000);
  let cleanup: Cleanup;

  beforeEach(() => {
    cleanup = new Cleanup();
  });

  afterEach(async () => {
    await cleanup.run();
  });

  /** Two redis-servers with DEBUG behind two proxies (the replica not attached yet), a client to each proxy. */
  async function masterAndReplica() {
    const masterNode = cleanup.add(await RedisServer.start({ extraArgs: DEBUG_ON }), (s) => s.stop());
    const replicaNode = cleanup.add(await RedisServer.start({ extraArgs: DEBUG_ON }), (s) => s.stop());
    const master = await cleanup.proxy(masterNode);
    const replica = await cleanup.proxy(replicaNode, FAST_RETRY);
    const m = cleanup.add(await RespClient.connect(master.port), (c) => c.close());
    const r = cleanup.add(await RespClient.connect(replica.port), (c) => c.close());
    return { masterNode, replicaNode, master, m, r };
  }

  it('redis: the node reloads an older file; the master starts a new log generation and its replica full-syncs to the reloaded data', async () => {
    const { masterNode, replicaNode, master, m, r } = await masterAndReplica();

    expect(await m.text('SET', 'k', 'logged')).to.equal('+OK\r\n');
    expect(await m.text('SET', 'only-logged', '1')).to.equal('+OK\r\n');
    expect(await r.text('REPLICAOF', '127.0.0.1', String(master.port))).to.equal('+OK\r\n');
    await waitFor('replica confirmed with the logged value', async () => (await r.text('GET', 'k')) === '$6\r\nlogged\r\n');

    // Saving first, RELOAD reads back the same data: the log goes on. (Its file is the one
    // NOSAVE loads below.)
    const generation = await logId(m);
    expect(await m.text('DEBUG', 'RELOAD')).to.equal('+OK\r\n');
    expect(await logId(m)).to.equal(generation);
    // A failed reload before any load (a bad option) changes nothing either.
    expect(await m.text('DEBUG', 'RELOAD', 'BADOPTION')).to.match(/^-ERR DEBUG RELOAD only supports/);
    expect(await logId(m)).to.equal(generation);

    // Back to the file RELOAD saved: what was written since is gone.
    expect(await m.text('SET', 'k', 'after-save')).to.equal('+OK\r\n');
    expect(await m.text('SET', 'gone-after-reload', '1')).to.equal('+OK\r\n');
    expect(await m.text('DEBUG', 'RELOAD', 'NOSAVE')).to.equal('+OK\r\n');
    expect(await m.text('GET', 'k')).to.equal('$6\r\nlogged\r\n');
    expect(await m.text('EXISTS', 'gone-after-reload')).to.equal(':0\r\n');
    expect(await logId(m)).to.not.equal(generation);

    // The replica had k=after-save and gone-after-reload from the log; only a new full sync
    // brings it to the reloaded data (reads are refused until that sync is confirmed).
    await waitFor('replica resynced to the reloaded data', async () => (await r.text('EXISTS', 'gone-after-reload')) === ':0\r\n', 60_000);
    expect(await r.text('GET', 'k')).to.equal('$6\r\nlogged\r\n');
    expect(await m.text('SET', 'after-reload', '1')).to.equal('+OK\r\n');
    await waitFor('replica follows the new log', async () => (await r.text('GET', 'after-reload')) === '$1\r\n1\r\n');
    await expectNodesEqual(masterNode, replicaNode);

    // On the replica, NOSAVE would load data its master's log does not describe: refused.
    expect(await r.text('DEBUG', 'RELOAD', 'NOSAVE')).to.equal("-ERR DEBUG RELOAD NOSAVE is refused by pika-sync-proxy on a replica: it would load data its master's write log does not describe\r\n");
    expect(await r.text('GET', 'after-reload')).to.equal('$1\r\n1\r\n');
  });

  it('redis: a DEBUG RELOAD whose load fails on a replica starts a new full sync from its master', async () => {
    const { master, m, r } = await masterAndReplica();
    // A library and no key: NOFLUSH then fails on the library already loaded (Redis answers an
    // error; a duplicate key would crash it instead).
    expect(await m.text('FUNCTION', 'LOAD', "#!lua name=lib1\nredis.register_function('f1', function() return 'hi' end)")).to.equal('$4\r\nlib1\r\n');
    expect(await r.text('REPLICAOF', '127.0.0.1', String(master.port))).to.equal('+OK\r\n');
    const confirmedAt = async (): Promise<unknown> => (JSON.parse((await r.call('SYNCPROXY', 'STATUS', 'JSON')).toString().split('\r\n')[1]) as { confirmedAt: unknown }).confirmedAt;
    const first = await waitFor('replica confirmed', confirmedAt);
    expect(await r.text('FUNCTION', 'LIST')).to.include('lib1');

    expect(await r.text('DEBUG', 'RELOAD', 'NOFLUSH')).to.match(/^-ERR Error trying to load the RDB dump/);
    const second = await waitFor('replica confirmed again', async () => {
      const at = await confirmedAt();
      return at !== null && at !== first ? at : null;
    });
    expect(second).to.not.equal(first);
    expect(await r.text('FUNCTION', 'LIST')).to.include('lib1');
    // A reload that loaded (saved first) leaves the confirmed sync alone.
    expect(await r.text('DEBUG', 'RELOAD')).to.equal('+OK\r\n');
    expect(await confirmedAt()).to.equal(second);
  });

  it('pika: DEBUG RELOAD NOSAVE gets Pika\'s own error and the write log goes on', async () => {
    const node = await cleanup.node('pika');
    const proxy = await cleanup.proxy(node);
    const c = cleanup.add(await RespClient.connect(proxy.port), (x) => x.close());
    const direct = cleanup.add(await RespClient.connect(node.port), (x) => x.close());
    expect(await c.text('SET', 'k', 'v')).to.equal('+OK\r\n');
    const generation = await logId(c);
    const answer = await c.text('DEBUG', 'RELOAD', 'NOSAVE');
    expect(answer).to.equal(await direct.text('DEBUG', 'RELOAD', 'NOSAVE'));
    expect(answer).to.match(/^-ERR /);
    expect(await logId(c)).to.equal(generation);
    expect(await c.text('GET', 'k')).to.equal('$1\r\nv\r\n');
  });
});

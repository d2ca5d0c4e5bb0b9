/**
 * Protected mode (built CLI, real redis-server): a proxy bound to 0.0.0.0 without --requirepass
 * serves only loopback clients, on the RESP port (`-DENIED ...`, then closed) and on the gRPC
 * sync port (PROTECTED_MODE, PERMISSION_DENIED); a replica that SLAVEOFs it from a non-loopback
 * address fails at once with a fatal PROTECTED_MODE; --requirepass or --protected-mode no serve
 * the non-loopback client.
 *
 * The non-loopback client is this machine itself, reached through its own non-loopback IPv4
 * address: the connection's peer address is then that address, not 127.0.0.1.
 */
import { expect } from 'chai';
import os from 'node:os';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { PROTECTED_MODE_MESSAGE, isLoopbackAddress, isLoopbackBind, peerAddress } from '../src/server/protected-mode';
import { SyncClient } from '../src/sync/sync-client';
import { Replica, infoReplication, readReply, redisClient, replicaFlags, waitBackendUp } from './faults-fixture';
import { ProxyProcess } from './helpers/proxy-process';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';

const REPLICA_ID = { runId: 'd'.repeat(40), host: '127.0.0.1', port: 1 };

/** A non-loopback IPv4 address of this machine; none is a broken test environment, not a skip. */
function nonLoopbackIPv4(): string {
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal && !isLoopbackAddress(a.address)) return a.address;
  }
  throw new Error(`protected-mode tests need a non-loopback IPv4 address on this machine; os.networkInterfaces() has none: ${JSON.stringify(os.networkInterfaces())}`);
}

describe('protected mode: helpers', () => {
  it('loopback addresses: 127.0.0.0/8, ::1, IPv4-mapped 127.x; nothing else', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '[::1]', '0:0:0:0:0:0:0:1']) expect(isLoopbackAddress(a), a).to.equal(true);
    for (const a of ['10.0.0.1', '192.0.2.2', '::ffff:10.0.0.1', '::', '0.0.0.0', 'fe80::1', '', undefined, 'localhost', '128.0.0.1']) expect(isLoopbackAddress(a), String(a)).to.equal(false);
    expect(isLoopbackBind('localhost')).to.equal(true);
    expect(isLoopbackBind('0.0.0.0')).to.equal(false);
  });

  it('grpc-js peer strings', () => {
    expect(peerAddress('192.0.2.2:4567')).to.equal('192.0.2.2');
    expect(peerAddress('::ffff:127.0.0.1:4567')).to.equal('::ffff:127.0.0.1');
    expect(peerAddress('[::1]:4567')).to.equal('::1');
  });
});

describe('protected mode (CLI, --bind 0.0.0.0)', function () {
  this.timeout(90_000);
  const ip = nonLoopbackIPv4();
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    while (cleanups.length) await Promise.resolve(cleanups.pop()!()).catch(() => undefined);
  });

  async function startMaster(extraArgs: string[]): Promise<ProxyProcess> {
    const node = await RedisServer.start();
    cleanups.push(() => node.stop());
    const proxy = await ProxyProcess.start({ backend: node, extraArgs: ['--bind', '0.0.0.0', ...extraArgs] });
    cleanups.push(() => proxy.stop());
    const password = extraArgs.includes('--requirepass') ? extraArgs[extraArgs.indexOf('--requirepass') + 1] : undefined;
    const c = redisClient('127.0.0.1', proxy.port, password);
    cleanups.push(() => c.disconnect());
    await waitBackendUp(c);
    await c.set('k:1', 'v1');
    return proxy;
  }

  async function resp(host: string, port: number): Promise<RespClient> {
    const c = await RespClient.connect(port, host);
    cleanups.push(() => c.close());
    return c;
  }

  function syncClient(host: string, port: number, password?: string): SyncClient {
    const c = new SyncClient({ host, port, password, rpcTimeoutMs: 10_000, logger: silentLogger() });
    cleanups.push(() => c.close());
    return c;
  }

  it(`RESP from a non-loopback address gets -DENIED saying why and how to fix it, then is closed; a loopback client is served`, async () => {
    const master = await startMaster([]);
    const remote = await resp(ip, master.port);
    const denied = (await remote.read()).toString();
    expect(denied).to.equal(`-DENIED ${PROTECTED_MODE_MESSAGE}\r\n`);
    expect(denied).to.include('pika-sync-proxy is running in protected mode because no --requirepass is set and it listens on a non-loopback address');
    expect(denied).to.include('--requirepass').and.include('--protected-mode no').and.include('bind to 127.0.0.1');
    await remote.waitClosed();
    const local = await resp('127.0.0.1', master.port);
    expect(await local.text('GET', 'k:1')).to.equal('$2\r\nv1\r\n');
    const startup = master.logEntries().find((e) => e.protection !== undefined);
    expect(startup, 'start-up line naming the protection').to.include({ protection: 'protected-mode', bind: '0.0.0.0', level: 30 });
  });

  it('gRPC sync calls from a non-loopback address fail with PROTECTED_MODE (PERMISSION_DENIED, not retryable); from loopback they are served', async () => {
    const master = await startMaster([]);
    const err = await syncClient(ip, master.syncPort).getMeta({ waitMs: 1000, replica: REPLICA_ID }).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(SyncProxyError);
    const e = err as SyncProxyError;
    expect(e.code).to.equal('PROTECTED_MODE');
    expect(e.retryable).to.equal(false);
    expect(e.details.grpcCode).to.equal(7); // PERMISSION_DENIED
    expect(e.message).to.include('running in protected mode because no --requirepass is set');
    const meta = await syncClient('127.0.0.1', master.syncPort).getMeta({ waitMs: 10_000, replica: REPLICA_ID });
    expect(meta.snapshotId).to.be.a('string').and.not.equal('');
  });

  it('a replica SLAVEOF it through the non-loopback address fails with a fatal PROTECTED_MODE after 1 attempt (no retries)', async () => {
    const master = await startMaster([]);
    const replica = await Replica.start(replicaFlags({ 'sync-max-attempts': '5' }));
    cleanups.push(() => replica.stop());
    await replica.slaveof(ip, master.port);
    const s = await replica.waitStatus('state failed', (x) => x.state === 'failed');
    expect(s.errors.map((x) => x.code), JSON.stringify(s.errors)).to.deep.equal(['PROTECTED_MODE']);
    expect(s.errors[0].retryable).to.equal(false);
    expect(s.lastError).to.match(new RegExp(`^PROTECTED_MODE: master ${ip.replace(/\./g, '\\.')}:${master.port} refused this replica: pika-sync-proxy is running in protected mode`));
    expect(s.finalError).to.match(/^RETRIES_EXHAUSTED: full sync stopped by a fatal error after 1 attempt: \[1\] PROTECTED_MODE/);
    const info = await infoReplication(replica.client);
    expect(info).to.include({ role: 'slave', sync_state: 'failed', sync_confirmed: '0' });
    expect(info.last_sync_error).to.match(/^PROTECTED_MODE: .*--requirepass/);
    expect(await readReply(replica.client)).to.match(/^MASTERDOWN full sync failed after 1 attempt: PROTECTED_MODE: /);
    // Not retried: still one attempt a while later.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await replica.status()).errors).to.have.length(1);
  });

  it('with --requirepass the non-loopback client is served (after AUTH), on RESP and on the sync port', async () => {
    const master = await startMaster(['--requirepass', 'pm-S3cret']);
    const remote = await resp(ip, master.port);
    expect(await remote.text('GET', 'k:1')).to.match(/^-NOAUTH/);
    expect(await remote.text('AUTH', 'pm-S3cret')).to.equal('+OK\r\n');
    expect(await remote.text('GET', 'k:1')).to.equal('$2\r\nv1\r\n');
    const meta = await syncClient(ip, master.syncPort, 'pm-S3cret').getMeta({ waitMs: 10_000, replica: REPLICA_ID });
    expect(meta.snapshotId).to.be.a('string').and.not.equal('');
    expect(master.logEntries().find((e) => e.protection !== undefined)).to.include({ protection: 'password' });
  });

  it('with --protected-mode no the non-loopback client is served, and the start-up log warns that nothing protects it', async () => {
    const master = await startMaster(['--protected-mode', 'no']);
    const remote = await resp(ip, master.port);
    expect(await remote.text('GET', 'k:1')).to.equal('$2\r\nv1\r\n');
    const meta = await syncClient(ip, master.syncPort).getMeta({ waitMs: 10_000, replica: REPLICA_ID });
    expect(meta.snapshotId).to.be.a('string').and.not.equal('');
    const line = master.logEntries().find((e) => e.protection !== undefined);
    expect(line).to.include({ protection: 'none', level: 40 });
    expect(String(line?.msg)).to.include('NO PROTECTION');
  });
});

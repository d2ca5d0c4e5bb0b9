/**
 * Security end to end with the built CLI: requirepass (NOAUTH / WRONGPASS), the sync service's
 * password check, TLS for the sync service (self-signed certificate made with openssl), and no
 * password in any log line even at --log-level debug.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { SyncClient } from '../src/sync/sync-client';
import { ProxyProcess } from './helpers/proxy-process';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';
import { Replica, readReply, redisClient, replicaFlags, seed, waitBackendUp } from './faults-fixture';

const MASTER_PW = 'Master-S3cret-pw-4711';
const REPLICA_PW = 'Replica-S3cret-pw-0815';
const WRONG_PW = 'Wrong-S3cret-pw-9999';
const REPLICA_ID = { runId: 'c'.repeat(40), host: '127.0.0.1', port: 1 };

/** A self-signed certificate for 127.0.0.1 (key.pem, cert.pem) in `dir`. */
function makeCert(dir: string, name: string): { cert: string; key: string } {
  const cert = path.join(dir, `${name}-cert.pem`);
  const key = path.join(dir, `${name}-key.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  return { cert, key };
}

async function expectSyncCallRefused(client: SyncClient, auth: 'missing' | 'wrong'): Promise<void> {
  const err = await client.getMeta({ waitMs: 1000, replica: REPLICA_ID }).then(() => undefined, (e: unknown) => e);
  expect(err).to.be.instanceOf(SyncProxyError);
  expect((err as SyncProxyError).code).to.equal('AUTH_FAILED');
  expect((err as SyncProxyError).details.auth).to.equal(auth);
  expect((err as SyncProxyError).retryable).to.equal(false);
}

describe('security: passwords, sync service auth, TLS, log hygiene (CLI)', function () {
  this.timeout(60_000);
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    while (cleanups.length) await Promise.resolve(cleanups.pop()!()).catch(() => undefined);
  });

  async function startMaster(extraArgs: string[], password?: string): Promise<ProxyProcess> {
    const node = await RedisServer.start();
    cleanups.push(() => node.stop());
    const proxy = await ProxyProcess.start({ backend: node, extraArgs });
    cleanups.push(() => proxy.stop());
    const c = redisClient('127.0.0.1', proxy.port, password);
    cleanups.push(() => c.disconnect());
    await waitBackendUp(c);
    await seed(c, 50);
    return proxy;
  }

  async function startReplica(extraArgs: string[]): Promise<Replica> {
    const replica = await Replica.start(extraArgs);
    cleanups.push(() => replica.stop());
    return replica;
  }

  it('requirepass: NOAUTH before AUTH, WRONGPASS for a wrong password, served after the right one', async () => {
    const master = await startMaster(['--requirepass', MASTER_PW], MASTER_PW);
    const anon = await RespClient.connect(master.port);
    cleanups.push(() => anon.close());
    expect(await anon.text('GET', 'k:1')).to.match(/^-NOAUTH /);
    expect(await anon.text('SYNCPROXY', 'HELLO')).to.match(/^-NOAUTH /);
    expect(await anon.text('AUTH', WRONG_PW)).to.match(/^-WRONGPASS /);
    expect(await anon.text('GET', 'k:1')).to.match(/^-NOAUTH /);
    expect(await anon.text('AUTH', MASTER_PW)).to.equal('+OK\r\n');
    expect(await anon.text('GET', 'k:1')).to.match(/^\$\d+\r\n1:v+\r\n$/);
  });

  it('the sync service refuses calls without the password or with a wrong one (AUTH_FAILED), serves the right one', async () => {
    const master = await startMaster(['--requirepass', MASTER_PW], MASTER_PW);
    const make = (password?: string): SyncClient => {
      const c = new SyncClient({ host: '127.0.0.1', port: master.syncPort, password, rpcTimeoutMs: 5000, logger: silentLogger() });
      cleanups.push(() => c.close());
      return c;
    };
    await expectSyncCallRefused(make(), 'missing');
    await expectSyncCallRefused(make(WRONG_PW), 'wrong');
    const chunkErr = await make(WRONG_PW).getChunk({ snapshotId: 'x', file: 'part-000001.resp', offset: 0, length: 10, replica: REPLICA_ID }).then(() => undefined, (e: SyncProxyError) => e);
    expect(chunkErr?.code).to.equal('AUTH_FAILED');
    const meta = await make(MASTER_PW).getMeta({ waitMs: 10_000, replica: REPLICA_ID });
    expect(meta.files.length).to.be.at.least(1);
    expect(meta.dbs).to.deep.equal([{ db: 0, records: 51 }]);
  });

  describe('TLS for the sync service', () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(path.join(os.tmpdir(), 'psp-tls-'));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('master with --tls-cert/--tls-key, replica with --tls-ca: the sync confirms over TLS', async () => {
      const { cert, key } = makeCert(dir, 'master');
      const master = await startMaster(['--tls-cert', cert, '--tls-key', key]);
      const replica = await startReplica([...replicaFlags(), '--tls-ca', cert]);
      await replica.slaveof('127.0.0.1', master.port);
      const s = await replica.waitStatus('confirmed over TLS', (x) => x.confirmed && x.state === 'streaming');
      expect(s.syncEndpoint).to.equal(`127.0.0.1:${master.syncPort}`);
      expect(await replica.client.get('k:1')).to.match(/^1:v+$/);
      expect(master.logs()).to.match(/"tls":true/);
    });

    it('replica without the CA (plaintext) or with another CA: fails explicitly, never confirms, reads refused', async () => {
      const { cert, key } = makeCert(dir, 'master2');
      const other = makeCert(dir, 'other');
      const master = await startMaster(['--tls-cert', cert, '--tls-key', key]);
      for (const flags of [[], ['--tls-ca', other.cert]]) {
        const replica = await startReplica([...replicaFlags({ 'sync-rpc-timeout-ms': '1000', 'sync-snapshot-wait-ms': '1000' }), ...flags]);
        await replica.slaveof('127.0.0.1', master.port);
        const s = await replica.waitStatus('failed', (x) => x.state === 'failed');
        expect(s.confirmed).to.equal(false);
        expect(s.errors).to.have.length(3);
        expect(s.errors[0].code).to.match(/^MASTER_(UNREACHABLE|CONNECTION_LOST|TIMEOUT)$/);
        expect(s.finalError).to.match(/^RETRIES_EXHAUSTED: full sync failed after 3 attempts: \[1\] MASTER_/);
        expect(s.errors[0].chain).to.include('GetMeta');
        expect(await readReply(replica.client)).to.match(/^MASTERDOWN full sync failed after 3 attempts: MASTER_/);
      }
    });
  });

  it('no password appears in any log line (debug level), across AUTH, SLAVEOF with masterauth and failures', async () => {
    const master = await startMaster(['--requirepass', MASTER_PW, '--log-level', 'debug'], MASTER_PW);
    const replica = await startReplica([...replicaFlags(), '--requirepass', REPLICA_PW, '--masterauth', MASTER_PW, '--log-level', 'debug']);
    const wrong = await RespClient.connect(replica.proxy.port);
    cleanups.push(() => wrong.close());
    expect(await wrong.text('AUTH', WRONG_PW)).to.match(/^-WRONGPASS /);
    expect(await wrong.text('AUTH', REPLICA_PW)).to.equal('+OK\r\n');
    await replica.slaveof('127.0.0.1', master.port);
    await replica.waitStatus('confirmed', (x) => x.confirmed && x.state === 'streaming');
    // and a failing sync with the password in play: a master that refuses it
    const bad = await startReplica([...replicaFlags(), '--masterauth', WRONG_PW, '--log-level', 'debug']);
    await bad.slaveof('127.0.0.1', master.port);
    await bad.waitStatus('failed', (x) => x.state === 'failed');
    const logs = [master.logs(), replica.proxy.logs(), bad.proxy.logs()].join('\n');
    expect(logs.length).to.be.greaterThan(1000);
    expect(logs).to.include('"level":20'); // debug lines were written
    for (const secret of [MASTER_PW, REPLICA_PW, WRONG_PW]) expect(logs, `${secret} leaked`).to.not.include(secret);
    for (const secret of [MASTER_PW, REPLICA_PW, WRONG_PW]) expect(JSON.stringify(await replica.status())).to.not.include(secret);
  });
});

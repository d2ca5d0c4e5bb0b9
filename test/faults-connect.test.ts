/**
 * Faults before any byte of the snapshot is copied: unreachable master, silent master, master
 * answers that are errors, malformed, of another protocol, of the wrong size or with hostile file
 * names, wrong masterauth, a bare redis-server as master. Each must end in an explicit state with
 * the cause named, reads refused with -MASTERDOWN, and never a confirmed sync.
 */
import { expect } from 'chai';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import * as grpc from '@grpc/grpc-js';
import { SyncProxyError } from '../src/errors';
import { encodeArgs } from '../src/resp/request-parser';
import { RedisServer } from './helpers/redis-server';
import { FakeGrpcMaster, FaultedMaster, Replica, fakeMeta, infoReplication, readReply, replicaFlags, seed } from './faults-fixture';

/** The common verdict: failed, every attempt listed with its code, reads refused, nothing confirmed. */
async function expectFailed(replica: Replica, code: string, attempts: number): Promise<void> {
  const s = await replica.waitStatus(`state failed (${code})`, (x) => x.state === 'failed');
  expect(s.confirmed).to.equal(false);
  expect(s.errors.map((e) => e.code), JSON.stringify(s.errors)).to.deep.equal(Array(attempts).fill(code));
  expect(s.lastError).to.match(new RegExp(`^${code}: `));
  expect(s.finalError).to.match(new RegExp(`^RETRIES_EXHAUSTED: full sync (failed|stopped by a fatal error) after ${attempts} attempts?: \\[1\\] ${code}`));
  const info = await infoReplication(replica.client);
  expect(info).to.include({ role: 'slave', sync_state: 'failed', sync_confirmed: '0', master_link_status: 'down', master_sync_in_progress: '0' });
  expect(info.last_sync_error).to.match(new RegExp(`^${code}: `));
  expect(await readReply(replica.client)).to.match(new RegExp(`^MASTERDOWN full sync failed after ${attempts} attempts?: ${code}: `));
}

describe('faults before the copy (CLI replica, real or fake master)', function () {
  this.timeout(60_000);
  let master: FaultedMaster;
  let replica: Replica | undefined;
  let fake: FakeGrpcMaster | undefined;

  before(async () => {
    master = await FaultedMaster.start();
    await seed(master.client, 200);
  });
  after(async () => {
    await master?.stop();
  });
  afterEach(async () => {
    await replica?.stop();
    replica = undefined;
    await fake?.stop();
    fake = undefined;
    await master.resp.setMode('pass');
    await master.sync.setMode('pass');
  });

  const masterIntact = async (): Promise<void> => {
    expect(await master.client.dbsize()).to.equal(201);
    expect(await master.client.get('k:7')).to.match(/^7:v+$/);
  };

  it('1. master unreachable at SLAVEOF (connection refused): retried with backoff, then failed with every attempt listed', async () => {
    await master.resp.setMode('refuse');
    replica = await Replica.start(replicaFlags());
    expect(await replica.slaveof('127.0.0.1', master.port)).to.equal('OK');
    await expectFailed(replica, 'MASTER_UNREACHABLE', 3);
    const s = await replica.status();
    expect(s.errors.every((e) => e.retryable)).to.equal(true);
    // the backoff is visible as a state between the attempts
    expect((s.phases as Array<{ state: string }>).filter((p) => p.state === 'backoff')).to.have.length(2);
    expect(s.finalError).to.include('[2] MASTER_UNREACHABLE').and.include('[3] MASTER_UNREACHABLE').and.include('ECONNREFUSED');
    await masterIntact();
  });

  it('1b. master unreachable, then reachable before the attempts run out: recovers by itself and confirms', async () => {
    await master.resp.setMode('refuse');
    replica = await Replica.start(replicaFlags({ 'sync-max-attempts': '20', 'sync-retry-base-ms': '100', 'sync-retry-max-ms': '300' }));
    await replica.slaveof('127.0.0.1', master.port);
    await replica.waitStatus('two failed attempts', (s) => s.failedAttempts >= 2);
    expect(await readReply(replica.client)).to.match(/^MASTERDOWN full sync not confirmed: /);
    await master.resp.setMode('pass');
    const s = await replica.waitStatus('confirmed', (x) => x.confirmed && x.state === 'streaming');
    expect((s.phases as Array<{ state: string }>).filter((p) => p.state === 'backoff').length).to.be.at.least(2);
    expect(await readReply(replica.client, 'k:7')).to.match(/^OK:7:v+$/);
    expect(await replica.client.dbsize()).to.equal(201);
    await masterIntact();
  });

  it('2. GetMeta never answered (blackholed sync port): MASTER_TIMEOUT per attempt, then failed', async () => {
    await master.sync.setMode('blackhole');
    replica = await Replica.start(replicaFlags({ 'sync-rpc-timeout-ms': '300', 'sync-snapshot-wait-ms': '1000' }));
    await replica.slaveof('127.0.0.1', master.port);
    await expectFailed(replica, 'MASTER_TIMEOUT', 3);
    expect((await replica.status()).finalError).to.include('GetMeta');
    await masterIntact();
  });

  it('2b. SYNCPROXY HELLO never answered (blackholed RESP port): MASTER_TIMEOUT per attempt, then failed', async () => {
    await master.resp.setMode('blackhole');
    replica = await Replica.start(replicaFlags({ 'sync-rpc-timeout-ms': '300' }));
    await replica.slaveof('127.0.0.1', master.port);
    await expectFailed(replica, 'MASTER_TIMEOUT', 3);
    await masterIntact();
  });

  it('3a. master answers GetMeta with an error status: the master\'s code is kept, retried, then failed', async () => {
    fake = await FakeGrpcMaster.start({ getMeta: () => new SyncProxyError('SNAPSHOT_BUILD_FAILED', 'the node went away during the build') });
    replica = await Replica.start(replicaFlags());
    await replica.slaveof('127.0.0.1', fake.port);
    await expectFailed(replica, 'SNAPSHOT_BUILD_FAILED', 3);
    expect((await replica.status()).lastError).to.include('the node went away during the build');
    expect(fake.calls.getMeta).to.equal(3);
    expect(fake.calls.getChunk).to.equal(0);
  });

  it('3b. a foreign gRPC error without a catalogue code (UNIMPLEMENTED) is NOT_A_SYNC_PROXY, fatal', async () => {
    fake = await FakeGrpcMaster.start({ getMeta: () => Object.assign(new Error('nope'), { code: grpc.status.UNIMPLEMENTED, details: 'method not found' }) });
    replica = await Replica.start(replicaFlags());
    await replica.slaveof('127.0.0.1', fake.port);
    await expectFailed(replica, 'NOT_A_SYNC_PROXY', 1);
  });

  it('3e. a partial manifest whose next answer changes a file already announced: MALFORMED_RESPONSE, retried, failed', async () => {
    // A well-formed (empty) snapshot file, so its early load succeeds and only the manifest is wrong.
    const data = Buffer.concat([encodeArgs(['PSP.FILE', '1', 'snap-fake-1', 'part-000001.resp']), encodeArgs(['PSP.EOF', '0'])]);
    const first = { name: 'part-000001.resp', size: data.length, crc32c: crc32c(data) >>> 0 };
    const asked: number[] = [];
    fake = await FakeGrpcMaster.start({
      getMeta: (call) => {
        const req = call.request as { acceptPartial: boolean; knownFiles: number };
        asked.push(req.acceptPartial ? req.knownFiles : -1);
        // First the finished file; then a "complete" manifest in which that file has other bytes.
        if (req.knownFiles === 0) return fakeMeta([first], { partial: true, dbs: [] });
        return fakeMeta([{ ...first, crc32c: (first.crc32c + 1) >>> 0 }, { name: 'part-000002.resp', size: 10, crc32c: 5 }]);
      },
      getChunk: (req) => {
        const part = data.subarray(req.offset, Math.min(data.length, req.offset + req.length));
        return { snapshotId: req.snapshotId, file: req.file, offset: req.offset, data: part, crc32c: crc32c(part) >>> 0, eof: req.offset + part.length >= data.length };
      },
    });
    replica = await Replica.start(replicaFlags());
    await replica.slaveof('127.0.0.1', fake.port);
    await expectFailed(replica, 'MALFORMED_RESPONSE', 3);
    expect((await replica.status()).lastError).to.include('does not extend the one it sent before (part-000001.resp differs)');
    // Every attempt asked for a partial manifest first (0 files known), then for more than 1.
    expect(asked).to.deep.equal([0, 1, 0, 1, 0, 1]);
  });

  it('3c. malformed meta (empty snapshot id, totals that do not add up): MALFORMED_RESPONSE, retried, failed', async () => {
    let n = 0;
    fake = await FakeGrpcMaster.start({
      getMeta: () => (++n % 2 === 1 ? fakeMeta([], { snapshotId: '' }) : fakeMeta([{ name: 'part-000001.resp', size: 10, crc32c: 1 }], { totalBytes: 99 })),
    });
    replica = await Replica.start(replicaFlags());
    await replica.slaveof('127.0.0.1', fake.port);
    await expectFailed(replica, 'MALFORMED_RESPONSE', 3);
    const s = await replica.status();
    expect(s.errors[0].chain).to.include('empty snapshot id');
    expect(s.errors[1].chain).to.include('total_bytes 99');
  });

  it('3d. unknown protocol version in the meta or in HELLO: PROTOCOL_VERSION_MISMATCH, fatal after 1 attempt', async () => {
    fake = await FakeGrpcMaster.start({ getMeta: () => fakeMeta([], { protocolVersion: 7 }) });
    replica = await Replica.start(replicaFlags());
    await replica.slaveof('127.0.0.1', fake.port);
    await expectFailed(replica, 'PROTOCOL_VERSION_MISMATCH', 1);
    expect((await replica.status()).lastError).to.include('protocol 7');
    await fake.stop();

    fake = await FakeGrpcMaster.start({ getMeta: () => fakeMeta([]) }, { helloProtocol: 2 });
    await replica.slaveof('127.0.0.1', fake.port);
    await expectFailed(replica, 'PROTOCOL_VERSION_MISMATCH', 1);
    expect(fake.calls.getMeta).to.equal(0);
  });

  for (const [what, claim, real] of [['longer', 600, 500], ['shorter', 400, 500]] as const) {
    it(`6. a file ${what} than the meta says: SIZE_MISMATCH, retried, failed, nothing loaded`, async () => {
      const data = Buffer.alloc(real, 'x');
      fake = await FakeGrpcMaster.start({
        getMeta: () => fakeMeta([{ name: 'part-000001.resp', size: claim, crc32c: crc32c(data) >>> 0 }]),
        getChunk: (req) => {
          // the master's real file has `real` bytes whatever the manifest claimed
          const part = data.subarray(req.offset, Math.min(real, req.offset + req.length));
          return { snapshotId: req.snapshotId, file: req.file, offset: req.offset, data: part, crc32c: crc32c(part) >>> 0, eof: req.offset + part.length >= real };
        },
      });
      replica = await Replica.start(replicaFlags({ 'sync-chunk-size': '4096' }));
      const nodeClient = replica.node.client();
      await nodeClient.set('replica-own', '1');
      await replica.slaveof('127.0.0.1', fake.port);
      await expectFailed(replica, 'SIZE_MISMATCH', 3);
      expect((await replica.status()).lastError).to.include(what === 'longer' ? 'end of file at 500, the manifest size is 600' : 'goes on past the manifest size 400');
      // the load never began: the replica node was not touched
      expect(await nodeClient.get('replica-own')).to.equal('1');
      nodeClient.disconnect();
    });
  }

  it('12. wrong masterauth: fatal AUTH_FAILED after exactly 1 attempt (no retry storm), password not echoed', async () => {
    const secured = await FaultedMaster.start(['--requirepass', 'master-secret-pw']);
    try {
      replica = await Replica.start(replicaFlags({ masterauth: 'wrong-secret-pw', 'sync-max-attempts': '5' }));
      await replica.slaveof('127.0.0.1', secured.port);
      await expectFailed(replica, 'AUTH_FAILED', 1);
      // no further connection attempts after the fatal one
      const accepted = secured.resp.counters.connectionsAccepted;
      await new Promise((r) => setTimeout(r, 300));
      expect(secured.resp.counters.connectionsAccepted).to.equal(accepted);
      const s = await replica.status();
      expect(JSON.stringify(s)).to.not.include('wrong-secret-pw').and.not.include('master-secret-pw');
    } finally {
      await secured.stop();
    }
  });

  it('13. SLAVEOF a bare redis-server: fatal NOT_A_SYNC_PROXY with a clear message', async () => {
    const bare = await RedisServer.start();
    try {
      replica = await Replica.start(replicaFlags());
      await replica.slaveof('127.0.0.1', bare.port);
      await expectFailed(replica, 'NOT_A_SYNC_PROXY', 1);
      expect((await replica.status()).lastError).to.include(`127.0.0.1:${bare.port} is not a pika-sync-proxy`).and.include('must be a pika-sync-proxy in front of the node');
    } finally {
      await bare.stop();
    }
  });

  it('14. hostile file names or snapshot id in the meta: fatal HOSTILE_FILE_NAME, nothing written outside staging', async () => {
    const passwdBefore = statSync('/etc/passwd').mtimeMs;
    const hostile: Array<Parameters<typeof fakeMeta>> = [
      [[{ name: '../x', size: 4, crc32c: 0 }]],
      [[{ name: '/etc/passwd', size: 4, crc32c: 0 }]],
      [[{ name: 'part-000001.resp', size: 4, crc32c: 0 }], { snapshotId: '../../evil' }],
    ];
    let current = 0;
    fake = await FakeGrpcMaster.start({
      getMeta: () => fakeMeta(...hostile[current]),
      getChunk: (req) => ({ snapshotId: req.snapshotId, file: req.file, offset: req.offset, data: Buffer.from('EVIL'), crc32c: crc32c(Buffer.from('EVIL')) >>> 0, eof: true }),
    });
    replica = await Replica.start(replicaFlags());
    for (current = 0; current < hostile.length; current++) {
      await replica.slaveof('127.0.0.1', fake.port);
      await expectFailed(replica, 'HOSTILE_FILE_NAME', 1);
    }
    expect(fake.calls.getChunk).to.equal(0);
    const dataDir = replica.proxy.dataDir;
    for (const escaped of [path.join(dataDir, 'replica', 'staging', 'x'), path.join(dataDir, 'evil'), path.join(dataDir, 'replica', 'x')]) {
      expect(existsSync(escaped), escaped).to.equal(false);
    }
    expect(statSync('/etc/passwd').mtimeMs).to.equal(passwdBefore);
  });
});

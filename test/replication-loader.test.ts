import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import type Redis from 'ioredis';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { countKeys, loadSnapshot } from '../src/replication/loader';
import { NodePipeline, probeNodeAt, probeVia } from '../src/replication/node-pipeline';
import { probeNodeProfile } from '../src/backend/node-profile';
import { LoadBatch, LoadedKeys, keyHash } from '../src/replication/load-batch';
import { LaneRouter, loadFile } from '../src/replication/load-file';
import { RequestParser } from '../src/resp/request-parser';
import { laneOfKey } from '../src/server/lanes';
import type { Manifest } from '../src/source/types';
import { RedisServer } from './helpers/redis-server';
import { PikaServer } from './helpers/pika-server';
import { LaneLoadObserved, laneLoadRecords, loadThroughLanes } from './load-lanes-fixture';
import { DirSnapshotStore, tempDir, writeRawFile } from './replication-fixture';

const SNAP = 'snap-loader-1';

function manifestFor(files: Array<{ name: string; size: number }>, dbs: Array<{ db: number; records: number }>): Manifest {
  return { formatVersion: 1, snapshotId: SNAP, logId: 'log-1', logOffset: 0, createdAtMs: Date.now(), files: files.map((f) => ({ ...f, crc32c: 0 })), dbs, totalBytes: files.reduce((s, f) => s + f.size, 0) };
}

async function expectRejects(p: Promise<unknown>, code: string, text?: RegExp): Promise<SyncProxyError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(SyncProxyError);
    expect((err as SyncProxyError).code, (err as Error).message).to.equal(code);
    if (text) expect((err as Error).message).to.match(text);
    return err as SyncProxyError;
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

describe('replication loader (real redis-server)', function () {
  let server: RedisServer;
  let client: Redis;
  let dir: string;
  const node = (): { host: string; port: number } => ({ host: server.host, port: server.port });

  beforeEach(async () => {
    server = await RedisServer.start({ pikaProfile: true });
    client = server.client();
    dir = await tempDir('psp-loader-');
  });
  afterEach(async () => {
    client?.disconnect();
    await server.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('loads a snapshot written by the real SnapshotWriter (several files, dbs, big key split with PSP.PART, TTL) and replaces old data', async () => {
    await client.set('stale', 'old data');
    const store = new DirSnapshotStore(dir);
    const members: string[] = [];
    for (let i = 0; i < 3000; i++) members.push(`member-${i}`);
    const future = Date.now() + 3_600_000;
    const manifest = await store.publish(
      [
        { db: 0, key: 'str', type: 'string', commands: [['SET', 'str', 'v1']] },
        { db: 0, key: 'ttl', type: 'string', expireAtMs: future, commands: [['SET', 'ttl', 'x'], ['PEXPIREAT', 'ttl', String(future)]] },
        { db: 0, key: 'big', type: 'set', commands: [['SADD', 'big', ...members.slice(0, 1500)], ['SADD', 'big', ...members.slice(1500)]] },
        { db: 3, key: 'h', type: 'hash', commands: [['HMSET', 'h', 'a', '1', 'b', '2']] },
        { db: 3, key: 'l', type: 'list', commands: [['RPUSH', 'l', 'x', 'y', 'z']] },
      ],
      { logId: 'log-1', logOffset: 7, fileSize: 8 * 1024, snapshotId: SNAP },
    );
    expect(manifest.files.length).to.be.greaterThan(1);
    const files = manifest.files.map((f) => ({ name: f.name, path: `${dir}/${SNAP}/${f.name}` }));
    const result = await loadSnapshot({ node: node(), manifest, files, logger: silentLogger(), signal: new AbortController().signal, maxInFlight: 50 });

    expect(result.dbs.find((d) => d.db === 0)).to.include({ records: 3, distinctKeys: 3, volatileKeys: 1, nodeKeys: 3 });
    expect(result.dbs.find((d) => d.db === 3)).to.include({ records: 2, distinctKeys: 2, nodeKeys: 2 });
    expect(await client.exists('stale')).to.equal(0);
    expect(await client.get('str')).to.equal('v1');
    expect(await client.scard('big')).to.equal(3000);
    expect(await client.pttl('ttl')).to.be.greaterThan(3_000_000);
    const db3 = server.client(3);
    expect(await db3.hgetall('h')).to.deep.equal({ a: '1', b: '2' });
    expect(await db3.lrange('l', 0, -1)).to.deep.equal(['x', 'y', 'z']);
    db3.disconnect();
  });

  it('a record loaded twice counts one distinct key (DEL answers 1) and the node count still matches', async () => {
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['PSP.KEY', '0', 'k', 'string', '-1'], ['SET', 'k', 'first'],
      ['PSP.KEY', '0', 'k', 'string', '-1'], ['SET', 'k', 'second'],
      ['PSP.EOF', '2'],
    ]);
    const result = await loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 2 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal });
    expect(result.dbs[0]).to.include({ records: 2, distinctKeys: 1, nodeKeys: 1 });
    expect(await client.get('k')).to.equal('second');
  });

  it('variadic DEL groups: a duplicate key inside a group and db changes inside one batch keep values and counts exact (plain and volatile)', async () => {
    const future = String(Date.now() + 3_600_000);
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['PSP.KEY', '0', 'a', 'string', '-1'], ['SET', 'a', 'a1'],
      ['PSP.KEY', '0', 'b', 'string', future], ['SET', 'b', 'b1'], ['PEXPIREAT', 'b', future],
      ['PSP.KEY', '0', 'l', 'list', '-1'], ['RPUSH', 'l', 'x'],
      // duplicate inside the group: its DEL must come after the first record's commands
      ['PSP.KEY', '0', 'l', 'list', '-1'], ['RPUSH', 'l', 'y'],
      ['PSP.KEY', '0', 'c', 'string', future], ['SET', 'c', 'c1'], ['PEXPIREAT', 'c', future],
      // db change inside the batch, the same key name in another db
      ['PSP.KEY', '1', 'a', 'string', '-1'], ['SET', 'a', 'db1'],
      ['PSP.KEY', '1', 'v', 'string', future], ['SET', 'v', 'v1'], ['PEXPIREAT', 'v', future],
      // back to db 0: duplicates of keys from an earlier group (DEL finds them)
      ['PSP.KEY', '0', 'b', 'string', future], ['SET', 'b', 'b2'], ['PEXPIREAT', 'b', future],
      ['PSP.KEY', '0', 'a', 'string', '-1'], ['SET', 'a', 'a2'],
      ['PSP.KEY', '0', 'd', 'string', '-1'], ['SET', 'd', 'd1'],
      ['PSP.EOF', '10'],
    ]);
    const result = await loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 8 }, { db: 1, records: 2 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal });
    expect(result.dbs.find((d) => d.db === 0)).to.include({ records: 8, distinctKeys: 5, volatileKeys: 2, nodeKeys: 5 });
    expect(result.dbs.find((d) => d.db === 1)).to.include({ records: 2, distinctKeys: 2, volatileKeys: 1, nodeKeys: 2 });
    expect(await client.get('a')).to.equal('a2');
    expect(await client.get('b')).to.equal('b2');
    expect(await client.lrange('l', 0, -1)).to.deep.equal(['y']);
    expect(await client.pttl('c')).to.be.greaterThan(3_000_000);
    const db1 = server.client(1);
    expect(await db1.get('a')).to.equal('db1');
    db1.disconnect();
  });

  it('plain string records go to the node as one MSET per DEL group; strings with a TTL and other shapes stay single commands', async () => {
    const future = String(Date.now() + 3_600_000);
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['PSP.KEY', '0', 's1', 'string', '-1'], ['SET', 's1', 'v1'],
      ['PSP.KEY', '0', 's2', 'string', '-1'], ['set', 's2', ''],
      ['PSP.KEY', '0', 'bin', 'string', '-1'], ['SET', 'bin', 'a\r\nb'],
      ['PSP.KEY', '0', 't', 'string', future], ['SET', 't', 'ttl'], ['PEXPIREAT', 't', future],
      ['PSP.KEY', '0', 'h', 'hash', '-1'], ['HMSET', 'h', 'f', 'v'],
      // a duplicate closes the group: the second value must win, counted as one key
      ['PSP.KEY', '0', 's1', 'string', '-1'], ['SET', 's1', 'v2'],
      ['PSP.KEY', '0', 'kept', 'string', '-1'], ['SET', 'kept', 'x', 'KEEPTTL'],
      ['PSP.EOF', '7'],
    ]);
    await client.config('RESETSTAT');
    const result = await loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 7 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal });
    expect(result.dbs[0]).to.include({ records: 7, distinctKeys: 6, volatileKeys: 1, nodeKeys: 6 });
    expect(await client.mget('s1', 's2', 'bin', 't', 'kept')).to.deep.equal(['v2', '', 'a\r\nb', 'ttl', 'x']);
    expect(await client.pttl('t')).to.be.greaterThan(3_000_000);
    const stats = await client.info('commandstats');
    const calls = (name: string): number => commandCalls(stats, name);
    // The loader probes its node first (node-profile.ts): count the probe's own SETs apart.
    await client.config('RESETSTAT');
    const probe = await NodePipeline.connect(node(), new AbortController().signal);
    await probeNodeProfile(probeVia(probe));
    probe.close();
    const probeSets = commandCalls(await client.info('commandstats'), 'set');
    // s1, s2, bin in the first group, s1 again in the second: two MSETs; t (TTL) and kept (4 args) as SET.
    expect(calls('mset')).to.equal(2);
    expect(calls('set') - probeSets).to.equal(2);
  });

  it('variadic DEL groups: thousands of records (groups split at MAX_GROUP_KEYS and chunk ends) with duplicates count exactly', async () => {
    const commands: string[][] = [['PSP.FILE', '1', SNAP, 'part-000001.resp']];
    let records = 0;
    for (let i = 0; i < 5000; i++) {
      const key = i % 1500 === 1499 ? `k${i - 1200}` : i % 7 === 3 ? `k${i - 3}` : `k${i}`; // repeats: near (same group) and far
      commands.push(['PSP.KEY', '0', key, 'hash', '-1'], ['HSET', key, `f${i}`, 'x'.repeat(300)]);
      records++;
    }
    commands.push(['PSP.EOF', String(records)]);
    const f = await writeRawFile(dir, 'part-000001.resp', commands);
    const result = await loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records }]), files: [f], logger: silentLogger(), signal: new AbortController().signal });
    let distinct = 0;
    for (let i = 0; i < 5000; i++) if (!(i % 1500 === 1499 || i % 7 === 3)) distinct++;
    expect(result.dbs[0]).to.include({ records, distinctKeys: distinct, volatileKeys: 0, nodeKeys: distinct });
    // a repeated key holds only its last record's field
    expect(await client.hkeys('k0')).to.deep.equal(['f3']);
    expect(await client.hkeys('k7')).to.deep.equal(['f10']);
    expect(await client.hkeys('k299')).to.deep.equal(['f1499']);
  });

  it('PSP.KEY read in place: lower-case marker, db 12, binary keys with CRLF and spaces, an empty key, a malformed PSP.KEY refused', async () => {
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['psp.key', '12', 'a\r\nb c', 'string', '-1'], ['SET', 'a\r\nb c', '1'],
      ['PSP.KEY', '12', '', 'string', '-1'], ['SET', '', 'empty'],
      ['PSP.KEY', '12', 'a\r\nb c', 'string', '-1'], ['SET', 'a\r\nb c', '2'],
      ['PSP.KEY', '12', 'ttl', 'string', '-10'], ['SET', 'ttl', 'x'],
      ['PSP.EOF', '4'],
    ]);
    const result = await loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 12, records: 4 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal });
    expect(result.dbs[0]).to.include({ db: 12, records: 4, distinctKeys: 3, volatileKeys: 1, nodeKeys: 3 });
    const db12 = server.client(12);
    expect(await db12.get('a\r\nb c')).to.equal('2');
    expect(await db12.get('')).to.equal('empty');
    db12.disconnect();
    const bad = await writeRawFile(dir, 'part-000002.resp', [['PSP.FILE', '1', SNAP, 'part-000002.resp'], ['PSP.KEY', '0', 'k', 'string'], ['SET', 'k', '1'], ['PSP.EOF', '1']]);
    await expectRejects(loadSnapshot({ node: node(), manifest: manifestFor([bad], [{ db: 0, records: 1 }]), files: [bad], logger: silentLogger(), signal: new AbortController().signal }), 'LOAD_FAILED', /PSP\.KEY with 3 arguments/);
  });

  it('an error reply from the node is LOAD_FAILED naming the command and the node error', async () => {
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['PSP.KEY', '0', 'k', 'string', '-1'], ['SET', 'k', 'v'], ['HMSET', 'k', 'f', 'v'],
      ['PSP.EOF', '1'],
    ]);
    const err = await expectRejects(
      loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 1 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal }),
      'LOAD_FAILED',
      /hmset k.*WRONGTYPE/,
    );
    expect(err.message).to.not.include(' v '); // values are not echoed
  });

  it('a command the node lacks (Pika profile: RESTORE) is LOAD_FAILED, not skipped', async () => {
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['PSP.KEY', '0', 'k', 'string', '-1'], ['RESTORE', 'k', '0', 'payload'],
      ['PSP.EOF', '1'],
    ]);
    await expectRejects(loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 1 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal }), 'LOAD_FAILED', /restore k.*unknown command/i);
  });

  it('PSP.EOF that disagrees with the records in the file is LOAD_FAILED', async () => {
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['PSP.KEY', '0', 'a', 'string', '-1'], ['SET', 'a', '1'],
      ['PSP.EOF', '2'],
    ]);
    await expectRejects(loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 1 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal }), 'LOAD_FAILED', /PSP\.EOF says 2.*held 1/);
  });

  it('a file without PSP.EOF (truncated) or with a foreign PSP.FILE header is LOAD_FAILED', async () => {
    const truncated = await writeRawFile(dir, 'part-000001.resp', [['PSP.FILE', '1', SNAP, 'part-000001.resp'], ['PSP.KEY', '0', 'a', 'string', '-1'], ['SET', 'a', '1']]);
    await expectRejects(loadSnapshot({ node: node(), manifest: manifestFor([truncated], [{ db: 0, records: 1 }]), files: [truncated], logger: silentLogger(), signal: new AbortController().signal }), 'LOAD_FAILED', /no PSP\.EOF/);
    const foreign = await writeRawFile(dir, 'part-000002.resp', [['PSP.FILE', '1', 'other-snapshot', 'part-000002.resp'], ['PSP.EOF', '0']]);
    await expectRejects(loadSnapshot({ node: node(), manifest: manifestFor([foreign], [{ db: 0, records: 0 }]), files: [foreign], logger: silentLogger(), signal: new AbortController().signal }), 'LOAD_FAILED', /other-snapshot/);
  });

  it('records per db that differ from the manifest are COUNT_MISMATCH', async () => {
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['PSP.KEY', '0', 'a', 'string', '-1'], ['SET', 'a', '1'],
      ['PSP.KEY', '1', 'b', 'string', '-1'], ['SET', 'b', '1'],
      ['PSP.EOF', '2'],
    ]);
    await expectRejects(loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 2 }, { db: 1, records: 1 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal }), 'COUNT_MISMATCH', /db 0: 1 key records loaded, the manifest says 2/);
    await expectRejects(loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 1 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal }), 'COUNT_MISMATCH', /db 1/);
  });

  it('a key record whose commands leave no key (node count below loaded - volatile) is COUNT_MISMATCH', async () => {
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['PSP.KEY', '0', 'a', 'string', '-1'], ['SET', 'a', '1'],
      ['PSP.KEY', '0', 'gone', 'string', '-1'], ['SET', 'gone', '1'], ['DEL', 'gone'],
      ['PSP.EOF', '2'],
    ]);
    await expectRejects(loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 2 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal }), 'COUNT_MISMATCH', /holds 1 keys.*expected 2/);
  });

  it('a volatile key that expired before the count is accepted (loaded - volatile <= count <= loaded)', async () => {
    const past = Date.now() - 1000;
    const f = await writeRawFile(dir, 'part-000001.resp', [
      ['PSP.FILE', '1', SNAP, 'part-000001.resp'],
      ['PSP.KEY', '0', 'a', 'string', '-1'], ['SET', 'a', '1'],
      ['PSP.KEY', '0', 'e', 'string', String(past)], ['SET', 'e', '1'], ['PEXPIREAT', 'e', String(past)],
      ['PSP.EOF', '2'],
    ]);
    const result = await loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 2 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal });
    expect(result.dbs[0]).to.include({ distinctKeys: 2, volatileKeys: 1, nodeKeys: 1 });
  });

  it('counts keys by SCAN (the Pika path) exactly like DBSIZE', async () => {
    const pipeline = client.pipeline();
    for (let i = 0; i < 2500; i++) pipeline.set(`k${i}`, '1');
    await pipeline.exec();
    const conn = await NodePipeline.connect(node(), new AbortController().signal);
    try {
      expect(await countKeys(conn, 0, false)).to.equal(2500);
      expect(await countKeys(conn, 0, true)).to.equal(2500);
      expect(await countKeys(conn, 1, false)).to.equal(0);
    } finally {
      conn.close();
    }
  });

  it('close() with commands in flight: new sends refused, the socket kept until their replies are in, settled() waits for that', async () => {
    // Why it matters: the node runs what it has read even after the socket closes, and on Pika a
    // FLUSHALL meeting such a write deadlocks the node; a FLUSHALL after an abort waits for settled().
    const conn = await NodePipeline.connect(node(), new AbortController().signal);
    await conn.sendArgs(['BLPOP', 'no-such-list', '0.3'], () => undefined);
    await conn.sendArgs(['SET', 'sent-before-close', 'v'], () => undefined);
    conn.close();
    await expectRejects(conn.sendArgs(['SET', 'sent-after-close', 'v'], () => undefined), 'BACKEND_CONNECTION_LOST', /closed by the replica/);
    expect(await NodePipeline.settled(10_000)).to.equal(true);
    expect(await client.get('sent-before-close')).to.equal('v');
    expect(await client.exists('sent-after-close')).to.equal(0);
    const clients = String(await client.call('CLIENT', 'LIST')).trim().split('\n');
    expect(clients, 'only the test client is left on the node').to.have.length(1);
  });

  it('load lanes: 4 connections (--load-connections 4) each write, and the node then holds exactly the snapshot (big keys over several commands and files, TTLs, 2 dbs)', async () => {
    await client.set('stale', 'old data');
    const store = new DirSnapshotStore(dir);
    const manifest = await store.publish(laneLoadRecords([0, 3]), { logId: 'log-1', logOffset: 1, fileSize: 16 * 1024, snapshotId: SNAP });
    const observed: LaneLoadObserved = await loadThroughLanes(node(), dir, manifest, 4, async () => {
      const clients = String(await client.call('CLIENT', 'LIST')).trim().split('\n');
      const ownId = Number(await client.call('CLIENT', 'ID'));
      const writers = clients.filter((c) => !c.startsWith(`id=${ownId} `) && /cmd=(mset|hmset|rpush|sadd|zadd|del|pexpireat|set)\b/.test(c));
      return { loadConnections: clients.length - 1, writers: writers.length };
    });
    expect(observed.result.connections).to.equal(4);
    expect(observed.during.loadConnections, 'connections of the load on the node').to.equal(4);
    expect(observed.during.writers, 'load connections whose last command was a write').to.equal(4);
    expect(observed.content.differingKeys, JSON.stringify(observed.content.differences)).to.equal(0);
    expect(observed.content.keys).to.equal(observed.expectedKeys);
    expect(await client.exists('stale')).to.equal(0);
    const db3 = server.client(3);
    expect(await db3.lrange('list-big-0', 0, -1)).to.deep.equal(Array.from({ length: 900 }, (_, i) => `e${i}`));
    expect(await db3.pttl('ttl-7')).to.be.greaterThan(3_000_000);
    db3.disconnect();
  });

  it('load lanes: every command of a key record (its DEL, writes, later parts behind PSP.PART, expiry) goes to laneOfKey of its key, in file order, each lane SELECTing its own db', async () => {
    const store = new DirSnapshotStore(dir);
    const records = laneLoadRecords([0, 3]);
    // A duplicate record: its DEL must travel the key's lane too.
    records.push({ db: 3, key: 'list-big-1', type: 'list', commands: [['RPUSH', 'list-big-1', 'again']] });
    const manifest = await store.publish(records, { logId: 'log-1', logOffset: 1, fileSize: 16 * 1024, snapshotId: SNAP });
    const profile = await probeNodeAt(node(), new AbortController().signal);
    const sent: Array<{ lane: number; args: string[] }> = [];
    const router: LaneRouter = {
      dbs: [-1, -1, -1, -1],
      laneOf: (hash) => (hash >>> 0) % 4,
      send: async (batches: ReadonlyArray<LoadBatch | undefined>) => {
        batches.forEach((batch, lane) => {
          if (!batch) return;
          const parser = new RequestParser();
          for (const part of batch.finish()) parser.feed(part);
          for (let r = parser.next(); r; r = parser.next()) sent.push({ lane, args: r.args.map((a) => a.toString('latin1')) });
        });
      },
    };
    const state = { commands: 0, bytes: 0, loaded: new LoadedKeys() };
    const signal = new AbortController().signal;
    for (const f of manifest.files) await loadFile(router, { name: f.name, path: `${dir}/${SNAP}/${f.name}` }, { manifest, signal, profile }, new Map(), state);
    expect(manifest.files.length, 'files').to.be.greaterThan(5);
    const selected = [-1, -1, -1, -1];
    const byKey = new Map<string, string[][]>();
    for (const { lane, args } of sent) {
      const name = args[0].toUpperCase();
      if (name === 'SELECT') {
        selected[lane] = Number(args[1]);
        continue;
      }
      expect(selected[lane], `${name} on lane ${lane} before its SELECT`).to.not.equal(-1);
      const keys = name === 'MSET' ? args.filter((_, i) => i % 2 === 1) : name === 'DEL' ? args.slice(1) : [args[1]];
      for (const key of keys) {
        expect(lane, `${name} ${key}`).to.equal(laneOfKey(Buffer.from(key), 4));
        const id = `${selected[lane]}/${key}`;
        if (!byKey.has(id)) byKey.set(id, []);
        byKey.get(id)!.push(args);
      }
    }
    // Its first record has a DEL too: the same key name was loaded in db 0 (LoadedKeys ignores dbs).
    const list = byKey.get('3/list-big-1')!.map((c) => `${c[0]} ${c[2]}`).filter((c, i) => i > 0 || !c.startsWith('DEL'));
    expect(list, 'the list: its nine RPUSHes in order, then the duplicate record (DEL, RPUSH)').to.deep.equal([...Array.from({ length: 9 }, (_, p) => `RPUSH e${p * 100}`), 'DEL undefined', 'RPUSH again']);
    const zset = byKey.get('0/zset-big-ttl')!.map((c) => c[0].toUpperCase());
    expect(zset, 'the zset over files: three ZADDs, then its expiry').to.deep.equal(['ZADD', 'ZADD', 'ZADD', 'PEXPIREAT']);
  });

  it('load lanes: the lane of a record is laneOfKey of its key (the rule of the data path)', () => {
    for (const key of ['', 'a', 'user:1', 'a\r\nb c', 'x'.repeat(300)]) {
      const bytes = Buffer.from(key);
      for (const lanes of [1, 3, 8]) expect((keyHash(bytes, 0, bytes.length) >>> 0) % lanes, `${key} over ${lanes}`).to.equal(laneOfKey(bytes, lanes));
    }
  });

  it('load lanes: an error reply on a lane other than the first fails the load with LOAD_FAILED, and every lane is closed once its replies are in', async () => {
    const commands: string[][] = [['PSP.FILE', '1', SNAP, 'part-000001.resp']];
    for (let i = 0; i < 400; i++) commands.push(['PSP.KEY', '0', `k${i}`, 'string', '-1'], ['SET', `k${i}`, 'v']);
    const bad = ['bad-a', 'bad-b', 'bad-c', 'bad-d'].find((k) => laneOfKey(Buffer.from(k), 4) !== 0)!;
    commands.push(['PSP.KEY', '0', bad, 'string', '-1'], ['SET', bad, 'v'], ['HMSET', bad, 'f', 'v']);
    for (let i = 400; i < 800; i++) commands.push(['PSP.KEY', '0', `k${i}`, 'string', '-1'], ['SET', `k${i}`, 'v']);
    commands.push(['PSP.EOF', '801']);
    const f = await writeRawFile(dir, 'part-000001.resp', commands);
    await expectRejects(
      loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 801 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal, connections: 4 }),
      'LOAD_FAILED',
      new RegExp(`hmset ${bad}.*WRONGTYPE`),
    );
    expect(await NodePipeline.settled(10_000)).to.equal(true);
    const clients = String(await client.call('CLIENT', 'LIST')).trim().split('\n');
    expect(clients, 'only the test client is left on the node').to.have.length(1);
  });

  it('a node that goes away during the load is BACKEND_CONNECTION_LOST (retryable)', async () => {
    const commands: string[][] = [['PSP.FILE', '1', SNAP, 'part-000001.resp']];
    for (let i = 0; i < 100000; i++) commands.push(['PSP.KEY', '0', `k${i}`, 'string', '-1'], ['SET', `k${i}`, 'x'.repeat(100)]);
    commands.push(['PSP.EOF', '100000']);
    const f = await writeRawFile(dir, 'part-000001.resp', commands);
    const loading = loadSnapshot({ node: node(), manifest: manifestFor([f], [{ db: 0, records: 100000 }]), files: [f], logger: silentLogger(), signal: new AbortController().signal, maxInFlight: 100 });
    // Killed once the load has begun (its first key is in; DBSIZE would also see the probe's
    // scratch key): killed on a timer, the node was sometimes gone before the loader's connection
    // was up (ECONNREFUSED: BACKEND_UNAVAILABLE). Polled back to back, not on timers (this
    // process runs the loader too: a timer can wait out the whole load), and a load of 100k keys.
    loading.catch(() => undefined);
    const watcher = server.client();
    try {
      while ((await watcher.exists('k0')) === 0);
    } finally {
      watcher.disconnect();
    }
    await server.kill();
    const err = await expectRejects(loading, 'BACKEND_CONNECTION_LOST');
    expect(err.retryable).to.equal(true);
  });
});

function commandCalls(stats: string, name: string): number {
  return Number(new RegExp(`^cmdstat_${name}:calls=(\\d+)`, 'm').exec(stats)?.[1] ?? 0);
}

describe('replication loader through load lanes (real Pika 4.0.1)', function () {
  let pika: PikaServer;
  let dir: string;

  before(async () => {
    pika = await PikaServer.start();
  });
  after(async () => {
    await pika?.stop();
  });
  beforeEach(async () => {
    dir = await tempDir('psp-loader-pika-');
  });
  afterEach(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('8 lanes (--load-connections 8) into real Pika: the node sees the load connections, and then holds exactly the snapshot (big keys over several commands and files, TTLs)', async () => {
    const client = pika.client();
    try {
      await client.set('stale', 'old data');
      const store = new DirSnapshotStore(dir);
      const manifest = await store.publish(laneLoadRecords([0]), { logId: 'log-1', logOffset: 1, fileSize: 16 * 1024, snapshotId: SNAP });
      const observed = await loadThroughLanes({ host: pika.host, port: pika.port }, dir, manifest, 8, async () => {
        const info = String(await client.info('clients'));
        return { loadConnections: Number(/connected_clients:(\d+)/.exec(info)?.[1] ?? 0) - 1, writers: -1 };
      });
      expect(observed.result.profile.product).to.equal('pika');
      expect(observed.result.connections).to.equal(8);
      expect(observed.during.loadConnections, 'connections of the load on the node').to.be.at.least(8);
      expect(observed.content.differingKeys, JSON.stringify(observed.content.differences)).to.equal(0);
      expect(observed.content.keys).to.equal(observed.expectedKeys);
      expect(await client.exists('stale')).to.equal(0);
      expect(await client.lrange('list-big-0', 0, -1)).to.deep.equal(Array.from({ length: 900 }, (_, i) => `e${i}`));
      expect(await client.pttl('ttl-7')).to.be.greaterThan(3_000_000);
    } finally {
      client.disconnect();
    }
  });
});

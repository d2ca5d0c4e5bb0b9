import { expect } from 'chai';
import { crc32c } from '@node-rs/crc32';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { RequestParser } from '../src/resp/request-parser';
import { parseVolatileDbs } from '../src/source/expiry-census';
import { InFlightReads, WrittenKeys, keyHash } from '../src/source/read-groups';
import { SnapshotStore } from '../src/source/snapshot-store';
import { Manifest, OrderedPath, WriteScope } from '../src/source/types';
import { WriteLog } from '../src/source/write-log';
import { PIKA_MISSING_COMMANDS, RedisServer } from './helpers/redis-server';

/** Pika-profile node (the shared helper's `pikaProfile` passes a literal `""` that redis-server 7 refuses). */
function startNode(pikaProfile: boolean, databases = 16): Promise<RedisServer> {
  const extraArgs = pikaProfile ? PIKA_MISSING_COMMANDS.flatMap((c) => ['--rename-command', c, '']) : [];
  return RedisServer.start({ databases, extraArgs });
}

const B = (s: string | number): Buffer => Buffer.from(String(s));

/** Loads a snapshot as a replica's loader would: PSP.KEY = SELECT + DEL, PSP.PART = SELECT, other markers skipped. */
async function loadSnapshot(dir: string, manifest: Manifest, target: Redis): Promise<{ records: Map<number, number> }> {
  const records = new Map<number, number>();
  let selected = -1;
  const pending: Promise<unknown>[] = [];
  const send = (args: Buffer[]): void => {
    pending.push(target.callBuffer(args[0].toString(), ...args.slice(1)));
  };
  for (const f of manifest.files) {
    const parser = new RequestParser();
    parser.feed(readFileSync(path.join(dir, manifest.snapshotId, f.name)));
    for (let req = parser.next(); req; req = parser.next()) {
      const [name, ...rest] = req.args;
      const marker = name.toString();
      if (marker === 'PSP.KEY' || marker === 'PSP.PART') {
        const db = Number(rest[0].toString());
        if (db !== selected) send([B('SELECT'), B(db)]);
        selected = db;
        if (marker === 'PSP.KEY') {
          send([B('DEL'), rest[1]]);
          records.set(db, (records.get(db) ?? 0) + 1);
        }
      } else if (!marker.startsWith('PSP.')) {
        send(req.args);
      }
      if (pending.length >= 1000) await Promise.all(pending.splice(0));
    }
  }
  await Promise.all(pending);
  return { records };
}

async function keysOf(node: Redis): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let cursor = '0';
  do {
    const [next, keys] = (await node.callBuffer('SCAN', cursor, 'COUNT', 1000)) as [Buffer, Buffer[]];
    cursor = next.toString();
    out.push(...keys);
  } while (cursor !== '0');
  return [...new Map(out.map((k) => [k.toString('hex'), k])).values()];
}

async function dump(node: Redis, key: Buffer): Promise<unknown> {
  const type = String(await node.type(key));
  switch (type) {
    case 'string':
      return [type, (await node.getBuffer(key))?.toString('hex')];
    case 'hash':
      return [type, Object.entries(await node.hgetall(key)).sort()];
    case 'list':
      return [type, await node.lrange(key, 0, -1)];
    case 'set':
      return [type, (await node.smembers(key)).sort()];
    case 'zset':
      return [type, await node.zrange(key, 0, -1, 'WITHSCORES')];
    case 'stream':
      return [type, await node.xrange(key, '-', '+')];
    default:
      return [type];
  }
}

/** Every key of every db: same type, value and TTL (within `ttlToleranceMs`). */
async function expectSameData(source: RedisServer, target: RedisServer, dbs: number, ttlToleranceMs = 2000): Promise<number> {
  let compared = 0;
  for (let db = 0; db < dbs; db++) {
    const [a, b] = [source.client(db), target.client(db)];
    try {
      const [ka, kb] = [await keysOf(a), await keysOf(b)];
      expect(kb.length, `key count of db ${db}`).to.equal(ka.length);
      for (const key of ka) {
        expect(await dump(b, key), `db ${db} key ${key.toString()}`).to.deep.equal(await dump(a, key));
        const [ta, tb] = [await a.pexpiretime(key), await b.pexpiretime(key)];
        if (ta < 0) expect(tb, `ttl of ${key.toString()}`).to.equal(ta);
        else expect(Math.abs(ta - tb), `expire time of ${key.toString()}`).to.be.lessThan(ttlToleranceMs);
        compared++;
      }
    } finally {
      a.disconnect();
      b.disconnect();
    }
  }
  return compared;
}

async function populate(node: RedisServer): Promise<void> {
  const c = node.client();
  await c.set('str', 'hello');
  await c.set(Buffer.from([0, 1, 13, 10, 255]), Buffer.from([9, 0, 13, 10]));
  await c.set('ttl-str', 'x', 'PX', 600_000);
  await c.hset('small-hash', { a: '1', b: '2' });
  await c.rpush('small-list', 'a', 'b', 'a');
  await c.sadd('small-set', 'x', 'y');
  await c.zadd('small-zset', 1.5, 'm1', -2, 'm2', 'inf', 'm3');
  await c.xadd('stream', '1-1', 'f', 'v');
  await c.xadd('stream', '2-0', 'g', 'w', 'h', 'z');
  await c.pexpire('small-hash', 900_000);
  for (let i = 0; i < 100_000; i += 10_000) {
    await c.hset('big-hash', ...Array.from({ length: 10_000 }, (_, j) => [`f${i + j}`, `value-${i + j}`]).flat());
  }
  for (let i = 0; i < 100_000; i += 10_000) await c.rpush('big-list', ...Array.from({ length: 10_000 }, (_, j) => `e${i + j}`));
  await c.pexpire('big-list', 1_200_000);
  await c.sadd('big-set', ...Array.from({ length: 3000 }, (_, i) => `s${i}`));
  await c.zadd('big-zset', ...Array.from({ length: 2500 }, (_, i) => [i * 0.5, `z${i}`]).flat());
  for (let i = 0; i < 1200; i++) await c.xadd('big-stream', `${i + 1}-0`, 'n', String(i));
  for (const db of [1, 3]) {
    await c.select(db);
    for (let i = 0; i < 50; i++) await c.set(`db${db}-k${i}`, String(i));
    await c.hset(`db${db}-hash`, 'f', 'v');
  }
  c.disconnect();
}

/** How often the node ran `command` (INFO commandstats; 0 when it never did). */
async function commandCalls(node: RedisServer, command: string): Promise<number> {
  const c = node.client();
  try {
    const info = await c.info('commandstats');
    return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  } finally {
    c.disconnect();
  }
}

/** An OrderedPath for tests where nothing writes: the log's last offset. */
function idlePath(log: WriteLog): OrderedPath {
  return { barrier: async () => log.lastOffset };
}

for (const pikaProfile of [false, true]) {
  describe(`snapshots (pikaProfile: ${pikaProfile})`, function () {
    this.timeout(180_000);
    let source: RedisServer;
    let target: RedisServer;
    let dataDir: string;
    let log: WriteLog;
    let store: SnapshotStore;

    beforeEach(async () => {
      dataDir = mkdtempSync(path.join(os.tmpdir(), 'psp-snap-'));
      [source, target] = await Promise.all([startNode(pikaProfile), startNode(pikaProfile)]);
      log = new WriteLog({ dir: path.join(dataDir, 'log'), maxBytes: 64 << 20, segmentBytes: 4 << 20, logger: silentLogger() });
      await log.open();
    });
    afterEach(async () => {
      await store?.close();
      await log?.close();
      await Promise.all([source?.stop(), target?.stop()]);
      rmSync(dataDir, { recursive: true, force: true });
    });

    function newStore(ordered: OrderedPath = idlePath(log), fileSize = 256 * 1024): SnapshotStore {
      store = new SnapshotStore({
        dir: path.join(dataDir, 'snapshots'),
        node: { host: source.host, port: source.port },
        fileSize,
        maxAgeMs: 600_000,
        maxTrackedKeys: 100_000,
        log,
        ordered,
        logger: silentLogger(),
      });
      return store;
    }

    it('snapshots every type, several dbs, TTLs and big keys; loading it reproduces the node', async () => {
      await populate(source);
      // leftovers of a previous run: an unfinished build and an old snapshot
      mkdirSync(path.join(dataDir, 'snapshots', 'old.tmp'), { recursive: true });
      mkdirSync(path.join(dataDir, 'snapshots', 'old'), { recursive: true });
      writeFileSync(path.join(dataDir, 'snapshots', 'old', 'manifest.json'), '{}');
      await newStore().init();
      expect(readdirSync(path.join(dataDir, 'snapshots'))).to.deep.equal([]);
      const pttlBefore = await commandCalls(source, 'pttl');
      const manifest = await store.ensureSnapshot(120_000);
      // Only db 0 holds keys with a TTL: its 13 keys are probed with PTTL, dbs 1 and 3 are not.
      expect((await commandCalls(source, 'pttl')) - pttlBefore, 'PTTL probes').to.equal(13);
      expect(store.currentSnapshotId()).to.equal(manifest.snapshotId);
      expect(manifest.formatVersion).to.equal(1);
      expect(manifest.logId).to.equal(log.logId);
      expect(manifest.logOffset).to.equal(0);
      expect(manifest.files.length).to.be.greaterThan(3);
      expect(readdirSync(path.join(dataDir, 'snapshots'))).to.deep.equal([manifest.snapshotId]);
      // manifest.json on disk is the manifest; sizes and CRC32C match the files
      const onDisk = JSON.parse(readFileSync(path.join(dataDir, 'snapshots', manifest.snapshotId, 'manifest.json'), 'utf8'));
      expect(onDisk).to.deep.equal(manifest);
      let total = 0;
      let partMarkers = 0;
      for (const f of manifest.files) {
        const data = readFileSync(path.join(dataDir, 'snapshots', manifest.snapshotId, f.name));
        expect(data.length, f.name).to.equal(f.size);
        expect(crc32c(data) >>> 0, f.name).to.equal(f.crc32c);
        total += data.length;
        const parser = new RequestParser();
        parser.feed(data);
        const cmds: string[] = [];
        let keyMarkers = 0;
        for (let r = parser.next(); r; r = parser.next()) {
          cmds.push(r.args[0].toString());
          if (r.args[0].toString() === 'PSP.KEY') keyMarkers++;
          if (r.args[0].toString() === 'PSP.PART') partMarkers++;
        }
        expect(cmds[0]).to.equal('PSP.FILE');
        expect(cmds[cmds.length - 1]).to.equal('PSP.EOF');
        expect(cmds.filter((c) => c === 'PSP.EOF')).to.have.length(1);
        parser.feed(Buffer.alloc(0));
        const again = new RequestParser();
        again.feed(data);
        let last: Buffer[] = [];
        for (let r = again.next(); r; r = again.next()) last = r.args;
        expect(Number(last[1].toString())).to.equal(keyMarkers);
      }
      expect(total).to.equal(manifest.totalBytes);
      expect(partMarkers, 'a big key continues across files with PSP.PART').to.be.greaterThan(0);
      const dbs = Object.fromEntries(manifest.dbs.map((d) => [d.db, d.records]));
      expect(dbs).to.deep.equal({ 0: 13, 1: 51, 3: 51 });

      const tc = target.client();
      const { records } = await loadSnapshot(path.join(dataDir, 'snapshots'), manifest, tc);
      tc.disconnect();
      expect(Object.fromEntries(records)).to.deep.equal(dbs);
      expect(await expectSameData(source, target, 16)).to.equal(115);
      // one build is shared while fresh
      expect((await store.ensureSnapshot(1000)).snapshotId).to.equal(manifest.snapshotId);
    });

    it('readChunk validates snapshot id, file name, offset and length', async () => {
      const c = source.client();
      await c.set('a', '1');
      c.disconnect();
      await newStore().init();
      const m = await store.ensureSnapshot(30_000);
      const file = m.files[0];
      const whole = await store.readChunk(m.snapshotId, file.name, 0, file.size + 100);
      expect(whole.eof).to.equal(true);
      expect(crc32c(whole.data) >>> 0).to.equal(file.crc32c);
      const part = await store.readChunk(m.snapshotId, file.name, 5, 10);
      expect(part.data.equals(whole.data.subarray(5, 15))).to.equal(true);
      expect(part.eof).to.equal(false);
      expect((await store.readChunk(m.snapshotId, file.name, file.size, 10)).data.length).to.equal(0);
      const expectCode = async (p: Promise<unknown>, code: string): Promise<void> => {
        try {
          await p;
        } catch (err) {
          expect((err as SyncProxyError).code).to.equal(code);
          return;
        }
        throw new Error(`expected ${code}`);
      };
      await expectCode(store.readChunk('nope', file.name, 0, 10), 'SNAPSHOT_NOT_FOUND');
      for (const bad of ['../manifest.json', 'a/b', 'a\\b', '..', 'x\0y', '/etc/passwd']) {
        await expectCode(store.readChunk(m.snapshotId, bad, 0, 10), 'HOSTILE_FILE_NAME');
      }
      await expectCode(store.readChunk(m.snapshotId, 'manifest.json', 0, 10), 'FILE_NOT_IN_MANIFEST');
      await expectCode(store.readChunk(m.snapshotId, 'part-000099.resp', 0, 10), 'FILE_NOT_IN_MANIFEST');
      await expectCode(store.readChunk(m.snapshotId, file.name, -1, 10), 'INVALID_REQUEST');
      await expectCode(store.readChunk(m.snapshotId, file.name, 1.5, 10), 'INVALID_REQUEST');
      await expectCode(store.readChunk(m.snapshotId, file.name, file.size + 1, 10), 'INVALID_REQUEST');
      await expectCode(store.readChunk(m.snapshotId, file.name, 0, 0), 'INVALID_REQUEST');
      await expectCode(store.readChunk(m.snapshotId, file.name, 0, 64 * 1024 * 1024 + 1), 'INVALID_REQUEST');
    });

    it('a build whose node dies mid-way fails and leaves nothing servable', async () => {
      const c = source.client();
      for (let i = 0; i < 100_000; i += 10_000) await c.rpush('big-list', ...Array.from({ length: 10_000 }, (_, j) => `element-${i + j}`));
      const pipe = c.pipeline();
      for (let i = 0; i < 20_000; i++) pipe.set(`key:${i}`, `v${i}`);
      await pipe.exec();
      c.disconnect();
      await newStore(idlePath(log), 64 * 1024).init();
      const building = store.ensureSnapshot(120_000);
      building.catch(() => undefined);
      while ((store.buildStatus() as { bytes?: number }).bytes === undefined || (store.buildStatus() as { bytes: number }).bytes < 100_000) {
        await new Promise((r) => setTimeout(r, 2));
      }
      await source.kill();
      let failure: SyncProxyError | undefined;
      try {
        await building;
      } catch (err) {
        failure = err as SyncProxyError;
      }
      expect(failure?.code).to.equal('SNAPSHOT_BUILD_FAILED');
      expect(store.currentSnapshotId()).to.equal(undefined);
      expect(readdirSync(path.join(dataDir, 'snapshots'))).to.deep.equal([]);
      expect(store.buildStatus()).to.deep.include({ state: 'idle' });
    });

    it('copy-on-write gate: snapshot + replay after logOffset equals the node under concurrent writes', async () => {
      const seed = source.client();
      const pipe = seed.pipeline();
      for (let i = 0; i < 6000; i++) pipe.set(`k${i}`, `initial-${i}`);
      for (let i = 0; i < 300; i++) pipe.rpush(`list${i % 30}`, `i${i}`);
      pipe.select(2);
      for (let i = 0; i < 100; i++) pipe.set(`d2-${i}`, 'x');
      pipe.select(1);
      for (let i = 0; i < 3000; i++) pipe.hset(`h${i % 300}`, `f${i}`, `v${i}`);
      await pipe.exec();
      await seed.select(0);
      await seed.hset('big', ...Array.from({ length: 20_000 }, (_, i) => [`f${i}`, `v${i}`]).flat());
      seed.disconnect();

      // The ordered path: one connection for every write; log order = node order.
      const ordered = source.client();
      let selected = 0;
      const dispatch = (db: number, args: Buffer[]): Promise<unknown> => {
        if (db !== selected) {
          void ordered.select(db);
          selected = db;
        }
        return ordered.callBuffer(args[0].toString(), ...args.slice(1)).then((reply) => {
          log.append(db, [args]);
          return reply;
        });
      };
      const orderedPath: OrderedPath = { barrier: () => ordered.ping().then(() => log.lastOffset) };
      await newStore(orderedPath, 128 * 1024).init();

      let gated = 0;
      const write = async (db: number, args: Buffer[], scope: WriteScope): Promise<void> => {
        const wait = store.beforeWrite(scope);
        if (wait) {
          gated++;
          await wait;
        }
        await dispatch(db, args).catch(() => undefined);
      };
      const writeKey = (db: number, ...args: (string | number)[]): Promise<void> => {
        const bufs = args.map(B);
        return write(db, bufs, { kind: 'keys', db, keys: [bufs[1]] });
      };
      let rnd = 12345;
      const random = (n: number): number => {
        rnd = (rnd * 1103515245 + 12345) % 2147483648;
        return rnd % n;
      };
      // a few writes before the build
      for (let i = 0; i < 20; i++) await writeKey(0, 'SET', `k${i}`, 'before');

      let done = false;
      const writer = async (id: number): Promise<void> => {
        for (let n = 0; !done || n < 150; n++) {
          const r = random(100);
          const k = random(6000);
          if (r < 40) await writeKey(0, 'SET', `k${k}`, `w${id}-${n}`);
          else if (r < 50) await writeKey(0, 'DEL', `k${k}`);
          else if (r < 60) await writeKey(0, 'APPEND', `k${k}`, `+${n}`);
          else if (r < 70) await writeKey(0, 'RPUSH', `list${k % 30}`, `n${n}`);
          else if (r < 75) await writeKey(0, 'LPOP', `list${k % 30}`);
          else if (r < 85) await writeKey(1, 'HSET', `h${k % 300}`, `f${k}`, `new${n}`);
          else if (r < 90) await writeKey(0, 'HDEL', 'big', `f${k}`);
          else if (r < 95) await writeKey(0, 'PEXPIREAT', `k${k}`, Date.now() + 3_600_000);
          else {
            const keys = [`k${k}`, `k${(k + 1) % 6000}`];
            await write(0, [B('MSET'), B(keys[0]), B('m'), B(keys[1]), B('m')], { kind: 'keys', db: 0, keys: keys.map(B) });
          }
          if (n > 3000) break;
        }
      };
      const writers = [0, 1, 2, 3].map(writer);
      const flusher = (async () => {
        await new Promise((r) => setTimeout(r, 30));
        await write(2, [B('FLUSHDB')], { kind: 'db', db: 2 });
        await writeKey(2, 'SET', 'd2-after-flush', 'y');
      })();
      const manifest = await store.ensureSnapshot(120_000);
      done = true;
      await Promise.all([...writers, flusher]);
      await orderedPath.barrier();
      ordered.disconnect();

      expect(manifest.logOffset).to.be.at.least(20);
      expect(log.lastOffset).to.be.greaterThan(manifest.logOffset + 100);
      expect(gated, 'writes waited for the copy-on-write gate').to.be.greaterThan(0);
      // No key had a TTL when the build started: no PTTL probe at all, although the writers set
      // TTLs during the build (their keys were read before those writes; the log replays them).
      expect(await commandCalls(source, 'pttl'), 'PTTL probes').to.equal(0);
      expect(await commandCalls(source, 'mget'), 'strings read with MGET').to.be.greaterThan(0);

      const tc = target.client();
      await loadSnapshot(path.join(dataDir, 'snapshots'), manifest, tc);
      const ac = new AbortController();
      let replayed = 0;
      for await (const entry of log.follow(manifest.logOffset + 1, ac.signal)) {
        await tc.select(entry.db);
        for (const cmd of entry.commands) await tc.callBuffer(cmd[0].toString(), ...cmd.slice(1)).catch(() => undefined);
        replayed++;
        if (entry.offset === log.lastOffset) ac.abort();
      }
      tc.disconnect();
      expect(replayed).to.equal(log.lastOffset - manifest.logOffset);
      expect(await expectSameData(source, target, 3)).to.be.greaterThan(6000);
    });

    it('writes of keys that do not exist yet during a build (priority reads of absent keys) neither stall it nor enter the snapshot', async () => {
      const seed = source.client();
      const pipe = seed.pipeline();
      for (let i = 0; i < 5000; i++) pipe.set(`k${i}`, `v${i}`);
      await pipe.exec();
      const ordered = source.client();
      const orderedPath: OrderedPath = { barrier: () => ordered.ping().then(() => log.lastOffset) };
      await newStore(orderedPath).init();

      const manifestPromise = store.ensureSnapshot(30_000);
      let written = 0;
      for (let i = 0; i < 200; i++) {
        const key = B(`fresh${i}`);
        const wait = store.beforeWrite({ kind: 'keys', db: 0, keys: [key] });
        if (wait) await wait;
        await ordered.set(key, 'new');
        log.append(0, [[B('SET'), key, B('new')]]);
        written++;
      }
      const manifest = await manifestPromise;
      ordered.disconnect();
      seed.disconnect();

      expect(written).to.equal(200);
      // Every fresh key was absent when it was first written: no record, the log holds it.
      expect(manifest.dbs.find((d) => d.db === 0)?.records).to.equal(5000);
      const tc = target.client();
      await loadSnapshot(path.join(dataDir, 'snapshots'), manifest, tc);
      expect(await tc.exists('fresh0', 'fresh199')).to.equal(0);
      expect(await tc.dbsize()).to.equal(5000);
      tc.disconnect();
    });
  });
}

describe('snapshot store cleanup', () => {
  it('init removes every leftover of a previous run', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-snapdir-'));
    try {
      mkdirSync(path.join(dir, 'snapshots', 'abc.tmp'), { recursive: true });
      writeFileSync(path.join(dir, 'snapshots', 'abc.tmp', 'part-000001.resp'), 'x');
      const log = new WriteLog({ dir: path.join(dir, 'log'), maxBytes: 1 << 20, segmentBytes: 1 << 16, logger: silentLogger() });
      await log.open();
      const store = new SnapshotStore({ dir: path.join(dir, 'snapshots'), node: { host: '127.0.0.1', port: 1 }, fileSize: 65536, maxAgeMs: 1000, maxTrackedKeys: 1000, log, ordered: idlePath(log), logger: silentLogger() });
      await store.init();
      expect(existsSync(path.join(dir, 'snapshots', 'abc.tmp'))).to.equal(false);
      expect(store.currentSnapshotId()).to.equal(undefined);
      await store.close();
      await log.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('expiry census (INFO keyspace parsing)', () => {
  it('names the dbs with keys that have a TTL; refuses a keyspace line of another shape', () => {
    expect([...parseVolatileDbs('# Keyspace\r\ndb0:keys=10,expires=0,avg_ttl=0\r\ndb3:keys=5,expires=2,avg_ttl=9,subexpiry=0\r\n')!]).to.deep.equal([3]);
    expect([...parseVolatileDbs('# Keyspace\r\n')!]).to.deep.equal([]);
    // Pika's keyspace section lists per-type counts: no shortcut is taken from it.
    expect(parseVolatileDbs('# Keyspace\r\ndb0 Strings_keys=10, expires=0, invalid_keys=0\r\n')).to.equal(undefined);
  });
});

describe('copy-on-write bookkeeping (read groups keyed by a 32-bit hash)', () => {
  // 'k32728' and 'k261234' have the same FNV-1a hash: a collision must never pass for the key.
  const a = Buffer.from('k32728');
  const b = Buffer.from('k261234');

  it('a key whose hash collides with a key being read is not taken as being read', () => {
    expect(keyHash(a)).to.equal(keyHash(b));
    const reads = new InFlightReads();
    const group = reads.add(0, [a], [keyHash(a)]);
    expect(reads.holding(0, a, keyHash(a))).to.deep.equal([group]);
    expect(reads.holding(0, b, keyHash(b))).to.deep.equal([]);
    expect(reads.holding(1, a, keyHash(a)), 'another db').to.deep.equal([]);
    reads.finish(group);
    expect(reads.holding(0, a, keyHash(a))).to.deep.equal([]);
  });

  it('W answers exactly for colliding keys and per db', () => {
    const written = new WrittenKeys();
    written.add(3, a, keyHash(a));
    expect(written.has(3, a, keyHash(a))).to.equal(true);
    expect(written.has(3, b, keyHash(b))).to.equal(false);
    expect(written.has(0, a, keyHash(a))).to.equal(false);
    expect(written.size).to.equal(1);
  });

  it('settled() waits for the groups in flight (of one db when asked) and releaseAll() lets everything go', async () => {
    const reads = new InFlightReads();
    const g0 = reads.add(0, [a], [keyHash(a)]);
    reads.add(1, [b], [keyHash(b)]);
    let db0 = false;
    let all = false;
    const waitDb0 = reads.settled(0).then(() => (db0 = true));
    const waitAll = reads.settled().then(() => (all = true));
    await new Promise((r) => setImmediate(r));
    expect([db0, all]).to.deep.equal([false, false]);
    reads.finish(g0);
    await waitDb0;
    expect([db0, all]).to.deep.equal([true, false]);
    reads.releaseAll();
    await waitAll;
    expect(all).to.equal(true);
  });
});

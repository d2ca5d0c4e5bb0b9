import { crc32c } from '@node-rs/crc32';
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { ENTRY_HEADER_BYTES, crc32cRange, decodeEntry, encodeEntry, encodeEntryInto, encodedEntryLength } from '../src/source/log-format';
import { LogEntry } from '../src/source/types';
import { SegmentFile } from '../src/source/segment-file';
import { WriteLog } from '../src/source/write-log';

const b = (s: string): Buffer => Buffer.from(s);
/**
 * Waits until the log has written what was appended: it writes within 10 ms of an append
 * (WRITE_INTERVAL_MS), and Node runs a timer set later with a longer delay after that one.
 */
const written = (): Promise<void> => new Promise((r) => setTimeout(r, 25));

async function collect(log: WriteLog, from: number, count: number): Promise<LogEntry[]> {
  const ac = new AbortController();
  const out: LogEntry[] = [];
  for await (const e of log.follow(from, ac.signal)) {
    out.push(e);
    if (out.length === count) ac.abort();
  }
  return out;
}

/** Paths of the files this process holds open under `dir`. */
function openFilesUnder(dir: string): string[] {
  return readdirSync('/proc/self/fd')
    .map((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return '';
      }
    })
    .filter((target) => target.startsWith(dir));
}

async function expectError(p: Promise<unknown>, code: string): Promise<SyncProxyError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(SyncProxyError);
    expect((err as SyncProxyError).code).to.equal(code);
    return err as SyncProxyError;
  }
  throw new Error(`expected ${code}`);
}

describe('WriteLog', () => {
  let dir: string;
  let log: WriteLog;

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'psp-wlog-'));
  });
  afterEach(async () => {
    await log?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function openLog(maxBytes = 1 << 20, segmentBytes = 1 << 16): Promise<WriteLog> {
    log = new WriteLog({ dir, maxBytes, segmentBytes, logger: silentLogger() });
    await log.open();
    return log;
  }

  it('appends with offsets 1, 2, 3 and follows them back from disk, binary safe', async () => {
    await openLog();
    expect(log.firstOffset).to.equal(1);
    expect(log.lastOffset).to.equal(0);
    const bin = Buffer.from([0, 13, 10, 255, 42]);
    expect(log.append(0, [[b('SET'), bin, b('v')]])).to.equal(1);
    expect(log.append(3, [[b('MULTI')], [b('INCR'), b('x')], [b('EXEC')]])).to.equal(2);
    expect(log.append(0, [[b('DEL'), b('k')]])).to.equal(3);
    await written();
    expect(log.bytes).to.be.greaterThan(0);
    const files = readdirSync(dir);
    expect(files).to.have.length(1);
    expect(files[0]).to.match(new RegExp(`^${log.logId}-0+1\\.seg$`));
    const entries = await collect(log, 1, 3);
    expect(entries.map((e) => e.offset)).to.deep.equal([1, 2, 3]);
    expect(entries[0].commands[0][1].equals(bin)).to.equal(true);
    expect(entries[1].db).to.equal(3);
    expect(entries[1].commands.map((c) => c.map((a) => a.toString()))).to.deep.equal([['MULTI'], ['INCR', 'x'], ['EXEC']]);
    expect((await collect(log, 2, 2)).map((e) => e.offset)).to.deep.equal([2, 3]);
  });

  it('a follower waits for new entries and receives them live, in order', async () => {
    await openLog();
    log.append(0, [[b('SET'), b('a'), b('1')]]);
    const pending = collect(log, 1, 4);
    await new Promise((r) => setTimeout(r, 20));
    for (let i = 2; i <= 4; i++) {
      log.append(0, [[b('SET'), b('a'), b(String(i))]]);
      await new Promise((r) => setTimeout(r, 5));
    }
    const entries = await pending;
    expect(entries.map((e) => e.commands[0][2].toString())).to.deep.equal(['1', '2', '3', '4']);
  });

  it('a follower catching up bursts of appends gets every entry once, in order, from memory and then from disk', async () => {
    await openLog();
    const ac = new AbortController();
    const got: string[] = [];
    const following = (async () => {
      for await (const e of log.follow(1, ac.signal)) {
        got.push(`${e.offset}:${e.commands[0][1].toString()}`);
        if (got.length === 3000) return;
      }
    })();
    const expected: string[] = [];
    for (let burst = 0; burst < 30; burst++) {
      for (let i = 0; i < 100; i++) {
        const offset = log.append(0, [[b('SET'), b(`k${burst}-${i}`), b('v')]]);
        expected.push(`${offset}:k${burst}-${i}`);
      }
      await new Promise((r) => setImmediate(r)); // the follower runs between bursts
    }
    await following;
    expect(got).to.deep.equal(expected);
    await written();
    const fromDisk = await collect(log, 1, 3000);
    expect(fromDisk.map((e) => `${e.offset}:${e.commands[0][1].toString()}`)).to.deep.equal(expected);
  });

  it('rolls segments, trims the oldest past maxBytes and refuses trimmed or future offsets', async () => {
    await openLog(8 * 1024, 2 * 1024);
    const value = Buffer.alloc(300, 'x');
    for (let i = 1; i <= 200; i++) {
      log.append(0, [[b('SET'), b(`k${i}`), value]]);
      if (i % 10 === 0) await written();
    }
    await written();
    const files = readdirSync(dir).sort();
    expect(files.length).to.be.greaterThan(1);
    expect(log.bytes).to.be.at.most(8 * 1024 + 2 * 1024);
    expect(log.firstOffset).to.be.greaterThan(1);
    const firstFile = files[0];
    expect(Number(firstFile.split('-')[1].replace('.seg', ''))).to.equal(log.firstOffset);
    const tail = await collect(log, log.firstOffset, 200 - log.firstOffset + 1);
    expect(tail[0].offset).to.equal(log.firstOffset);
    expect(tail[tail.length - 1].offset).to.equal(200);
    expect(tail.every((e, i) => e.commands[0][1].toString() === `k${log.firstOffset + i}`)).to.equal(true);
    await expectError(collect(log, 1, 1), 'LOG_OFFSET_GONE');
    await expectError(collect(log, 202, 1), 'LOG_OFFSET_GONE');
  });

  it('serves an entry larger than the read buffer', async () => {
    await openLog(8 << 20, 4 << 20);
    const big = Buffer.alloc(1_000_000, 7);
    log.append(0, [[b('SET'), b('small'), b('1')]]);
    log.append(0, [[b('SET'), b('big'), big]]);
    await written();
    const entries = await collect(log, 1, 2);
    expect(entries[1].commands[0][2].equals(big)).to.equal(true);
  });

  it('reset ends followers with LOG_OFFSET_GONE and restarts offsets under a new log id', async () => {
    await openLog();
    log.append(0, [[b('SET'), b('a'), b('1')]]);
    await written();
    const oldId = log.logId;
    const follower = collect(log, 1, 5);
    await new Promise((r) => setTimeout(r, 20));
    log.reset('test');
    await expectError(follower, 'LOG_OFFSET_GONE');
    expect(log.logId).to.not.equal(oldId);
    expect(log.logId).to.match(/^[0-9a-f]{40}$/);
    expect(readdirSync(dir)).to.deep.equal([]);
    expect(log.append(0, [[b('SET'), b('b'), b('2')]])).to.equal(1);
    expect(log.firstOffset).to.equal(1);
  });

  it('detects a corrupt entry with LOG_CORRUPT', async () => {
    await openLog();
    for (let i = 0; i < 5; i++) log.append(0, [[b('SET'), b(`key${i}`), b('value-value-value')]]);
    await written();
    const file = path.join(dir, readdirSync(dir)[0]);
    const data = readFileSync(file);
    data[data.length - 5] ^= 0xff; // inside the last entry's payload
    writeFileSync(file, data);
    const got: number[] = [];
    const ac = new AbortController();
    const err = await expectError(
      (async () => {
        for await (const e of log.follow(1, ac.signal)) got.push(e.offset);
      })(),
      'LOG_CORRUPT',
    );
    expect(err.message).to.match(/checksum/);
    expect(got).to.deep.equal([1, 2, 3, 4]);
  });

  it('closes rolled segments after their fdatasync, and close() waits until every fd is closed', async () => {
    await openLog(64 * 1024, 2 * 1024);
    const value = Buffer.alloc(500, 'v');
    for (let i = 1; i <= 100; i++) {
      log.append(0, [[b('SET'), b(`k${i}`), value]]);
      if (i % 7 === 0) await written();
    }
    await written();
    expect(readdirSync(dir).length).to.be.greaterThan(5);
    await log.close();
    expect(openFilesUnder(dir)).to.deep.equal([]);
    const onDisk = readdirSync(dir).reduce((n, f) => n + readFileSync(path.join(dir, f)).length, 0);
    expect(onDisk).to.equal(log.bytes);
  });

  it('a segment file is never closed under a running fdatasync', async () => {
    mkdirSync(dir, { recursive: true });
    const file = new SegmentFile(path.join(dir, 'a.seg'));
    const order: string[] = [];
    file.write(b('first'), 0, 5);
    const synced = file.sync().then(() => order.push('sync'));
    file.write(b('second'), 0, 6);
    const again = file.sync().then(() => order.push('second sync'));
    expect(file.needsSync).to.equal(true);
    const closed = file.close(false).then(() => order.push('close'));
    await Promise.all([synced, again, closed]);
    expect(order).to.deep.equal(['sync', 'second sync', 'close']);
    expect(openFilesUnder(dir)).to.deep.equal([]);
    expect(readFileSync(path.join(dir, 'a.seg')).toString()).to.equal('firstsecond');
    expect(() => file.write(b('late'), 0, 4)).to.throw(/closed/);
  });

  it('open removes segments of a previous run and picks a new log id', async () => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'oldid-00000000000000000001.seg'), 'stale');
    await openLog();
    const first = log.logId;
    expect(existsSync(path.join(dir, 'oldid-00000000000000000001.seg'))).to.equal(false);
    log.append(0, [[b('SET'), b('a'), b('1')]]);
    await log.close();
    expect(readdirSync(dir)).to.have.length(1);
    await openLog();
    expect(log.logId).to.not.equal(first);
    expect(readdirSync(dir)).to.deep.equal([]);
    expect(log.lastOffset).to.equal(0);
  });
});

describe('write log entry encoding', () => {
  it('the CRC32C in JS equals @node-rs/crc32 at every length and alignment', () => {
    for (let len = 0; len <= 600; len++) {
      const buf = randomBytes(len + 9);
      for (let start = 0; start < 9; start++) {
        expect(crc32cRange(buf, start, start + len)).to.equal(crc32c(buf.subarray(start, start + len)), `length ${len} at ${start}`);
      }
    }
  });

  it('entries encoded back to back into one buffer decode to what was appended, each with its CRC', () => {
    const entries: LogEntry[] = [
      { offset: 1, db: 0, commands: [[b('SET'), b('k'), b('v')]] },
      { offset: 2 ** 40 + 7, db: 15, commands: [[b('SET'), b('key'), randomBytes(300)], [b('PEXPIREAT'), b('key'), b('1700000000000')]] },
      { offset: 3, db: 1, commands: [[b('DEL'), Buffer.alloc(0)]] },
    ];
    const buf = Buffer.alloc(entries.reduce((n, e) => n + encodedEntryLength(e.commands), 0));
    let pos = 0;
    for (const e of entries) pos = encodeEntryInto(buf, pos, e.offset, e.db, e.commands);
    expect(pos).to.equal(buf.length);
    pos = 0;
    for (const e of entries) {
      const one = encodeEntry(e.offset, e.db, e.commands);
      expect(buf.subarray(pos, pos + one.length).equals(one)).to.equal(true);
      expect(one.readUInt32BE(4)).to.equal(crc32c(one.subarray(ENTRY_HEADER_BYTES)));
      expect(decodeEntry(buf, pos, 'test')).to.deep.equal(e);
      pos += one.length;
    }
  });
});

/**
 * The write log as a real proxy writes it: plain writes are logged from the bytes the client sent
 * (no re-encoding of the arguments), rewritten ones from their replay commands. Every entry on
 * disk must be byte for byte the entry `encodeEntry` makes from the arguments, so followers,
 * the segment reader and the wire CRC (entryChecksum) see exactly what they saw before.
 */
import { expect } from 'chai';
import { encodeArgs } from '../src/resp/request-parser';
import { encodeEntry, entryChecksum } from '../src/source/log-format';
import { entriesOnDisk } from './helpers/log-entries';
import { startTestProxy, TestProxy } from './helpers/proxy-fixture';
import { RedisServer } from './helpers/redis-server';
import { RespClient } from './helpers/resp-client';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

describe('write log: entries a proxy writes', function () {
  this.timeout(60_000);
  let node: RedisServer;
  let proxy: TestProxy;
  let client: RespClient;

  before(async () => {
    node = await RedisServer.start();
    proxy = await startTestProxy(node);
    client = await RespClient.connect(proxy.port);
  });
  after(async () => {
    client?.close();
    await proxy?.stop();
    await node?.stop();
  });

  it('plain writes logged from the request bytes equal the encoding of their arguments', async () => {
    const big = Buffer.alloc(70_000, 0xab);
    const writes: { db: number; args: Buffer[] }[] = [
      { db: 0, args: [b('SET'), b('k1'), b('v')] },
      { db: 0, args: [b('set'), Buffer.from([0, 13, 10, 255]), Buffer.alloc(0)] },
      { db: 0, args: [b('SET'), b('x'.repeat(33)), b('y'.repeat(100))] },
      { db: 0, args: [b('SET'), b('big'), big] },
      { db: 0, args: [b('MSET'), b('a'), b('1'), b('b'), b('2'), b('c'), b('3')] },
      { db: 0, args: [b('HSET'), b('h'), b('f1'), b('v1'), b('f2'), b('v2')] },
      { db: 0, args: [b('RPUSH'), b('l'), ...Array.from({ length: 12 }, (_, i) => b(`e${i}`))] },
      { db: 0, args: [b('INCR'), b('n')] },
      { db: 3, args: [b('SET'), b('in-db-3'), b('v3')] },
      { db: 3, args: [b('DEL'), b('in-db-3'), b('missing')] },
    ];
    // Pipelined in one write, the SELECTs in between, so several entries share a turn.
    const stream: Buffer[] = [];
    let db = 0;
    for (const w of writes) {
      if (w.db !== db) stream.push(encodeArgs(['SELECT', String((db = w.db))]));
      stream.push(encodeArgs(w.args));
    }
    client.send(Buffer.concat(stream));
    for (let i = 0; i < stream.length; i++) expect((await client.read()).toString()).to.not.match(/^-/);
    // An inline command and a rewritten write (relative expiry) go through the other paths.
    client.send('SET inline-key "inline value"\r\n');
    expect((await client.read()).toString()).to.equal('+OK\r\n');
    await client.call('SET', 'ttl', 'v', 'EX', '100');
    await new Promise((r) => setTimeout(r, 50));

    const logged = entriesOnDisk(proxy);
    const expected: { db: number; commands: Buffer[][] }[] = [
      ...writes.map((w) => ({ db: w.db, commands: [w.args] })),
      { db: 3, commands: [[b('SET'), b('inline-key'), b('inline value')]] },
    ];
    expect(logged.length).to.equal(expected.length + 1);
    expected.forEach((e, i) => {
      const { entry, bytes } = logged[i];
      expect(entry.offset).to.equal(i + 1);
      expect(bytes.equals(encodeEntry(i + 1, e.db, e.commands)), `entry ${i + 1}`).to.equal(true);
      expect(entryChecksum(entry)).to.equal(bytes.readUInt32BE(4));
    });
    const last = logged[logged.length - 1].entry;
    expect(last.commands.map((c) => c[0].toString())).to.deep.equal(['SET', 'PEXPIREAT']);
  });

  it("RESTORE with a relative TTL is logged with the absolute time (ABSTTL), which a real node accepts", async () => {
    await client.call('SELECT', '0');
    await client.call('SET', 'src', 'payload-value');
    const dumped = await client.call('DUMP', 'src'); // $<len>\r\n<payload>\r\n
    const payload = dumped.subarray(dumped.indexOf('\r\n') + 2, dumped.length - 2);
    const before = Date.now();
    expect((await client.call('RESTORE', 'copy', '600000', payload)).toString()).to.equal('+OK\r\n');
    await new Promise((r) => setTimeout(r, 50));
    const logged = entriesOnDisk(proxy).map((e) => e.entry.commands[0]).filter((c) => c[0].toString().toUpperCase() === 'RESTORE');
    expect(logged).to.have.length(1);
    const [name, key, at, data, flag] = logged[0];
    expect([name.toString(), key.toString(), flag?.toString()]).to.deep.equal(['RESTORE', 'copy', 'ABSTTL']);
    expect(Number(at.toString())).to.be.within(before + 600_000, Date.now() + 600_000);
    // Replayed on another node, it gives the key the master's expiry, whenever it is replayed.
    const other = await RedisServer.start();
    try {
      const c = other.client();
      expect(await c.call('RESTORE', key, at, data, 'ABSTTL')).to.equal('OK');
      expect(await c.get('copy')).to.equal('payload-value');
      expect(await c.pexpiretime('copy')).to.equal(Number(at.toString()));
      c.disconnect();
    } finally {
      await other.stop();
    }
  });
});

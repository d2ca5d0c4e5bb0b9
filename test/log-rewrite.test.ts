import { expect } from 'chai';
import net from 'node:net';
import Redis from 'ioredis';
import { array, bulk, integer, map, NULL_ARRAY, NULL_BULK, OK, error } from '../src/resp/encode';
import { encodeArgs } from '../src/resp/request-parser';
import { ReplyFramer } from '../src/resp/reply-framer';
import { execToLogCommands, toLogCommands } from '../src/source/log-rewrite';
import { firstEntryRead, isApproxTrim } from '../src/source/stream-trims';
import { PIKA_MISSING_COMMANDS, RedisServer } from './helpers/redis-server';

/**
 * Pika-profile node. The shared helper's `pikaProfile` passes the literal `""` to spawn (no shell),
 * which redis-server 7 refuses; an empty argument removes the command as intended.
 */
function startNode(pikaProfile: boolean): Promise<RedisServer> {
  return RedisServer.start(pikaProfile ? { extraArgs: PIKA_MISSING_COMMANDS.flatMap((c) => ['--rename-command', c, '']) } : {});
}

const NOW = 1_700_000_000_000;
const cmd = (...a: string[]): Buffer[] => a.map((s) => Buffer.from(s));
const text = (cmds: Buffer[][] | null): string[][] | null => (cmds ? cmds.map((c) => c.map((a) => a.toString())) : null);

describe('toLogCommands', () => {
  it('rewrites relative expirations to absolute PEXPIREAT', () => {
    expect(text(toLogCommands(cmd('EXPIRE', 'k', '10'), integer(1), NOW))).to.deep.equal([['PEXPIREAT', 'k', String(NOW + 10_000)]]);
    expect(text(toLogCommands(cmd('pexpire', 'k', '1500', 'NX'), integer(1), NOW))).to.deep.equal([['PEXPIREAT', 'k', String(NOW + 1500)]]);
    expect(text(toLogCommands(cmd('EXPIREAT', 'k', '1800000000'), integer(1), NOW))).to.deep.equal([['PEXPIREAT', 'k', '1800000000000']]);
    expect(text(toLogCommands(cmd('PEXPIREAT', 'k', '1800000000123', 'GT'), integer(1), NOW))).to.deep.equal([['PEXPIREAT', 'k', '1800000000123']]);
    expect(toLogCommands(cmd('EXPIRE', 'k', '10', 'XX'), integer(0), NOW)).to.equal(null);
  });

  it('splits SETEX/PSETEX and SET EX/PX/EXAT/PXAT into SET + PEXPIREAT', () => {
    expect(text(toLogCommands(cmd('SETEX', 'k', '5', 'v'), OK, NOW))).to.deep.equal([['SET', 'k', 'v'], ['PEXPIREAT', 'k', String(NOW + 5000)]]);
    expect(text(toLogCommands(cmd('PSETEX', 'k', '5', 'v'), OK, NOW))).to.deep.equal([['SET', 'k', 'v'], ['PEXPIREAT', 'k', String(NOW + 5)]]);
    expect(text(toLogCommands(cmd('SET', 'k', 'v', 'ex', '7'), OK, NOW))).to.deep.equal([['SET', 'k', 'v'], ['PEXPIREAT', 'k', String(NOW + 7000)]]);
    expect(text(toLogCommands(cmd('SET', 'k', 'v', 'NX', 'PX', '70'), OK, NOW))).to.deep.equal([['SET', 'k', 'v'], ['PEXPIREAT', 'k', String(NOW + 70)]]);
    expect(text(toLogCommands(cmd('SET', 'k', 'v', 'EXAT', '1800000000'), OK, NOW))).to.deep.equal([['SET', 'k', 'v'], ['PEXPIREAT', 'k', '1800000000000']]);
    expect(text(toLogCommands(cmd('SET', 'k', 'v', 'KEEPTTL'), OK, NOW))).to.deep.equal([['SET', 'k', 'v', 'KEEPTTL']]);
    expect(text(toLogCommands(cmd('SET', 'k', 'v'), OK, NOW))).to.deep.equal([['SET', 'k', 'v']]);
  });

  it('does not log a SET whose condition refused it, and reads GET replies right', () => {
    expect(toLogCommands(cmd('SET', 'k', 'v', 'NX', 'EX', '5'), NULL_BULK, NOW)).to.equal(null);
    expect(toLogCommands(cmd('SET', 'k', 'v', 'XX'), NULL_BULK, NOW)).to.equal(null);
    // NX GET: performed when the old value was nil
    expect(text(toLogCommands(cmd('SET', 'k', 'v', 'NX', 'GET'), NULL_BULK, NOW))).to.deep.equal([['SET', 'k', 'v']]);
    expect(toLogCommands(cmd('SET', 'k', 'v', 'NX', 'GET'), bulk('old'), NOW)).to.equal(null);
    // XX GET: performed when there was an old value
    expect(text(toLogCommands(cmd('SET', 'k', 'v', 'XX', 'GET', 'EX', '1'), bulk('old'), NOW))).to.deep.equal([['SET', 'k', 'v'], ['PEXPIREAT', 'k', String(NOW + 1000)]]);
    expect(text(toLogCommands(cmd('SET', 'k', 'v', 'GET'), NULL_BULK, NOW))).to.deep.equal([['SET', 'k', 'v']]);
  });

  it('GETEX, SPOP, XADD and unchanged commands', () => {
    expect(text(toLogCommands(cmd('GETEX', 'k', 'EX', '3'), bulk('v'), NOW))).to.deep.equal([['PEXPIREAT', 'k', String(NOW + 3000)]]);
    expect(text(toLogCommands(cmd('GETEX', 'k', 'PERSIST'), bulk('v'), NOW))).to.deep.equal([['PERSIST', 'k']]);
    expect(toLogCommands(cmd('GETEX', 'k', 'EX', '3'), NULL_BULK, NOW)).to.equal(null);
    expect(toLogCommands(cmd('GETEX', 'k'), bulk('v'), NOW)).to.equal(null);
    expect(text(toLogCommands(cmd('SPOP', 's'), bulk('m1'), NOW))).to.deep.equal([['SREM', 's', 'm1']]);
    expect(text(toLogCommands(cmd('SPOP', 's', '3'), array(['a', 'b']), NOW))).to.deep.equal([['SREM', 's', 'a', 'b']]);
    expect(toLogCommands(cmd('SPOP', 's'), NULL_BULK, NOW)).to.equal(null);
    expect(toLogCommands(cmd('SPOP', 's', '2'), array([]), NOW)).to.equal(null);
    expect(text(toLogCommands(cmd('XADD', 'x', 'MAXLEN', '=', '10', '*', 'f', 'v'), bulk('5-0'), NOW))).to.deep.equal([['XADD', 'x', 'MAXLEN', '=', '10', '5-0', 'f', 'v']]);
    expect(text(toLogCommands(cmd('XADD', 'x', '7-1', 'f', 'v'), bulk('7-1'), NOW))).to.deep.equal([['XADD', 'x', '7-1', 'f', 'v']]);
    expect(toLogCommands(cmd('XADD', 'x', 'NOMKSTREAM', '*', 'f', 'v'), NULL_BULK, NOW)).to.equal(null);
    expect(text(toLogCommands(cmd('INCRBYFLOAT', 'f', '1.5'), bulk('3.5'), NOW))).to.deep.equal([['INCRBYFLOAT', 'f', '1.5']]);
    expect(text(toLogCommands(cmd('HSET', 'h', 'a', '1'), integer(1), NOW))).to.deep.equal([['HSET', 'h', 'a', '1']]);
  });

  it('XCLAIM and XAUTOCLAIM claim on the replica what they claimed on the master, whatever its idle times, with the delivery time the master set', () => {
    const NEVER = '9007199254740991';
    const AT = String(NOW);
    // XCLAIM: the deleted-entry removals and LASTID first (claiming nothing), then exactly the claimed ids.
    expect(text(toLogCommands(cmd('XCLAIM', 's', 'g', 'bob', '60000', '1-1', '2-1', '3-1', 'RETRYCOUNT', '5', 'LASTID', '3-1'), array([['1-1', ['f', 'v']]]), NOW))).to.deep.equal([
      ['XCLAIM', 's', 'g', 'bob', NEVER, '1-1', '2-1', '3-1', 'LASTID', '3-1'],
      ['XCLAIM', 's', 'g', 'bob', '0', '1-1', 'RETRYCOUNT', '5', 'LASTID', '3-1', 'TIME', AT],
    ]);
    expect(text(toLogCommands(cmd('xclaim', 's', 'g', 'bob', '60000', '1-1', '2-1', 'JUSTID', 'FORCE'), array(['1-1', '2-1']), NOW))).to.deep.equal([
      ['xclaim', 's', 'g', 'bob', NEVER, '1-1', '2-1'],
      ['xclaim', 's', 'g', 'bob', '0', '1-1', '2-1', 'JUSTID', 'FORCE', 'TIME', AT],
    ]);
    // IDLE (relative to the master's now) and TIME become one absolute TIME; the last one counts,
    // and one in the future or before 0 is now, as Redis takes them.
    const claimed = (...options: string[]): string[] => text(toLogCommands(cmd('XCLAIM', 's', 'g', 'bob', '0', '1-1', ...options), array(['1-1']), NOW))![1];
    expect(claimed('IDLE', '5000', 'JUSTID')).to.deep.equal(['XCLAIM', 's', 'g', 'bob', '0', '1-1', 'JUSTID', 'TIME', String(NOW - 5000)]);
    expect(claimed('time', '1700000000000')).to.deep.equal(['XCLAIM', 's', 'g', 'bob', '0', '1-1', 'TIME', '1700000000000']);
    expect(claimed('TIME', '1700000000000', 'IDLE', '10')).to.deep.equal(['XCLAIM', 's', 'g', 'bob', '0', '1-1', 'TIME', String(NOW - 10)]);
    expect(claimed('TIME', String(NOW + 60_000))).to.deep.equal(['XCLAIM', 's', 'g', 'bob', '0', '1-1', 'TIME', AT]);
    expect(claimed('IDLE', String(NOW + 1))).to.deep.equal(['XCLAIM', 's', 'g', 'bob', '0', '1-1', 'TIME', AT]);
    // Nothing idle enough: only the part that does not depend on idle time.
    expect(text(toLogCommands(cmd('XCLAIM', 's', 'g', 'bob', '60000', '1-1'), array([]), NOW))).to.deep.equal([['XCLAIM', 's', 'g', 'bob', NEVER, '1-1']]);
    expect(toLogCommands(cmd('XCLAIM', 's', 'g', 'bob', '60000', '1-1'), error('NOGROUP No such key'), NOW)).to.equal(null);
    // XAUTOCLAIM: [next, claimed, deleted] → XCLAIM 0 of the claimed, XACK of the deleted.
    expect(text(toLogCommands(cmd('XAUTOCLAIM', 's', 'g', 'carol', '60000', '0-0', 'COUNT', '10'), array(['0-0', [['1-1', ['f', 'v']]], ['3-1']]), NOW))).to.deep.equal([
      ['XCLAIM', 's', 'g', 'carol', '0', '1-1', 'TIME', AT],
      ['XACK', 's', 'g', '3-1'],
    ]);
    expect(text(toLogCommands(cmd('XAUTOCLAIM', 's', 'g', 'carol', '60000', '0-0', 'JUSTID'), array(['0-0', ['1-1', '2-1'], []]), NOW))).to.deep.equal([
      ['XCLAIM', 's', 'g', 'carol', '0', '1-1', '2-1', 'JUSTID', 'TIME', AT],
    ]);
    expect(toLogCommands(cmd('XAUTOCLAIM', 's', 'g', 'carol', '60000', '0-0'), array(['0-0', [], []]), NOW)).to.equal(null);
  });

  it('XREADGROUP replays as sent, then sets the delivery time the master set on the entries it made pending', () => {
    const AT = String(NOW);
    const read = cmd('XREADGROUP', 'GROUP', 'g', 'alice', 'COUNT', '10', 'STREAMS', 's', 't', '>', '>');
    const sent = read.map(String);
    // RESP2: [[key, entries], …]; an entry deleted since its delivery ([id, nil], from the history) stays out.
    const resp2 = array([['s', [['1-1', ['f', 'v']], ['2-1', null]]], ['t', [['5-1', ['f', 'w']]]]]);
    expect(text(toLogCommands(read, resp2, NOW))).to.deep.equal([
      sent,
      ['XCLAIM', 's', 'g', 'alice', '0', '1-1', 'JUSTID', 'TIME', AT],
      ['XCLAIM', 't', 'g', 'alice', '0', '5-1', 'JUSTID', 'TIME', AT],
    ]);
    // RESP3: the same as a map (flattened by the decoder).
    expect(text(toLogCommands(read, map(['s', [['1-1', ['f', 'v']]]]), NOW))).to.deep.equal([sent, ['XCLAIM', 's', 'g', 'alice', '0', '1-1', 'JUSTID', 'TIME', AT]]);
    // Nothing delivered (the consumer may still be new), NOACK (nothing pending), refused.
    expect(text(toLogCommands(read, NULL_ARRAY, NOW))).to.deep.equal([sent]);
    const noack = cmd('XREADGROUP', 'GROUP', 'g', 'alice', 'NOACK', 'STREAMS', 's', '>');
    expect(text(toLogCommands(noack, array([['s', [['1-1', ['f', 'v']]]]]), NOW))).to.deep.equal([noack.map(String)]);
    expect(toLogCommands(read, error('NOGROUP No such key'), NOW)).to.equal(null);
  });

  it("RESTORE's relative TTL becomes absolute (ABSTTL); an absolute or no TTL replays as sent", () => {
    expect(text(toLogCommands(cmd('RESTORE', 'k', '5000', 'payload', 'REPLACE'), OK, NOW))).to.deep.equal([['RESTORE', 'k', String(NOW + 5000), 'payload', 'REPLACE', 'ABSTTL']]);
    expect(text(toLogCommands(cmd('restore', 'k', '0', 'payload'), OK, NOW))).to.deep.equal([['restore', 'k', '0', 'payload']]);
    expect(text(toLogCommands(cmd('RESTORE', 'k', '1800000000000', 'payload', 'absttl', 'IDLETIME', '5'), OK, NOW))).to.deep.equal([['RESTORE', 'k', '1800000000000', 'payload', 'absttl', 'IDLETIME', '5']]);
    expect(toLogCommands(cmd('RESTORE', 'k', '5000', 'payload'), error('BUSYKEY Target key name already exists.'), NOW)).to.equal(null);
  });

  it('XADD/XTRIM with approximate trimming are logged with their exact outcome from the first-entry read behind them', () => {
    const xadd = cmd('XADD', 's', 'MAXLEN', '~', '100', '*', 'f', 'v');
    const xtrim = cmd('XTRIM', 's', 'MINID', '~', '5-0', 'LIMIT', '10');
    const emptied = cmd('XTRIM', 't', 'MAXLEN', '~', '0');
    const exact = cmd('XADD', 's', 'MAXLEN', '=', '100', '9-9', 'f', 'v');
    const queued = [xadd, firstEntryRead(Buffer.from('s')), xtrim, firstEntryRead(Buffer.from('s')), emptied, firstEntryRead(Buffer.from('t')), exact];
    const raw = array(['7-1', [['3-1', ['f', 'v']]], 2, [['5-0', ['f', 'v']]], 4, [], '9-9']);
    expect(text(execToLogCommands(queued, raw, NOW))).to.deep.equal([
      ['XADD', 's', 'MINID', '=', '3-1', '7-1', 'f', 'v'],
      ['XTRIM', 's', 'MINID', '=', '5-0'],
      ['XTRIM', 't', 'MAXLEN', '=', '0'],
      ['XADD', 's', 'MAXLEN', '=', '100', '9-9', 'f', 'v'],
    ]);
    expect(isApproxTrim(xadd) && isApproxTrim(xtrim) && !isApproxTrim(exact) && !isApproxTrim(cmd('XADD', 's', '*', 'f', '~'))).to.equal(true);
  });

  it("Pika's DELVX is logged as DEL when it deleted", () => {
    expect(text(toLogCommands(cmd('DELVX', 'k', 'v'), integer(1), NOW))).to.deep.equal([['DEL', 'k']]);
    expect(toLogCommands(cmd('delvx', 'k', 'v'), integer(0), NOW)).to.equal(null);
    expect(toLogCommands(cmd('DELVX', 'k', 'v'), integer(-1), NOW)).to.equal(null);
  });

  it('execToLogCommands drops errored commands, keeps SELECT and rewrites the rest', () => {
    const queued = [cmd('SET', 'a', '1', 'EX', '10'), cmd('INCR', 'str'), cmd('SELECT', '2'), cmd('SPOP', 's'), cmd('GET', 'a')];
    const raw = Buffer.concat([Buffer.from('*5\r\n'), OK, error('ERR value is not an integer'), OK, bulk('m'), bulk('1')]);
    const isWrite = (a: Buffer[]): boolean => a[0].toString().toUpperCase() !== 'GET';
    expect(text(execToLogCommands(queued, raw, NOW, isWrite))).to.deep.equal([
      ['SET', 'a', '1'],
      ['PEXPIREAT', 'a', String(NOW + 10_000)],
      ['SELECT', '2'],
      ['SREM', 's', 'm'],
    ]);
    expect(execToLogCommands(queued, NULL_ARRAY, NOW)).to.equal(null);
  });
});

/** Sends commands on one raw socket and returns each reply's exact bytes. */
class RawClient {
  private framer = new ReplyFramer();
  private waiting: ((b: Buffer) => void)[] = [];
  private constructor(private sock: net.Socket) {
    sock.on('data', (d) => {
      this.framer.feed(d);
      for (let r = this.framer.next(); r; r = this.framer.next()) this.waiting.shift()?.(Buffer.from(r.raw));
    });
  }
  static async connect(port: number): Promise<RawClient> {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    return new RawClient(sock);
  }
  send(args: Buffer[]): Promise<Buffer> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.sock.write(encodeArgs(args));
    });
  }
  close(): void {
    this.sock.destroy();
  }
}

for (const pikaProfile of [false, true]) {
  describe(`log rewrite replayed on a second node (pikaProfile: ${pikaProfile})`, () => {
    let source: RedisServer;
    let target: RedisServer;
    let raw: RawClient;
    let src: Redis;
    let dst: Redis;
    before(async () => {
      [source, target] = await Promise.all([startNode(pikaProfile), startNode(pikaProfile)]);
      raw = await RawClient.connect(source.port);
      src = source.client();
      dst = target.client();
    });
    after(async () => {
      raw?.close();
      src?.disconnect();
      dst?.disconnect();
      await Promise.all([source?.stop(), target?.stop()]);
    });

    it('reproduces values and absolute expirations', async () => {
      const writes = [
        cmd('SADD', 's', 'a', 'b', 'c', 'd', 'e'),
        cmd('SPOP', 's', '2'),
        cmd('SPOP', 's'),
        cmd('SET', 'k', 'v', 'EX', '100'),
        cmd('SET', 'k', 'w', 'NX', 'EX', '5'),
        cmd('SETEX', 'e', '200', 'x'),
        cmd('SET', 'p', '1'),
        cmd('EXPIRE', 'p', '300'),
        cmd('INCRBYFLOAT', 'f', '1.1'),
        cmd('INCRBYFLOAT', 'f', '2.25'),
        cmd('XADD', 'x', '*', 'f', 'v'),
        cmd('XADD', 'x', '*', 'g', 'w'),
      ];
      for (const w of writes) {
        const reply = await raw.send(w);
        const cmds = toLogCommands(w, reply, Date.now());
        for (const c of cmds ?? []) await dst.callBuffer(c[0].toString(), ...c.slice(1));
      }
      expect((await dst.smembers('s')).sort()).to.deep.equal((await src.smembers('s')).sort());
      expect(await dst.scard('s')).to.equal(2);
      expect(await dst.get('k')).to.equal('v');
      for (const key of ['k', 'e', 'p']) {
        const [a, b] = [await src.pexpiretime(key), await dst.pexpiretime(key)];
        expect(Math.abs(a - b)).to.be.lessThan(1000);
      }
      expect(await dst.get('f')).to.equal(await src.get('f'));
      expect(await dst.xrange('x', '-', '+')).to.deep.equal(await src.xrange('x', '-', '+'));
    });
  });
}

/** Pure protocol code: requests and replies split at every byte still parse the same. */
import { expect } from 'chai';
import { RequestParser, encodeArgs, splitInline } from '../src/resp/request-parser';
import { ReplyFramer } from '../src/resp/reply-framer';
import { decodeReply } from '../src/resp/decode';

function parseAll(chunks: Buffer[]): string[][] {
  const p = new RequestParser();
  const out: string[][] = [];
  for (const c of chunks) {
    p.feed(c);
    for (let r = p.next(); r; r = p.next()) out.push(r.args.map((a) => a.toString('latin1')));
  }
  return out;
}

describe('resp: request parser', () => {
  const stream = Buffer.concat([
    encodeArgs(['SET', 'key', 'va\r\nlue']),
    Buffer.from('PING\r\n'),
    encodeArgs(['MGET', 'a', '', Buffer.from([0, 255])]),
    Buffer.from('\r\n'),
    Buffer.from('set "a b" \'c d\' "\\x41\\n"\r\n'),
  ]);
  const expected = [['SET', 'key', 'va\r\nlue'], ['PING'], ['MGET', 'a', '', '\u0000\u00ff'], ['set', 'a b', 'c d', 'A\n']];

  it('parses multibulk and inline commands in one stream', () => {
    expect(parseAll([stream])).to.deep.equal(expected);
  });

  it('gives the same result when the stream is split at every byte boundary', () => {
    for (let i = 1; i < stream.length; i++) {
      expect(parseAll([stream.subarray(0, i), stream.subarray(i)]), `split at ${i}`).to.deep.equal(expected);
    }
    expect(parseAll([...stream].map((b) => Buffer.from([b])))).to.deep.equal(expected);
  });

  it('keeps the raw bytes of a multibulk request for forwarding', () => {
    const p = new RequestParser();
    const raw = encodeArgs(['GET', 'k']);
    p.feed(raw);
    expect(p.next()!.raw.equals(raw)).to.equal(true);
  });

  it('gives the name, argument count and arguments of a request without views made up front', () => {
    const p = new RequestParser();
    const raw = encodeArgs([Buffer.from('HsEt'), Buffer.from([0, 13, 10]), '', 'v'.repeat(40)]);
    p.feed(Buffer.concat([raw, Buffer.from('get k\r\n')]));
    const r = p.next()!;
    expect(r.name).to.equal('hset');
    expect(r.argc).to.equal(4);
    expect(r.buf.subarray(r.start, r.end).equals(raw)).to.equal(true);
    expect(r.args.map((a) => a.toString('latin1'))).to.deep.equal(['HsEt', '\u0000\r\n', '', 'v'.repeat(40)]);
    const inline = p.next()!;
    expect([inline.name, inline.argc]).to.deep.equal(['get', 2]);
    expect(inline.raw.equals(encodeArgs(['get', 'k']))).to.equal(true);
    expect(inline.buf.toString('latin1', inline.nameStart, inline.nameEnd)).to.equal('get');
  });

  it('refuses oversized bulk lengths and multibulk counts from the header alone', () => {
    const p1 = new RequestParser();
    p1.feed(Buffer.from('*1\r\n$536870913\r\n'));
    expect(() => p1.next()).to.throw(/invalid bulk length/);
    const p2 = new RequestParser();
    p2.feed(Buffer.from('*1048577\r\n'));
    expect(() => p2.next()).to.throw(/invalid multibulk length/);
    const p3 = new RequestParser();
    p3.feed(Buffer.from(`*1\r\n$${'9'.repeat(20)}\r\n`));
    expect(() => p3.next()).to.throw(/invalid bulk length/);
  });

  it('refuses a header line that never ends instead of buffering it', () => {
    const p = new RequestParser({ maxBulkLength: 100, maxMultibulkLength: 100, maxInlineLength: 1024 });
    p.feed(Buffer.from(`*1\r\n$${'1'.repeat(10)}`));
    expect(p.next()).to.equal(null);
    p.feed(Buffer.alloc(2000, 0x31));
    expect(() => p.next()).to.throw(/too big bulk count string|invalid bulk length/);
  });

  it('waits for a large bulk without re-parsing it per chunk', () => {
    const p = new RequestParser();
    const big = 'x'.repeat(1_000_000);
    const raw = encodeArgs(['SET', 'k', big]);
    for (let i = 0; i < raw.length; i += 1000) p.feed(raw.subarray(i, i + 1000));
    const r = p.next()!;
    expect(r.args[2].length).to.equal(1_000_000);
    expect(p.bufferedBytes).to.equal(0);
  });

  it('splits inline arguments like redis-cli quoting, and rejects unbalanced quotes', () => {
    expect(splitInline('a  "b c"  \'d\'')).to.deep.equal(['a', 'b c', 'd']);
    expect(() => splitInline('"abc')).to.throw(/unbalanced quotes/);
  });
});

describe('resp: reply framer', () => {
  const replies = [
    '+OK\r\n', '-ERR bad\r\n', ':42\r\n', '$5\r\nhe\r\no\r\n', '$-1\r\n', '*-1\r\n', '*0\r\n',
    '*3\r\n$1\r\na\r\n*2\r\n:1\r\n$0\r\n\r\n+x\r\n', '%1\r\n+k\r\n:1\r\n', '_\r\n', ',1.5\r\n',
  ];
  const stream = Buffer.from(replies.join(''));

  function frameAll(chunks: Buffer[]): string[] {
    const f = new ReplyFramer();
    const out: string[] = [];
    for (const c of chunks) {
      f.feed(c);
      for (let r = f.next(); r; r = f.next()) out.push(r.raw.toString());
    }
    return out;
  }

  it('frames each reply exactly, split at every byte boundary', () => {
    expect(frameAll([stream])).to.deep.equal(replies);
    for (let i = 1; i < stream.length; i++) expect(frameAll([stream.subarray(0, i), stream.subarray(i)]), `split at ${i}`).to.deep.equal(replies);
  });

  it('reports bytes that are not RESP as MALFORMED_RESPONSE', () => {
    const f = new ReplyFramer();
    f.feed(Buffer.from('hello\r\n'));
    expect(() => f.next()).to.throw(/unexpected byte/);
  });

  it('decodes a framed reply with redis-parser', () => {
    expect(decodeReply(Buffer.from('*2\r\n$1\r\na\r\n:3\r\n'))).to.deep.equal([Buffer.from('a'), 3]);
    expect(decodeReply(Buffer.from('-ERR x\r\n'))).to.be.instanceOf(Error);
  });
});

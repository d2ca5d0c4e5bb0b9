/** The data path's byte batches: ranges of other buffers, merged when adjacent, copied once. */
import { expect } from 'chai';
import { Outbox } from '../src/backend/outbox';

describe('Outbox', () => {
  it('merges adjacent ranges of one buffer and writes a single range as a view', () => {
    const a = Buffer.from('0123456789');
    const box = new Outbox();
    box.add(a, 2, 4);
    box.add(a, 4, 7);
    expect(box.length).to.equal(5);
    const data = box.take()!;
    expect(data.toString()).to.equal('23456');
    expect([data.buffer, data.byteOffset]).to.deep.equal([a.buffer, a.byteOffset + 2]); // a view, no copy
    expect(box.length).to.equal(0);
    expect(box.take()).to.equal(undefined);
    box.add(a, 0, a.length);
    expect(box.take()).to.equal(a);
  });

  it('copies ranges of several buffers, short and long, in the order added', () => {
    const a = Buffer.from('a'.repeat(100) + 'b'.repeat(100));
    const c = Buffer.from('+OK\r\n');
    const box = new Outbox();
    box.add(a, 0, 100);
    box.add(c, 0, 5);
    box.add(a, 100, 200); // adjacent in `a`, but not to the last range: kept apart
    box.add(c, 1, 3);
    const data = box.take()!;
    expect(data.toString()).to.equal('a'.repeat(100) + '+OK\r\n' + 'b'.repeat(100) + 'OK');
  });

  it('clear() drops what waits', () => {
    const box = new Outbox();
    box.add(Buffer.from('xyz'), 0, 3);
    box.clear();
    expect(box.length).to.equal(0);
    expect(box.take()).to.equal(undefined);
  });
});

/** The ring-buffer FIFO behind request and reply matching: order kept across growth and wrap-around. */
import { expect } from 'chai';
import { Fifo } from '../src/backend/fifo';

describe('Fifo', () => {
  it('keeps order through growth, wrap-around, drain and shrinking, like an array queue', () => {
    const fifo = new Fifo<number>();
    const ref: number[] = [];
    let next = 0;
    let seed = 7;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let i = 0; i < 50_000; i++) {
      // Phases that fill up (growth past the shrink size) and phases that empty out.
      const pushBias = Math.floor(i / 5000) % 2 === 0 ? 0.7 : 0.3;
      if (random() < pushBias) {
        fifo.push(next);
        ref.push(next++);
      } else {
        expect(fifo.shift()).to.equal(ref.shift());
      }
      expect(fifo.length).to.equal(ref.length);
      if (i % 9999 === 0) expect(fifo.drain()).to.deep.equal(ref.splice(0));
    }
    expect(fifo.drain()).to.deep.equal(ref);
    expect(fifo.shift()).to.equal(undefined);
  });
});

/** The keep-alive's interval rule and its ping-only-when-idle ticks (src/backend/keep-alive.ts). */
import { expect } from 'chai';
import { DEFAULT_INTERVAL_MS, KeepAlive, idleTimeoutSeconds, keepAliveIntervalMs } from '../src/backend/keep-alive';

describe('keep-alive', () => {
  it('reads the node timeout from CONFIG GET timeout, and nothing else', () => {
    expect(idleTimeoutSeconds([Buffer.from('timeout'), Buffer.from('60')])).to.equal(60);
    expect(idleTimeoutSeconds([Buffer.from('timeout'), Buffer.from('0')])).to.equal(0);
    expect(idleTimeoutSeconds([])).to.equal(undefined); // a node without the setting
    expect(idleTimeoutSeconds(new Error('ERR unknown command'))).to.equal(undefined);
    expect(idleTimeoutSeconds([Buffer.from('maxclients'), Buffer.from('60')])).to.equal(undefined);
    expect(idleTimeoutSeconds([Buffer.from('timeout'), Buffer.from('-1')])).to.equal(undefined);
  });

  it('pings at the configured interval, else a third of the node timeout, none for 0, a default when unknown', () => {
    expect(keepAliveIntervalMs(15_000, 60)).to.equal(15_000);
    expect(keepAliveIntervalMs(0, 60)).to.equal(20_000);
    expect(keepAliveIntervalMs(undefined, 1)).to.equal(333);
    expect(keepAliveIntervalMs(0, 0)).to.equal(0);
    expect(keepAliveIntervalMs(0, undefined)).to.equal(DEFAULT_INTERVAL_MS);
  });

  it('pings on a tick only when nothing was written since the previous tick', () => {
    let pings = 0;
    const keepAlive = new KeepAlive(() => pings++);
    // An interval no test waits for: the ticks below are driven by hand.
    keepAlive.start(3_600_000);
    keepAlive.tick();
    expect(pings, 'the first tick after start').to.equal(0);
    keepAlive.tick();
    expect(pings, 'a whole tick without a write').to.equal(1);
    keepAlive.wrote();
    keepAlive.tick();
    expect(pings, 'a write during the tick').to.equal(1);
    keepAlive.tick();
    expect(pings).to.equal(2);
    expect(keepAlive.pings).to.equal(2);
    expect(keepAlive.intervalMs).to.equal(3_600_000);
    keepAlive.stop();
    keepAlive.start(0);
    expect(keepAlive.intervalMs, 'a node without a timeout gets no pings').to.equal(0);
  });
});

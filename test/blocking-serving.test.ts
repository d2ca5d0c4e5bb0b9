/**
 * BlockedClients' serving count (pure): a writer's reply waits until the clients its write woke
 * have been served (Redis serves them before its next command), and nothing else holds it — a
 * client whose pop already ended and then closes must not leave a count behind (it did: every
 * later writer that woke anyone waited for the 2 s bound, seen as 2-6 s tests in Redis's list unit).
 */
import { expect } from 'chai';
import { BlockedClients } from '../src/server/blocking';

const key = (k: string): Buffer => Buffer.from(k);

describe('blocked clients: serving before the writer is answered (pure)', () => {
  it('a write that wakes a client is answered once that client settled; one that wakes nobody at once', async () => {
    const blocked = new BlockedClients();
    const owner = {};
    const waiter = blocked.register(owner, 0, [key('list')]);
    expect(blocked.applied({ kind: 'keys', db: 0, keys: [key('other')] }, {})).to.equal(undefined);
    const served = blocked.applied({ kind: 'keys', db: 0, keys: [key('list')] }, {});
    expect(served).to.be.instanceOf(Promise);
    let done = false;
    void served!.then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(done, 'still serving').to.equal(false);
    waiter.settle();
    await new Promise((r) => setImmediate(r));
    expect(done).to.equal(true);
  });

  it('a client whose pop ended, then closing (a late wake-up), leaves nothing to wait for', () => {
    const blocked = new BlockedClients();
    const waiter = blocked.register({}, 0, [key('list')]);
    blocked.applied({ kind: 'keys', db: 0, keys: [key('list')] }, {});
    blocked.unregister(waiter);
    waiter.wake(); // its session's close listener
    blocked.register({}, 0, [key('list')]);
    expect(blocked.whenServed()).to.equal(undefined);
  });
});

/** The one retry policy: bounded attempts and time, fatal errors stop at once, every cause kept. */
import { expect } from 'chai';
import { SyncProxyError } from '../src/errors';
import { RetryPolicy } from '../src/retry';

describe('retry policy', () => {
  it('retries retryable errors up to maxAttempts and lists every attempt in the final error', async () => {
    const policy = new RetryPolicy({ maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 2 });
    let calls = 0;
    const err = await policy
      .run('meta fetch', async () => {
        calls++;
        throw new SyncProxyError('MASTER_TIMEOUT', `timeout ${calls}`);
      })
      .catch((e: SyncProxyError) => e);
    expect(calls).to.equal(3);
    expect(err.code).to.equal('RETRIES_EXHAUSTED');
    expect(err.message).to.equal('meta fetch failed after 3 attempts: [1] MASTER_TIMEOUT: timeout 1 [2] MASTER_TIMEOUT: timeout 2 [3] MASTER_TIMEOUT: timeout 3');
  });

  it('stops at the first fatal error', async () => {
    const policy = new RetryPolicy({ maxAttempts: 5, baseDelayMs: 1 });
    let calls = 0;
    const err = await policy
      .run('handshake', async () => {
        calls++;
        throw new SyncProxyError('AUTH_FAILED', 'wrong masterauth');
      })
      .catch((e: SyncProxyError) => e);
    expect(calls).to.equal(1);
    expect(err.message).to.match(/stopped by a fatal error after 1 attempt: \[1\] AUTH_FAILED/);
  });

  it('returns the first success and never resolves without one', async () => {
    const policy = new RetryPolicy({ maxAttempts: 4, baseDelayMs: 1 });
    let calls = 0;
    const value = await policy.run('x', async () => {
      if (++calls < 3) throw new SyncProxyError('MASTER_CONNECTION_LOST', 'cut');
      return 'ok';
    });
    expect([value, calls]).to.deep.equal(['ok', 3]);
  });

  it('bounds total time and grows delays exponentially within the cap, with jitter', () => {
    const policy = new RetryPolicy({ baseDelayMs: 100, maxDelayMs: 1000 }, () => 1);
    expect([2, 3, 4, 5, 6, 7].map((n) => policy.delayFor(n))).to.deep.equal([100, 200, 400, 800, 1000, 1000]);
    const low = new RetryPolicy({ baseDelayMs: 100, maxDelayMs: 1000 }, () => 0);
    expect(low.delayFor(3)).to.equal(100);
  });
});

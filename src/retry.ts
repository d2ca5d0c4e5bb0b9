/**
 * The one retry policy: exponential backoff with full jitter, bounded attempts and bounded total
 * time, retryable vs fatal decided by the error catalogue. Every retry loop in the project goes
 * through `RetryPolicy.run` or, for the replica state machine (which shows backoff as a state),
 * through `AttemptHistory` + `RetryPolicy.delayFor` so the numbers and the final message agree.
 */
import { SyncProxyError, describeError, toSyncProxyError } from './errors';

export interface RetryOptions {
  /** Attempts in total, including the first. */
  maxAttempts: number;
  /** Delay before the second attempt; doubles each time. */
  baseDelayMs: number;
  /** Upper bound of one delay. */
  maxDelayMs: number;
  /** Give up once this much time has passed since the first attempt started. */
  maxTotalMs: number;
}

export const DEFAULT_RETRY: Readonly<RetryOptions> = Object.freeze({
  maxAttempts: 5,
  baseDelayMs: 200,
  maxDelayMs: 10_000,
  maxTotalMs: 10 * 60_000,
});

const BACKOFF_MULTIPLIER = 2;
/** Fraction of the delay that is randomised; the rest is fixed so delays never collapse to ~0. */
const JITTER_FRACTION = 0.5;

export interface AttemptRecord {
  attempt: number;
  at: number;
  error: SyncProxyError;
}

/** Every attempt's cause, so the final error can list them all. */
export class AttemptHistory {
  readonly records: AttemptRecord[] = [];
  readonly startedAt = Date.now();

  record(error: unknown): SyncProxyError {
    const err = toSyncProxyError(error);
    this.records.push({ attempt: this.records.length + 1, at: Date.now(), error: err });
    return err;
  }

  get attempts(): number {
    return this.records.length;
  }

  get last(): SyncProxyError | undefined {
    return this.records[this.records.length - 1]?.error;
  }

  /** `[1] MASTER_UNREACHABLE: ... [2] ...` */
  summary(): string {
    return this.records.map((r) => `[${r.attempt}] ${describeError(r.error)}`).join(' ');
  }

  /** The error that ends a retry loop: RETRIES_EXHAUSTED (or the fatal error) with all causes. */
  finalError(what: string): SyncProxyError {
    const last = this.last;
    const n = this.records.length;
    const verdict = last && !last.retryable ? `stopped by a fatal error after ${n} attempt${n === 1 ? '' : 's'}` : `failed after ${n} attempt${n === 1 ? '' : 's'}`;
    return new SyncProxyError('RETRIES_EXHAUSTED', `${what} ${verdict}: ${this.summary()}`, {
      cause: last,
      details: { attempts: n, lastCode: last?.code },
    });
  }
}

export class RetryPolicy {
  readonly options: Readonly<RetryOptions>;
  private readonly random: () => number;

  constructor(options: Partial<RetryOptions> = {}, random: () => number = Math.random) {
    this.options = Object.freeze({ ...DEFAULT_RETRY, ...options });
    this.random = random;
  }

  /** Delay before attempt `nextAttempt` (2 = first retry). */
  delayFor(nextAttempt: number): number {
    const exp = this.options.baseDelayMs * Math.pow(BACKOFF_MULTIPLIER, Math.max(0, nextAttempt - 2));
    const capped = Math.min(this.options.maxDelayMs, exp);
    return Math.round(capped * (1 - JITTER_FRACTION) + capped * JITTER_FRACTION * this.random());
  }

  /** Whether another attempt is allowed after `history`'s last failure. */
  shouldRetry(history: AttemptHistory): boolean {
    const last = history.last;
    if (!last || !last.retryable) return false;
    if (history.attempts >= this.options.maxAttempts) return false;
    const elapsed = Date.now() - history.startedAt;
    return elapsed + this.delayFor(history.attempts + 1) <= this.options.maxTotalMs;
  }

  /**
   * Runs `fn` until it succeeds, a fatal error occurs or the bounds are reached. Throws
   * RETRIES_EXHAUSTED carrying every attempt's cause; never resolves without `fn` having resolved.
   */
  async run<T>(what: string, fn: (attempt: number) => Promise<T>, hooks: RunHooks = {}): Promise<T> {
    const history = new AttemptHistory();
    for (;;) {
      hooks.signal?.throwIfAborted();
      try {
        return await fn(history.attempts + 1);
      } catch (error) {
        const err = history.record(error);
        hooks.onFailure?.(err, history.attempts);
        if (!this.shouldRetry(history)) throw history.finalError(what);
        await sleep(this.delayFor(history.attempts + 1), hooks.signal);
      }
    }
  }
}

export interface RunHooks {
  signal?: AbortSignal;
  onFailure?: (err: SyncProxyError, attempt: number) => void;
}

/** setTimeout as a promise that rejects when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Keeps a long-lived node connection from being timed out by the node while it sits idle.
 *
 * Pika's shipped `timeout : 60` (Redis's `timeout`) ends a client connection that sent nothing for
 * that many seconds. Pika 4.0.1 does not even close the socket: it stops reading it, so the next
 * request on it is never answered and never fails (seen with redis-cli and a raw socket). Every
 * long-lived connection of the proxy to its node therefore sends a PING when it has written
 * nothing for a while: one `KeepAlive` per connection, the connection supplying how to ping (its
 * own FIFO, the reply consumed internally) and marking each write with `wrote()`.
 *
 * The interval is `--node-keepalive-ms` when set, else a third of the node's `timeout` learnt with
 * `CONFIG GET timeout` when the connection comes up (0 = the node never times out: no pings), else
 * (CONFIG refused, renamed, unparsable) DEFAULT_INTERVAL_MS. A tick pings only when nothing was
 * written since the previous tick, so the longest silence is under two intervals: two thirds of
 * the node's timeout.
 */
import type { Decoded } from '../resp/decode';

/** The request that learns the node's idle timeout, in seconds. */
export const IDLE_TIMEOUT_QUERY: readonly string[] = ['CONFIG', 'GET', 'timeout'];

/** When the node's timeout is unknown: well inside Pika's shipped 60 s, rare enough to cost nothing. */
export const DEFAULT_INTERVAL_MS = 10_000;
/** No node timeout is below 1 s (it is set in whole seconds); this only bounds a configured value. */
export const MIN_INTERVAL_MS = 100;

/**
 * The node's idle timeout in seconds from the decoded reply of IDLE_TIMEOUT_QUERY (`timeout`,
 * `<n>`); undefined when the reply does not say (an error, or a node without the setting).
 */
export function idleTimeoutSeconds(reply: Decoded | unknown): number | undefined {
  if (!Array.isArray(reply) || reply.length < 2) return undefined;
  const name = reply[0];
  const value = reply[1];
  if (!Buffer.isBuffer(name) || name.toString('latin1').toLowerCase() !== 'timeout' || !Buffer.isBuffer(value)) return undefined;
  const text = value.toString('latin1');
  if (!/^\d+$/.test(text)) return undefined;
  const seconds = Number(text);
  return Number.isSafeInteger(seconds) ? seconds : undefined;
}

/**
 * The ping interval: the configured one (> 0) wins; else a third of the node's timeout (0 when
 * the node has none); else DEFAULT_INTERVAL_MS.
 */
export function keepAliveIntervalMs(configuredMs: number | undefined, nodeTimeoutSeconds: number | undefined): number {
  if (configuredMs !== undefined && configuredMs > 0) return Math.max(MIN_INTERVAL_MS, configuredMs);
  if (nodeTimeoutSeconds === undefined) return DEFAULT_INTERVAL_MS;
  if (nodeTimeoutSeconds === 0) return 0;
  return Math.max(MIN_INTERVAL_MS, Math.floor((nodeTimeoutSeconds * 1000) / 3));
}

export class KeepAlive {
  private timer?: NodeJS.Timeout;
  private wroteSinceTick = false;
  private interval = 0;
  /** Pings sent (visible to tests and logs). */
  pings = 0;

  /** `ping` sends one PING on the connection, behind whatever is queued, and consumes its reply. */
  constructor(private readonly ping: () => void) {}

  get intervalMs(): number {
    return this.interval;
  }

  /** Starts ticking every `intervalMs` (0 stops); a second call replaces the interval. */
  start(intervalMs: number): void {
    this.stop();
    this.interval = intervalMs;
    if (intervalMs <= 0) return;
    this.wroteSinceTick = true;
    // Unref'd: a keep-alive never keeps the process alive on its own.
    this.timer = setInterval(() => this.tick(), intervalMs).unref();
  }

  /** The connection wrote to the node: no ping is owed for this tick (a flag: hot path). */
  wrote(): void {
    this.wroteSinceTick = true;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One interval has passed (the timer's call; public so a test can drive it without timers). */
  tick(): void {
    if (!this.wroteSinceTick) {
      this.pings++;
      this.ping();
    }
    this.wroteSinceTick = false;
  }
}

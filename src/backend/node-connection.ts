/**
 * One RESP connection to the node behind the proxy. Requests are written as raw bytes (one write
 * per event-loop turn), replies are framed without decoding and matched FIFO to their
 * callbacks. When the link drops, every request in flight fails with BACKEND_CONNECTION_LOST;
 * while it is down, new requests fail at once with BACKEND_UNAVAILABLE naming the node; a
 * reconnecting connection retries with the retry policy's backoff.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Logger } from 'pino';
import { SyncProxyError, describeError } from '../errors';
import { decodeReply } from '../resp/decode';
import { encodeArgs } from '../resp/request-parser';
import { FramedReply, ReplyFramer } from '../resp/reply-framer';
import { RetryPolicy } from '../retry';
import { Fifo } from './fifo';
import { IDLE_TIMEOUT_QUERY, KeepAlive, idleTimeoutSeconds, keepAliveIntervalMs } from './keep-alive';
import { Outbox } from './outbox';
import { TurnWriter, writeRequestsAtTurnEnd } from '../turn-end';

export type ReplyCallback = (reply: FramedReply | null, error?: SyncProxyError) => void;

/**
 * Receives replies as byte ranges of the read buffer, with the tag its request was sent with:
 * the data path's way, without a closure per request or an object and a view per reply.
 */
export interface ReplyTarget {
  /** The reply is `buf[start, end)`; `buf` is never reused, so a view of it may be kept. */
  onReply(tag: number, buf: Buffer, start: number, end: number): void;
  onReplyError(tag: number, error: SyncProxyError): void;
}

/** Hands the reply `buf[start, end)` to a callback (as a FramedReply) or a target. */
export function deliverReply(target: ReplyCallback | ReplyTarget, tag: number, buf: Buffer, start: number, end: number): void {
  if (typeof target === 'function') target({ raw: buf.subarray(start, end), type: buf[start] });
  else target.onReply(tag, buf, start, end);
}

export function deliverError(target: ReplyCallback | ReplyTarget, tag: number, error: SyncProxyError): void {
  if (typeof target === 'function') target(null, error);
  else target.onReplyError(tag, error);
}

export interface NodeConnectionOptions {
  host: string;
  port: number;
  password?: string;
  logger: Logger;
  /** Reconnect after a drop (the shared ordered connection); dedicated connections do not. */
  reconnect: boolean;
  retry?: RetryPolicy;
  connectTimeoutMs?: number;
  /** PING interval on an idle link; 0 or absent: a third of the node's `timeout` (./keep-alive.ts). */
  keepAliveMs?: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 3000;
const PING = encodeArgs(['PING']);
const TIMEOUT_QUERY = encodeArgs([...IDLE_TIMEOUT_QUERY]);
/** A keep-alive reply is consumed here, never delivered to a client. */
const ignoreReply: ReplyCallback = () => undefined;
/** Reconnection never gives up (the node may come back at any time); only the delay is bounded. */
const RECONNECT_POLICY = new RetryPolicy({ maxAttempts: Number.MAX_SAFE_INTEGER, baseDelayMs: 100, maxDelayMs: 2000, maxTotalMs: Number.MAX_SAFE_INTEGER });

export class NodeConnection extends EventEmitter implements TurnWriter {
  private socket?: net.Socket;
  private framer = new ReplyFramer();
  private readonly pending = new Fifo<ReplyCallback | ReplyTarget>();
  /** The tag of each pending request (0 for callbacks), in the same order. */
  private readonly tags = new Fifo<number>();
  private up = false;
  private closing = false;
  private readonly outbox = new Outbox();
  private flushScheduled = false;
  private reconnectAttempt = 0;
  /** Link-ups after the first (a reconnect after a drop or a failed start); for /metrics. */
  private ups = 0;
  /** Since when the link is down (construction counts as down); undefined while up. */
  private downSince: number | undefined = Date.now();
  private reconnectTimer?: NodeJS.Timeout;
  private lastError?: SyncProxyError;
  /** The db the node connection has selected (tracked by the data path). */
  db = 0;
  /** The RESP version its replies come in (HELLO; tracked by the data path): 2 on every new link. */
  proto: 2 | 3 = 2;
  /**
   * Frames that arrive with no request waiting (pub/sub pushes) go here. While it is set the
   * keep-alive sends nothing: a push arriving before the PONG would be taken for it, and neither
   * Pika nor Redis times out a subscribed connection.
   */
  pushSink?: (reply: FramedReply) => void;
  private readonly keepAlive = new KeepAlive(() => {
    if (this.up && !this.pushSink) this.send(PING, ignoreReply);
  });

  constructor(private readonly options: NodeConnectionOptions) {
    super();
  }

  get address(): string {
    return `${this.options.host}:${this.options.port}`;
  }

  get isUp(): boolean {
    return this.up;
  }

  /** Times the link came up again after the first time. */
  get reconnects(): number {
    return Math.max(0, this.ups - 1);
  }

  /** When the link went down (or the connection was made), undefined while it is up. */
  get downSinceMs(): number | undefined {
    return this.downSince;
  }

  get inFlight(): number {
    return this.pending.length;
  }

  /** Connects; resolves on the first successful handshake or rejects when reconnect is off. */
  connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onUp = (): void => {
        this.off('connect-failed', onFail);
        resolve();
      };
      const onFail = (err: SyncProxyError): void => {
        if (this.options.reconnect) return;
        this.off('up', onUp);
        reject(err);
      };
      this.once('up', onUp);
      this.on('connect-failed', onFail);
      this.open();
    });
  }

  private open(): void {
    if (this.closing) return;
    const socket = net.connect({ host: this.options.host, port: this.options.port });
    this.socket = socket;
    this.framer = new ReplyFramer();
    this.db = 0;
    this.proto = 2;
    socket.setNoDelay(true);
    socket.setTimeout(this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      socket.setTimeout(0);
      socket.setKeepAlive(true, 10_000);
      if (!this.options.password) return this.markUp();
      this.write(encodeArgs(['AUTH', this.options.password]), (reply, err) => {
        if (err || !reply || reply.type === 45) {
          const text = err ? describeError(err) : reply!.raw.toString().trim();
          this.lastError = new SyncProxyError('BACKEND_UNAVAILABLE', `backend ${this.address} refused the proxy's AUTH: ${text}`);
          this.options.logger.error({ err: this.lastError.message }, 'backend authentication failed');
          socket.destroy();
          return;
        }
        this.markUp();
      });
    });
    socket.on('timeout', () => socket.destroy(new Error(`connect timeout after ${this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS} ms`)));
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (err) => {
      this.lastError = new SyncProxyError('BACKEND_UNAVAILABLE', `backend ${this.address} unavailable: ${err.message}`, { cause: err });
    });
    socket.on('close', () => this.onClose(socket));
  }

  private markUp(): void {
    this.up = true;
    this.ups++;
    this.downSince = undefined;
    this.reconnectAttempt = 0;
    this.lastError = undefined;
    this.options.logger.info({ backend: this.address }, 'backend link up');
    this.startKeepAlive();
    this.emit('up');
  }

  /**
   * Pings the idle link at the configured interval, or at a third of the node's `timeout` learnt
   * now (the query is queued before anything a listener of 'up' sends; its reply is consumed here).
   */
  private startKeepAlive(): void {
    const configured = this.options.keepAliveMs;
    if (configured !== undefined && configured > 0) return this.keepAlive.start(keepAliveIntervalMs(configured, undefined));
    this.keepAlive.start(keepAliveIntervalMs(undefined, undefined));
    const socket = this.socket;
    this.send(TIMEOUT_QUERY, (reply) => {
      if (socket !== this.socket || !this.up) return;
      const seconds = reply && reply.type === 42 ? idleTimeoutSeconds(decodeReply(reply.raw)) : undefined;
      const interval = keepAliveIntervalMs(undefined, seconds);
      this.keepAlive.start(interval);
      this.options.logger.debug({ backend: this.address, nodeTimeoutSeconds: seconds ?? 'unknown', keepAliveMs: interval }, 'node idle timeout learnt');
    });
  }

  /** The keep-alive's current PING interval (0 = none) and the pings it sent. */
  get keepAliveStatus(): { intervalMs: number; pings: number } {
    return { intervalMs: this.keepAlive.intervalMs, pings: this.keepAlive.pings };
  }

  private onData(chunk: Buffer): void {
    const framer = this.framer;
    framer.feed(chunk);
    for (;;) {
      try {
        if (!framer.advance()) return;
      } catch (err) {
        this.options.logger.error({ err: (err as Error).message }, 'malformed reply from backend; dropping the link');
        this.socket?.destroy();
        return;
      }
      const buf = framer.current;
      const start = framer.lastStart;
      const end = framer.lastEnd;
      const target = this.pending.shift();
      const tag = this.tags.shift()!;
      if (target) deliverReply(target, tag, buf, start, end);
      else if (this.pushSink) this.pushSink({ raw: buf.subarray(start, end), type: buf[start] });
      else this.options.logger.warn('reply from backend with no request waiting; ignored');
    }
  }

  private onClose(socket: net.Socket): void {
    if (socket !== this.socket) return;
    const wasUp = this.up;
    this.up = false;
    if (wasUp) this.downSince = Date.now();
    this.keepAlive.stop();
    this.socket = undefined;
    this.outbox.clear();
    const lost = this.pending.drain();
    const tags = this.tags.drain();
    const error = wasUp
      ? new SyncProxyError('BACKEND_CONNECTION_LOST', `backend ${this.address} connection lost`, { cause: this.lastError })
      : this.lastError ?? new SyncProxyError('BACKEND_UNAVAILABLE', `backend ${this.address} unavailable`);
    if (!wasUp) this.lastError = error;
    lost.forEach((target, i) => deliverError(target, tags[i], error));
    if (wasUp) {
      this.options.logger.warn({ backend: this.address, inFlight: lost.length }, 'backend link down');
      this.emit('down', { hadInFlight: lost.length > 0 });
    } else {
      this.emit('connect-failed', error);
    }
    if (this.options.reconnect && !this.closing) {
      const delay = (this.options.retry ?? RECONNECT_POLICY).delayFor(++this.reconnectAttempt + 1);
      this.reconnectTimer = setTimeout(() => this.open(), delay);
    }
  }

  /**
   * Sends one request (raw RESP bytes). The callback gets the framed reply, or an error when the
   * link is down or drops before the reply.
   */
  send(raw: Buffer, cb: ReplyCallback): void {
    this.sendRange(raw, 0, raw.length, cb, 0);
  }

  /**
   * Sends the request `buf[start, end)`; `target` gets its reply (or error) with `tag`. `buf` must
   * not change until the turn ends (the bytes are copied when the turn's batch is written).
   */
  sendRange(buf: Buffer, start: number, end: number, target: ReplyCallback | ReplyTarget, tag: number): void {
    if (!this.up || !this.socket) {
      const err = this.lastError ?? new SyncProxyError('BACKEND_UNAVAILABLE', `backend ${this.address} unavailable`);
      queueMicrotask(() => deliverError(target, tag, err));
      return;
    }
    this.pending.push(target);
    this.tags.push(tag);
    // Requests of one event-loop turn leave in one write: one syscall and one buffer for the batch
    // (cork + many small writes costs a writev entry per request).
    this.outbox.add(buf, start, end);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      writeRequestsAtTurnEnd(this);
    }
  }

  /** The handshake's AUTH: written at once, before the link counts as up. */
  private write(raw: Buffer, cb: ReplyCallback): void {
    this.pending.push(cb);
    this.tags.push(0);
    this.socket!.write(raw);
  }

  /** Writes the turn's requests (TurnWriter). */
  writeTurn(): void {
    this.flushScheduled = false;
    const data = this.outbox.take();
    if (data && this.socket) {
      this.socket.write(data);
      this.keepAlive.wrote();
    }
  }

  /** Bytes queued in the socket and not yet sent (backpressure signal). */
  get writableLength(): number {
    return this.socket?.writableLength ?? 0;
  }

  /** Stops reconnecting; waits up to `drainMs` for replies in flight, then closes. */
  async close(drainMs = 2000): Promise<void> {
    this.closing = true;
    this.keepAlive.stop();
    clearTimeout(this.reconnectTimer);
    const deadline = Date.now() + drainMs;
    while (this.pending.length > 0 && this.up && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    const socket = this.socket;
    if (!socket) return;
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.end();
      setTimeout(() => socket.destroy(), 500).unref();
    });
  }

  /** Immediate close (dedicated connections whose client went away). */
  destroy(): void {
    this.closing = true;
    this.keepAlive.stop();
    clearTimeout(this.reconnectTimer);
    this.socket?.destroy();
  }
}

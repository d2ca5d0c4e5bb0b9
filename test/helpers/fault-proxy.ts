/**
 * A small real TCP fault proxy for tests: clients connect to `proxy.port`, bytes are forwarded to
 * `target`, and `setMode()` injects a network fault — at any time, also on live connections.
 *
 * Modes (direction 'up' = client → target, 'down' = target → client):
 *   'pass'                      forward unchanged
 *   'refuse'                    stop listening (new connects get ECONNREFUSED); live connections
 *                               are left alone — combine with cutAll() to simulate a dead peer
 *   'blackhole'                 accept, never forward, never answer: like a network partition,
 *                               data is held (not dropped) and flows again when the mode changes
 *   { mode: 'delay', ms }       every chunk is forwarded `ms` after it arrived (order kept)
 *   { mode: 'throttle', bytesPerSec }  token bucket per connection and direction
 *   { mode: 'cut-after', bytes, direction, once? }  forward `bytes` (counted per connection from
 *                               the moment the mode applies) then destroy both sides
 *   { mode: 'corrupt', afterBytes, direction, count, once? }  flip every bit of `count` bytes
 *                               starting `afterBytes` into the stream (per connection)
 * `once: true` switches back to 'pass' after the fault fired, so a retry on a new connection is
 * clean. Backpressure: a pump pauses its source while the destination needs draining or while
 * more than HIGH_WATER bytes wait in its queue, so a slow side never makes this process buffer.
 */
import net from 'node:net';

export type Direction = 'up' | 'down';

/** Bytes a pump queues before it pauses its source. */
const HIGH_WATER = 256 * 1024;
/** Throttle burst: a tenth of a second of budget, so small writes are not delayed needlessly. */
const BURST_FRACTION = 0.1;
/** Throttled writes happen in slices of at least this fraction of a second's budget. */
const THROTTLE_SLICE = 0.02;

export type FaultMode =
  | 'pass'
  | 'refuse'
  | 'blackhole'
  | { mode: 'pass' }
  | { mode: 'refuse' }
  | { mode: 'blackhole' }
  | { mode: 'delay'; ms: number }
  | { mode: 'throttle'; bytesPerSec: number }
  | { mode: 'cut-after'; bytes: number; direction: Direction; once?: boolean }
  | { mode: 'corrupt'; afterBytes: number; direction: Direction; count: number; once?: boolean };

export type NormalizedMode = Exclude<FaultMode, string>;

export interface FaultCounters {
  /** Bytes written to the target / to clients. */
  bytesUp: number;
  bytesDown: number;
  connectionsAccepted: number;
  connectionsActive: number;
  /** Connections destroyed by 'cut-after' or cutAll(). */
  cuts: number;
  corruptedBytes: number;
  /** Largest number of bytes one pump held at once: bounded by HIGH_WATER plus one chunk. */
  peakQueuedBytes: number;
}

export interface FaultProxyOptions {
  target: { host: string; port: number };
  /** Listen port; 0 (default) asks the kernel for a free one. */
  port?: number;
  mode?: FaultMode;
}

export function normalizeMode(mode: FaultMode): NormalizedMode {
  return typeof mode === 'string' ? ({ mode } as NormalizedMode) : mode;
}

interface Queued {
  buf: Buffer;
  arrivedAt: number;
  /** The cut-after limit ends with this chunk: destroy both sides once it is written. */
  cutAfter: boolean;
}

/** Moves bytes one way, applying the proxy's current mode to every chunk. */
class Pump {
  private readonly queue: Queued[] = [];
  private queuedBytes = 0;
  /** Bytes seen in this direction since the current mode applied (cut-after/corrupt offsets). */
  private modeBytes = 0;
  private tokens = 0;
  private lastRefill = Date.now();
  private timer?: NodeJS.Timeout;
  private waitingDrain = false;
  private srcEnded = false;
  private endSent = false;
  private cutReached = false;
  private stopped = false;

  constructor(
    readonly direction: Direction,
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly proxy: FaultProxy,
    private readonly onCut: () => void,
  ) {
    src.on('data', (chunk: Buffer) => this.ingest(chunk));
    src.on('end', () => {
      this.srcEnded = true;
      this.kick();
    });
  }

  resetModeCounters(): void {
    this.modeBytes = 0;
    this.tokens = 0;
    this.lastRefill = Date.now();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  kick(): void {
    if (this.stopped) return;
    this.drainQueue();
    this.updateFlow();
  }

  private ingest(chunk: Buffer): void {
    if (this.stopped || this.cutReached) return; // after the cut limit nothing more goes through
    const mode = this.proxy.current;
    let buf = chunk;
    let cutAfter = false;
    if (mode.mode === 'cut-after' && mode.direction === this.direction) {
      const left = Math.max(0, mode.bytes - this.modeBytes);
      if (buf.length >= left) {
        buf = buf.subarray(0, left);
        cutAfter = true;
        this.cutReached = true;
        if (mode.once) this.proxy.revertToPass();
      }
    }
    if (mode.mode === 'corrupt' && mode.direction === this.direction) {
      const end = mode.afterBytes + mode.count;
      const from = Math.max(mode.afterBytes, this.modeBytes);
      const to = Math.min(end, this.modeBytes + buf.length);
      if (from < to) {
        buf = Buffer.from(buf); // never flip bits in a buffer someone else may hold
        for (let i = from; i < to; i++) buf[i - this.modeBytes] ^= 0xff;
        this.proxy.counters.corruptedBytes += to - from;
        if (mode.once && to >= end) this.proxy.revertToPass();
      }
    }
    this.modeBytes += buf.length;
    this.queue.push({ buf, arrivedAt: Date.now(), cutAfter });
    this.queuedBytes += buf.length;
    const counters = this.proxy.counters;
    counters.peakQueuedBytes = Math.max(counters.peakQueuedBytes, this.queuedBytes);
    this.kick();
  }

  private drainQueue(): void {
    while (this.queue.length > 0 && !this.waitingDrain && !this.stopped) {
      const mode = this.proxy.current;
      if (mode.mode === 'blackhole') return;
      const head = this.queue[0];
      if (mode.mode === 'delay') {
        const wait = head.arrivedAt + mode.ms - Date.now();
        if (wait > 0) return this.schedule(wait);
      }
      let out = head.buf;
      if (mode.mode === 'throttle') {
        this.refill(mode.bytesPerSec);
        // Wait for a slice worth a write (THROTTLE_SLICE of a second), not for every single byte.
        const need = Math.min(out.length, Math.max(1, Math.floor(mode.bytesPerSec * THROTTLE_SLICE)));
        if (this.tokens < need) return this.schedule(Math.ceil(((need - this.tokens) / mode.bytesPerSec) * 1000));
        const n = Math.min(out.length, Math.floor(this.tokens));
        this.tokens -= n;
        out = head.buf.subarray(0, n);
        head.buf = head.buf.subarray(n);
      } else {
        head.buf = head.buf.subarray(out.length);
      }
      const finished = head.buf.length === 0;
      if (finished) this.queue.shift();
      this.queuedBytes -= out.length;
      if (this.direction === 'up') this.proxy.counters.bytesUp += out.length;
      else this.proxy.counters.bytesDown += out.length;
      if (finished && head.cutAfter) {
        this.stop();
        if (out.length === 0) setImmediate(this.onCut);
        else this.dst.write(out, () => this.onCut());
        return;
      }
      if (out.length > 0 && !this.dst.write(out)) {
        this.waitingDrain = true;
        this.dst.once('drain', () => {
          this.waitingDrain = false;
          this.kick();
        });
      }
    }
    if (this.queue.length === 0 && this.srcEnded && !this.endSent && !this.stopped) {
      this.endSent = true;
      this.dst.end(); // half-close travels through, as it would through a router
    }
  }

  /** Pauses the source while we hold data or the destination is full; resumes otherwise. */
  private updateFlow(): void {
    if (this.stopped) return;
    const hold = this.proxy.current.mode === 'blackhole' || this.waitingDrain || this.queuedBytes > HIGH_WATER;
    if (hold) this.src.pause();
    else this.src.resume();
  }

  private refill(bytesPerSec: number): void {
    const now = Date.now();
    const burst = Math.max(1, bytesPerSec * BURST_FRACTION);
    this.tokens = Math.min(burst, this.tokens + ((now - this.lastRefill) / 1000) * bytesPerSec);
    this.lastRefill = now;
  }

  private schedule(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kick();
    }, Math.max(1, ms));
  }
}

/** One client connection and its upstream twin. */
class Link {
  upstream?: net.Socket;
  up?: Pump;
  down?: Pump;
  closed = false;

  constructor(readonly client: net.Socket, private readonly proxy: FaultProxy) {}

  /** Opens the upstream connection and starts both pumps (deferred while blackholed). */
  open(): void {
    const upstream = net.connect(this.proxy.target.port, this.proxy.target.host);
    upstream.setNoDelay(true);
    this.upstream = upstream;
    this.up = new Pump('up', this.client, upstream, this.proxy, () => this.destroy(true));
    this.down = new Pump('down', upstream, this.client, this.proxy, () => this.destroy(true));
    upstream.on('error', () => this.destroy(false));
    upstream.on('close', () => this.onSocketClosed());
    this.client.resume();
  }

  /** A clean close: half-closes travel through the pumps; the link is done when both sides are. */
  onSocketClosed(): void {
    if (this.client.destroyed && (!this.upstream || this.upstream.destroyed)) this.destroy(false);
    else if (this.client.destroyed && this.upstream && !this.upstream.writableEnded) this.upstream.end();
  }

  kick(): void {
    if (!this.upstream && !this.closed && this.proxy.current.mode !== 'blackhole') this.open();
    this.up?.kick();
    this.down?.kick();
  }

  resetModeCounters(): void {
    this.up?.resetModeCounters();
    this.down?.resetModeCounters();
  }

  destroy(isCut: boolean): void {
    if (this.closed) return;
    this.closed = true;
    if (isCut) this.proxy.counters.cuts++;
    this.up?.stop();
    this.down?.stop();
    this.client.destroy();
    this.upstream?.destroy();
    this.proxy.forget(this);
  }
}

export class FaultProxy {
  readonly counters: FaultCounters = { bytesUp: 0, bytesDown: 0, connectionsAccepted: 0, connectionsActive: 0, cuts: 0, corruptedBytes: 0, peakQueuedBytes: 0 };
  current: NormalizedMode = { mode: 'pass' };
  private readonly links = new Set<Link>();
  private server: net.Server;
  private listening = false;
  private stopped = false;

  private constructor(readonly target: { host: string; port: number }, public port: number) {
    this.server = this.createServer();
  }

  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const proxy = new FaultProxy(options.target, options.port ?? 0);
    const initial = normalizeMode(options.mode ?? 'pass');
    proxy.current = initial;
    await proxy.listen(); // even for 'refuse': the port is fixed now, so a later 'pass' reuses it
    if (initial.mode === 'refuse') await proxy.unlisten();
    return proxy;
  }

  get host(): string {
    return '127.0.0.1';
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** Applies a mode to new and live connections. Resolves once listening state matches it. */
  async setMode(mode: FaultMode): Promise<void> {
    if (this.stopped) throw new Error('fault proxy stopped');
    this.current = normalizeMode(mode);
    for (const link of this.links) link.resetModeCounters();
    if (this.current.mode === 'refuse') await this.unlisten();
    else await this.listen();
    for (const link of [...this.links]) link.kick();
  }

  /** Called by a pump after a `once` fault fired. */
  revertToPass(): void {
    this.current = { mode: 'pass' };
    setImmediate(() => {
      for (const link of [...this.links]) link.kick();
    });
  }

  /** Destroys every live connection on both sides (a crash of the network path). */
  cutAll(): number {
    const live = [...this.links];
    for (const link of live) link.destroy(true);
    return live.length;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const link of [...this.links]) link.destroy(false);
    await this.unlisten();
  }

  forget(link: Link): void {
    if (this.links.delete(link)) this.counters.connectionsActive--;
  }

  private createServer(): net.Server {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => this.accept(client));
    server.on('error', () => undefined); // listen errors surface through listen()'s promise
    return server;
  }

  private accept(client: net.Socket): void {
    if (this.stopped || this.current.mode === 'refuse') {
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    this.counters.connectionsAccepted++;
    this.counters.connectionsActive++;
    const link = new Link(client, this);
    this.links.add(link);
    client.on('error', () => link.destroy(false));
    client.on('close', () => link.onSocketClosed());
    // Blackhole: accepted but paused, no upstream until the mode changes.
    if (this.current.mode !== 'blackhole') link.open();
  }

  private async listen(): Promise<void> {
    if (this.listening) return;
    this.server = this.createServer();
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    this.listening = true;
  }

  private async unlisten(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    // close() stops accepting at once; its callback would wait for live connections, so don't.
    this.server.close();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

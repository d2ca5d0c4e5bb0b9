/**
 * A pipelined connection from the replica to its own node, for the loader and the applier:
 * commands go out as raw bytes in large batched writes, replies are framed (not decoded) and
 * handed to per-command checks in order. Bounded: at most `maxInFlight` commands await replies
 * and the socket's own backpressure ('drain') is respected, so a slow node slows the sender
 * instead of growing buffers (DESIGN.md invariant 6).
 */
import net from 'node:net';
import { IDLE_TIMEOUT_QUERY, KeepAlive, idleTimeoutSeconds, keepAliveIntervalMs } from '../backend/keep-alive';
import { SyncProxyError, classifySystemError } from '../errors';
import { NodeProfile, ProbeConnection, probeNodeProfile } from '../backend/node-profile';
import { decodeReply } from '../resp/decode';
import { FramedReply, ReplyFramer } from '../resp/reply-framer';
import { encodeArgs } from '../resp/request-parser';
import { IndexedReplyCheck, ReplyCheck, ReplyView, errorText } from './node-replies';
import { raceAbort } from './util';

export interface NodeAddress {
  host: string;
  port: number;
  password?: string;
  /** PING interval on an idle connection; 0 or absent: a third of the node's `timeout`. */
  keepAliveMs?: number;
}

const BATCH_BYTES = 256 * 1024;
const PING = encodeArgs(['PING']);
export const DEFAULT_MAX_IN_FLIGHT = 20_000;
/** Bytes of commands sent and not yet answered before `sendMany` waits. */
export const DEFAULT_MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;
/**
 * How long a FLUSHALL may take before it counts as hung (BACKEND_TIMEOUT): a flush of tens of
 * millions of keys takes seconds on redis-server; Pika renames its db directory at once.
 */
export const FLUSH_REPLY_TIMEOUT_MS = 60_000;
/** How long a closed pipeline keeps its socket to collect the replies of commands already sent. */
export const CLOSE_DRAIN_MS = 15_000;

/** Commands awaiting replies: one entry per `send`, or per `sendMany` batch. */
interface Pending {
  /** `send`: called with a FramedReply of its own; `sendMany`: with the shared view. */
  check: ReplyCheck | IndexedReplyCheck;
  many: boolean;
  count: number;
  answered: number;
  bytes: number;
}

export class NodePipeline {
  private readonly framer = new ReplyFramer();
  private readonly view = new ReplyView();
  private checks: Pending[] = [];
  private checkHead = 0;
  private commandsInFlight = 0;
  private bytesInFlight = 0;
  private out: Buffer[] = [];
  private outBytes = 0;
  private failure?: SyncProxyError;
  private waiters: Array<() => void> = [];
  private closed = false;
  /** Closed with commands in flight: replies are counted (not checked) until none is left. */
  private retiring = false;
  private retireTimer?: NodeJS.Timeout;
  private writeScheduled = false;
  /** Pipelines whose socket is still open, closed ones included until their replies are in. */
  private static readonly open = new Set<NodePipeline>();
  /**
   * The loader waits for the copier between files and the applier for the master's next write:
   * a quiet pipeline would be timed out by the node (./backend/keep-alive.ts). Its PING is a
   * command like any other (FIFO, counted in flight) whose reply is not checked.
   */
  private readonly keepAlive = new KeepAlive(() => {
    if (this.failure) return;
    this.checks.push({ check: ignoreReply, many: false, count: 1, answered: 0, bytes: PING.length });
    this.commandsInFlight++;
    this.bytesInFlight += PING.length;
    this.out.push(PING);
    this.outBytes += PING.length;
    this.writeOut();
  });

  private constructor(private readonly socket: net.Socket, private readonly what: string, private readonly maxInFlight: number, private readonly maxInFlightBytes: number) {
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new SyncProxyError('BACKEND_CONNECTION_LOST', `${what}: ${err.message}`, { cause: err })));
    socket.on('close', () => this.fail(new SyncProxyError('BACKEND_CONNECTION_LOST', `${what}: connection closed`)));
    socket.on('drain', () => this.wake());
    NodePipeline.open.add(this);
    socket.once('close', () => {
      NodePipeline.open.delete(this);
      if (this.retireTimer) clearTimeout(this.retireTimer);
    });
  }

  /**
   * Resolves true once no closed pipeline still waits for replies (see close()), false when
   * `timeoutMs` passed first. Called before a FLUSHALL that follows an aborted load.
   */
  static async settled(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const retiring = (): boolean => [...NodePipeline.open].some((p) => p.retiring);
    while (retiring()) {
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return true;
  }

  static async connect(address: NodeAddress, signal: AbortSignal, maxInFlight = DEFAULT_MAX_IN_FLIGHT, maxInFlightBytes = DEFAULT_MAX_IN_FLIGHT_BYTES): Promise<NodePipeline> {
    const what = `replica node ${address.host}:${address.port}`;
    const socket = net.connect({ host: address.host, port: address.port });
    const connected = new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', (err) => reject(new SyncProxyError(classifySystemError(err) === 'MASTER_UNREACHABLE' ? 'BACKEND_UNAVAILABLE' : 'BACKEND_CONNECTION_LOST', `${what}: ${err.message}`, { cause: err })));
    });
    try {
      await raceAbort(connected, signal);
    } catch (err) {
      socket.destroy();
      throw err;
    }
    socket.removeAllListeners('error');
    socket.setNoDelay(true);
    const pipeline = new NodePipeline(socket, what, maxInFlight, maxInFlightBytes);
    // The signal outlives the pipeline (one per replication run, across attempts and reconnects):
    // the listener goes when the socket does, so they do not pile up on it.
    const onAbort = (): void => pipeline.close();
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('close', () => signal.removeEventListener('abort', onAbort));
    if (address.password !== undefined) {
      const reply = await pipeline.call(['AUTH', address.password]);
      if (reply.type === 45) {
        pipeline.close();
        throw new SyncProxyError('BACKEND_ERROR_REPLY', `${what} refused AUTH: ${errorText(reply)}`);
      }
    }
    await pipeline.startKeepAlive(address.keepAliveMs);
    return pipeline;
  }

  get inFlight(): number {
    return this.commandsInFlight;
  }

  /** Pings at `configuredMs`, or learns the node's timeout (one round trip, at connect only). */
  private async startKeepAlive(configuredMs: number | undefined): Promise<void> {
    if (configuredMs !== undefined && configuredMs > 0) return this.keepAlive.start(keepAliveIntervalMs(configuredMs, undefined));
    const reply = await this.call(IDLE_TIMEOUT_QUERY);
    this.keepAlive.start(keepAliveIntervalMs(undefined, reply.type === 42 ? idleTimeoutSeconds(decodeReply(reply.raw)) : undefined));
  }

  /** The keep-alive's PING interval (0 = none) and the pings it sent. */
  get keepAliveStatus(): { intervalMs: number; pings: number } {
    return { intervalMs: this.keepAlive.intervalMs, pings: this.keepAlive.pings };
  }

  /** Queues `raw` (one complete command) with the check of its reply; waits when the pipe is full. */
  async send(raw: Buffer, check: ReplyCheck): Promise<void> {
    if (this.failure) throw this.failure;
    this.checks.push({ check, many: false, count: 1, answered: 0, bytes: raw.length });
    this.commandsInFlight++;
    this.bytesInFlight += raw.length;
    this.out.push(raw);
    this.outBytes += raw.length;
    await this.afterQueued();
  }

  /**
   * Queues `count` complete commands given as consecutive byte chunks, with one check called for
   * each reply and its index; waits while too many commands or bytes await replies. For bulk
   * loads: no promise and no closure per command.
   */
  async sendMany(chunks: readonly Buffer[], count: number, check: IndexedReplyCheck): Promise<void> {
    if (this.failure) throw this.failure;
    if (count === 0) return;
    let bytes = 0;
    for (const c of chunks) {
      this.out.push(c);
      bytes += c.length;
    }
    this.outBytes += bytes;
    this.checks.push({ check, many: true, count, answered: 0, bytes });
    this.commandsInFlight += count;
    this.bytesInFlight += bytes;
    await this.afterQueued();
  }

  private async afterQueued(): Promise<void> {
    if (this.outBytes >= BATCH_BYTES) this.writeOut();
    else if (!this.writeScheduled) {
      // A sender that stops (the applier between log entries) must not leave commands unsent.
      this.writeScheduled = true;
      setImmediate(() => {
        this.writeScheduled = false;
        this.writeOut();
      });
    }
    while (!this.failure && (this.commandsInFlight >= this.maxInFlight || this.bytesInFlight >= this.maxInFlightBytes || this.socket.writableNeedDrain)) {
      this.writeOut();
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  sendArgs(args: ReadonlyArray<Buffer | string>, check: ReplyCheck): Promise<void> {
    return this.send(encodeArgs(args), check);
  }

  /** Resolves when every command sent so far has its reply checked. */
  async flush(): Promise<void> {
    this.writeOut();
    while (!this.failure && this.commandsInFlight > 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
    if (this.failure) throw this.failure;
  }

  /** One command and its raw reply (after everything queued before it). */
  async call(args: ReadonlyArray<Buffer | string>): Promise<FramedReply> {
    let result: FramedReply | undefined;
    await this.sendArgs(args, (reply) => {
      result = { raw: Buffer.from(reply.raw), type: reply.type };
    });
    await this.flush();
    return result!;
  }

  /**
   * Sends nothing more; senders get an error at once. The socket stays open until every command
   * already sent has its reply (at most CLOSE_DRAIN_MS). Why: a node runs the commands it has
   * read even after their connection closes, and on Pika 4.0.1 a FLUSHALL that meets a write in
   * progress deadlocks the whole node (FLUSHALL takes the replication-manager lock, then the db
   * lock; a write holds the db lock shared and takes the replication-manager lock for its binlog).
   * Seen: SLAVEOF NO ONE mid-load, FLUSHALL right after the loader's socket was destroyed, and
   * Pika answered nothing, not even PING, on any connection. Waiting for the replies makes
   * "closed" mean "nothing of ours still runs on the node" (settled()).
   */
  /** call(), failing the pipeline with BACKEND_TIMEOUT when no reply came within `timeoutMs`. */
  async callWithin(args: ReadonlyArray<Buffer | string>, timeoutMs: number): Promise<FramedReply> {
    const timer = setTimeout(() => this.fail(new SyncProxyError('BACKEND_TIMEOUT', `${this.what}: no reply to ${String(args[0])} within ${timeoutMs} ms`)), timeoutMs);
    try {
      return await this.call(args);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const err = new SyncProxyError('BACKEND_CONNECTION_LOST', `${this.what}: closed by the replica`);
    if (this.failure || this.commandsInFlight === 0) return this.fail(err);
    this.retire(err);
  }

  /** Fails the senders with `err`; the socket stays until the replies in flight are in (close()). */
  private retire(err: SyncProxyError): void {
    this.writeOut(); // what was queued is counted in flight: send it, so its replies come
    this.retiring = true;
    this.failure = err;
    this.keepAlive.stop();
    this.retireTimer = setTimeout(() => this.socket.destroy(), CLOSE_DRAIN_MS);
    this.retireTimer.unref();
    this.wake();
  }

  get error(): SyncProxyError | undefined {
    return this.closed ? undefined : this.failure;
  }

  private writeOut(): void {
    if (this.outBytes === 0 || this.failure) return;
    const batch = this.out.length === 1 ? this.out[0] : Buffer.concat(this.out, this.outBytes);
    this.out = [];
    this.outBytes = 0;
    this.socket.write(batch);
    this.keepAlive.wrote();
  }

  private onData(chunk: Buffer): void {
    this.framer.feed(chunk);
    if (this.retiring) return this.countRetiringReplies();
    try {
      const framer = this.framer;
      const view = this.view;
      while (framer.advance()) {
        if (this.checkHead >= this.checks.length) throw new SyncProxyError('MALFORMED_RESPONSE', `${this.what}: a reply without a command`);
        const pending = this.checks[this.checkHead];
        const index = pending.answered++;
        this.commandsInFlight--;
        if (pending.answered === pending.count) {
          this.checks[this.checkHead++] = undefined as unknown as Pending;
          this.bytesInFlight -= pending.bytes;
        }
        if (pending.many) {
          view.buffer = framer.current;
          view.start = framer.lastStart;
          view.end = framer.lastEnd;
          (pending.check as IndexedReplyCheck)(view, index);
        } else {
          const buf = framer.current;
          (pending.check as ReplyCheck)({ raw: buf.subarray(framer.lastStart, framer.lastEnd), type: buf[framer.lastStart] });
        }
      }
    } catch (err) {
      this.failAndRetire(err instanceof SyncProxyError ? err : new SyncProxyError('INTERNAL', String(err), { cause: err }));
      return;
    }
    if (this.checkHead > 4096 && this.checkHead * 2 > this.checks.length) {
      this.checks = this.checks.slice(this.checkHead);
      this.checkHead = 0;
    }
    this.wake();
  }

  /**
   * A failed reply check (an error reply in a load): sends nothing more, and keeps the socket,
   * as close() does, until the commands already sent are answered. Why: the node still runs
   * them, and the FLUSHALL that follows a failed load must not meet one of them (settled()).
   */
  private failAndRetire(err: SyncProxyError): void {
    if (this.failure) return;
    if (this.commandsInFlight === 0) return this.fail(err);
    this.retire(err);
    this.countRetiringReplies(); // replies already framed behind the failed one
  }

  private countRetiringReplies(): void {
    try {
      while (this.framer.advance()) this.commandsInFlight--;
    } catch {
      this.commandsInFlight = 0; // an unframable reply: nothing more can be counted
    }
    if (this.commandsInFlight <= 0) this.socket.destroy();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private fail(err: SyncProxyError): void {
    if (this.failure) return;
    this.failure = err;
    this.keepAlive.stop();
    this.socket.destroy();
    this.wake();
  }
}

const ignoreReply: ReplyCheck = () => undefined;

/** The pipeline as the node-profile probe uses it (decoded replies; error replies as Errors). */
export function probeVia(node: NodePipeline): ProbeConnection {
  return { call: async (args) => decodeReply((await node.call(args)).raw) };
}

/** One command on a connection of its own, its reply within `timeoutMs` (else BACKEND_TIMEOUT). */
export async function callWithin(address: NodeAddress, args: ReadonlyArray<Buffer | string>, timeoutMs: number): Promise<FramedReply> {
  const node = await NodePipeline.connect(address, AbortSignal.timeout(timeoutMs));
  try {
    return await node.callWithin(args, timeoutMs);
  } finally {
    node.close();
  }
}

/** Connects to `address`, probes its node's profile and closes. */
export async function probeNodeAt(address: NodeAddress, signal: AbortSignal): Promise<NodeProfile> {
  const node = await NodePipeline.connect(address, signal);
  try {
    return await probeNodeProfile(probeVia(node));
  } finally {
    node.close();
  }
}

/**
 * The ordered path to the node. Every client command of the proxy (except dedicated pub/sub and
 * XREAD BLOCK connections) goes through it, over one or more lanes (lanes.ts). What keeps the
 * write log in an order equivalent to the node's execution (DESIGN.md §4):
 * - a write whose keys all hash to one lane goes on that lane, FIFO, and is logged when answered;
 * - a write whose keys span lanes, a write without known keys (FLUSHALL, SWAPDB, …) and a
 *   transaction with writes on several lanes run exclusive: those lanes drained and held;
 * - `barrier()` (where a snapshot build starts) waits for every write dispatched before it.
 * Reads go on any lane (the least loaded), since they change nothing the log describes; each
 * client's commands still take effect in its order (lane-client.ts).
 *
 * It also tells WATCH and blocked-pop emulation which keys writes touch.
 */
import type { Logger } from 'pino';
import { NodeConnection, ReplyCallback, ReplyTarget, deliverError, deliverReply } from '../backend/node-connection';
import { SyncProxyError } from '../errors';
import type { FramedReply } from '../resp/reply-framer';
import type { Request } from '../resp/request';
import { encodeArgs } from '../resp/request-parser';
import type { OrderedPath as OrderedPathContract, WriteScope } from '../source/types';
import { ANY_BULKY_LANE, ANY_LANE, LaneChooser, LaneClient, NOT_YET } from './lane-client';
import { SPANS, carrierOf, laneOfScope, lanesOf, readLane } from './lane-routing';
import { Lane, Protocol, exclusive } from './lanes';
import { LogSink, WriteRecorder } from './write-recorder';
import { arrayOfReplies, withAbortReason } from './batch-replies';

export type { LogSink } from './write-recorder';

/**
 * `origin` is the session whose command it was (a blocked client is not woken by its own pops);
 * `command` the write itself (dispatch listeners only: WATCH judges FLUSHDB/FLUSHALL/SWAPDB by it).
 * A dispatch listener may send commands of its own (`probeInteger`, node-probes.ts): they reach
 * the node before the write, on its lane.
 */
export type KeysListener = (scope: WriteScope, origin?: object, command?: { readonly name: string; readonly args: readonly Buffer[] }) => void;

/** Told after the node accepted a write; a promise it returns holds the writer's reply until it settles. */
export type AppliedListener = (scope: WriteScope, origin?: object) => Promise<void> | void;

export interface QueuedCommand {
  args: Buffer[];
  raw: Buffer;
  write: boolean;
  scope?: WriteScope;
}

const PING = encodeArgs(['PING']);
const MULTI = encodeArgs(['MULTI']);
const EXEC = encodeArgs(['EXEC']);
function noop(): void {}

export class OrderedPath implements OrderedPathContract, LaneChooser {
  /** Called at dispatch of every write (WATCH dirtiness is conservative: a failed write counts). */
  private readonly dispatchListeners: KeysListener[] = [];
  /**
   * Called after the node accepted a write (wakes emulated blocking pops). A listener may return
   * a promise: the writer's reply waits for it (the clients it woke are served first, as on Redis).
   */
  private readonly appliedListeners: AppliedListener[] = [];
  readonly lanes: Lane[];
  private readonly recorder: WriteRecorder;
  /** A write was sent and its reply lost with a link: the node may have executed it unlogged. */
  private writeLost = false;
  /** The lane of the write whose dispatch listeners run now (their probes go on it). */
  private dispatching: Lane | undefined;
  /** Writes waiting in clients' order (not yet on a lane): `barrier()` waits for them. */
  private queuedWrites = 0;
  private writesOnLanes: (() => void)[] = [];
  /** Home lanes are dealt round-robin to clients as they connect. */
  private nextHome = 0;

  constructor(connections: NodeConnection | NodeConnection[], log: LogSink, private readonly logger: Logger) {
    const list = Array.isArray(connections) ? connections : [connections];
    this.lanes = list.map((connection, i) => new Lane(i, connection, logger));
    this.recorder = new WriteRecorder(log, logger);
    // Only a lost write can leave the node ahead of the log; reads, SELECTs and keep-alive PINGs
    // lost with a link change nothing the log describes, so they keep the log generation
    // (replicas continue without a full sync). A connection's errors reach 'down' after its lost
    // requests' errors (node-connection.ts), so writeLost is complete there.
    for (const connection of list) this.watchLinkLoss(connection);
  }

  private watchLinkLoss(connection: NodeConnection): void {
    connection.on('down', () => {
      if (!this.writeLost) return;
      this.writeLost = false;
      this.recorder.log.reset('backend link lost with a write unanswered');
    });
  }

  /**
   * More lanes, at start only: a key's lane follows from the number of lanes, so it may change
   * only while no write is anywhere on its way.
   */
  addLanes(connections: NodeConnection[]): void {
    // Before any client: the proxy's own reads (INFO at link-up) may be in flight, writes cannot.
    if (this.nextHome > 0) throw new SyncProxyError('INTERNAL', 'lanes can only be added before the first client');
    for (const connection of connections) {
      this.lanes.push(new Lane(this.lanes.length, connection, this.logger));
      this.watchLinkLoss(connection);
    }
  }

  /**
   * More lanes while clients are served (auto-lanes.ts: the node's kind became known after the
   * start). A key's lane follows from the number of lanes, so a write on a key's new lane must
   * not overtake one sent (or submitted to a held lane) under the old count: the new lanes are
   * added held, and open once the node answered a PING sent behind everything on every old lane.
   * Writes waiting in a client's order carry a lane chosen under the old count too (never with
   * one lane, where nothing waits): while there are any, nothing changes and this answers false.
   * `connections` must be up.
   */
  growLanes(connections: NodeConnection[]): boolean {
    if (this.queuedWrites > 0) return false;
    const old = [...this.lanes];
    const added = connections.map((connection) => {
      const lane = new Lane(this.lanes.length, connection, this.logger);
      lane.held = true;
      this.lanes.push(lane);
      this.watchLinkLoss(connection);
      return lane;
    });
    let pinging = old.length;
    const open = (): void => {
      if (--pinging === 0) for (const lane of added) lane.release();
    };
    for (const lane of old) lane.submit((x) => x.connection.send(PING, open));
    return true;
  }

  /** The first lane's connection: link status, node facts, keep-alive status. */
  get connection(): NodeConnection {
    return this.lanes[0].connection;
  }

  /** Node requests sent and not answered, over all lanes. */
  get inFlight(): number {
    return this.lanes.reduce((n, lane) => n + lane.connection.inFlight, 0);
  }

  /** With several lanes every write must name its keys (they choose its lane). */
  get keyed(): boolean {
    return this.lanes.length > 1;
  }

  set logging(on: boolean) {
    this.recorder.logging = on;
  }

  /**
   * The node's data changed in a way no log entry describes (DEBUG RELOAD NOSAVE): a new log
   * generation, so replicas run a full sync. Nothing to do while this proxy logs nothing (replica).
   */
  restartLog(reason: string): void {
    if (this.recorder.logging) this.recorder.log.reset(reason);
  }

  /** A client's order across lanes (its replies are handed to `target`). */
  client(target: ReplyTarget): LaneClient {
    return new LaneClient(target, this, this.nextHome++ % this.lanes.length);
  }

  readLane(home: number, bulky: boolean): number {
    return readLane(this.lanes, home, bulky);
  }

  writeQueued(): void {
    this.queuedWrites++;
  }

  writeDequeued(): void {
    if (--this.queuedWrites === 0) for (const resolve of this.writesOnLanes.splice(0)) resolve();
  }

  /** A write sent on a link got no reply (the link dropped): see `writeLost`. */
  replyLost(error: SyncProxyError): void {
    if (error.code === 'BACKEND_CONNECTION_LOST') this.writeLost = true;
  }

  onDispatch(listener: KeysListener): void {
    this.dispatchListeners.push(listener);
  }

  onApplied(listener: AppliedListener): void {
    this.appliedListeners.push(listener);
  }

  /** Sends a non-write command in `db` (for `client`, in its order). */
  send(db: number, raw: Buffer, cb: ReplyCallback, client?: LaneClient): void {
    const lane = client ? client.mayStart(ANY_LANE, false) : this.readLane(0, false);
    if (lane === NOT_YET) return client!.enqueue(ANY_LANE, false, false, (l) => this.lanes[l].submit((x) => x.send(db, raw, client!.callback(cb), client!.proto)));
    client?.started(lane);
    const to = client ? client.callback(cb) : cb;
    this.lanes[lane].submit((x) => x.send(db, raw, to, client?.proto));
  }

  /** Forwards a client's non-write request in `db`; the client's target gets the reply with `tag`. */
  forward(client: LaneClient, db: number, req: Request, tag: number, bulky = false): void {
    const want = bulky ? ANY_BULKY_LANE : ANY_LANE;
    const lane = client.mayStart(want, false);
    if (lane === NOT_YET) return client.enqueue(want, false, false, (l) => this.forwardOn(this.lanes[l], db, req, client, tag));
    client.started(lane);
    this.forwardOn(this.lanes[lane], db, req, client, tag);
  }

  private forwardOn(lane: Lane, db: number, req: Request, client: LaneClient, tag: number): void {
    if (!lane.held) return lane.sendRange(db, req.buf, req.start, req.end, client, tag, client.proto);
    lane.submit((x) => x.sendRange(db, req.buf, req.start, req.end, client, tag, client.proto));
  }

  /**
   * Forwards a write (the caller has already waited for the snapshot gate) and appends it to the
   * log once the node accepted it; then `target` gets the reply with `tag`. With a `client`, the
   * target is that client (its session gets the reply) or a callback counted as its answer.
   */
  sendWrite(db: number, req: Request, scope: WriteScope, target: ReplyCallback | ReplyTarget, tag: number, origin?: object, client?: LaneClient): void {
    const want = laneOfScope(this.lanes.length, scope);
    const carrier = want === SPANS ? carrierOf(this.lanes.length, scope) : want;
    const to = !client || target === client ? target : client.callback(target as ReplyCallback);
    const proto = client?.proto ?? 2;
    const run = (lane: number): void => {
      if (want === SPANS) return exclusive(lanesOf(this.lanes, scope), this.lanes[lane], (x, done) => this.dispatchWrite(x, db, req, scope, to, tag, origin, done, proto));
      const x = this.lanes[lane];
      if (!x.held) return this.dispatchWrite(x, db, req, scope, to, tag, origin, noop, proto);
      x.submit(() => this.dispatchWrite(x, db, req, scope, to, tag, origin, noop, proto));
    };
    if (!client) return run(carrier);
    const lane = client.mayStart(carrier, want === SPANS);
    if (lane === NOT_YET) return client.enqueue(carrier, want === SPANS, true, run);
    client.started(lane);
    run(lane);
  }

  private dispatchWrite(lane: Lane, db: number, req: Request, scope: WriteScope, to: ReplyCallback | ReplyTarget, tag: number, origin: object | undefined, done: () => void, proto: Protocol): void {
    this.notifyDispatch(lane, scope, origin, req);
    lane.sendRange(db, req.buf, req.start, req.end, new PendingWrite(this, db, req, scope, origin, to, tag, done), 0, proto);
  }

  private notifyDispatch(lane: Lane, scope: WriteScope, origin?: object, command?: { readonly name: string; readonly args: readonly Buffer[] }): void {
    this.dispatching = lane;
    try {
      for (const l of this.dispatchListeners) l(scope, origin, command);
    } finally {
      this.dispatching = undefined;
    }
  }

  /** The node answered a write sent by `sendWrite`. */
  answered(w: PendingWrite, buf: Buffer, start: number, end: number): void {
    const accepted = buf[start] !== 45;
    if (accepted) this.recorder.write(w.db, w.req, buf, start, end);
    const served = accepted ? this.applied(w.scope, w.origin) : undefined;
    w.done();
    if (!served) return deliverReply(w.target, w.tag, buf, start, end);
    const reply = Buffer.from(buf.subarray(start, end)); // the framer's buffer moves on meanwhile
    void served.then(() => deliverReply(w.target, w.tag, reply, 0, reply.length));
  }

  /** Tells the applied listeners; a promise when the writer's reply must wait for them. */
  private applied(scope: WriteScope, origin?: object): Promise<void> | undefined {
    let wait: Promise<void> | undefined;
    for (const l of this.appliedListeners) wait = l(scope, origin) ?? wait;
    return wait;
  }

  /**
   * Sends MULTI, the queued commands and EXEC as one contiguous batch on one lane, so no other
   * client's command can land inside the transaction. Its writes' lanes, and those of the keys the
   * client WATCHes (`watched`: a write to them may not overtake the EXEC the WATCH check let
   * through), run exclusive when they are more than one. The callback gets EXEC's reply; the
   * intermediate +OK/+QUEUED replies are dropped (a command refused at queue time makes the node
   * answer EXEC with EXECABORT, which reaches the client as EXEC's reply).
   */
  sendTransaction(db: number, queued: QueuedCommand[], scopes: WriteScope[], cb: ReplyCallback, client?: LaneClient, watched: Buffer[] = []): void {
    this.sendQueued(db, queued, scopes, cb, client, watched, true);
  }

  /**
   * Like `sendTransaction` without MULTI/EXEC around the commands: they leave one after the other
   * on one lane (held together with the other lanes of their scopes, as a transaction's are), and
   * `cb` gets their replies as one array, as EXEC's. For a script and the read-backs of its
   * declared keys: no other write reaches those keys between them (every write to a key travels
   * its lane), and the node meets the script as a bare EVAL (inside MULTI, Redis 7.0 refuses a
   * flag-less script under OOM even when it only reads, and counts the batch's errors twice).
   */
  sendBatch(db: number, queued: QueuedCommand[], scopes: WriteScope[], cb: ReplyCallback, client?: LaneClient, holdEveryLane = false): void {
    this.sendQueued(db, queued, scopes, cb, client, [], false, holdEveryLane);
  }

  private sendQueued(db: number, queued: QueuedCommand[], scopes: WriteScope[], cb: ReplyCallback, client: LaneClient | undefined, watched: Buffer[], atomic: boolean, holdEveryLane = false): void {
    // A write naming no key (FUNCTION LOAD, a script declaring none) may touch anything: every lane.
    // `holdEveryLane`: reads that must see no other command between them (a transaction of reads
    // sent without MULTI) hold every lane without being announced as a write.
    const spanned: WriteScope = holdEveryLane || scopes.some((s) => s.kind !== 'keys' || s.keys.length === 0)
      ? { kind: 'all' }
      : { kind: 'keys', db, keys: [...scopes.flatMap((s) => (s.kind === 'keys' ? s.keys : [])), ...watched] };
    const want = spanned.kind === 'keys' && spanned.keys.length === 0 ? ANY_LANE : laneOfScope(this.lanes.length, spanned);
    const carrier = want === SPANS ? carrierOf(this.lanes.length, spanned) : want;
    const to = client ? client.callback(cb) : cb;
    const proto = client?.proto ?? 2;
    const run = (lane: number): void => {
      if (want === SPANS) return exclusive(lanesOf(this.lanes, spanned), this.lanes[lane], (x, done) => this.dispatchTransaction(x, db, queued, scopes, to, done, proto, atomic));
      this.lanes[lane].submit((x) => this.dispatchTransaction(x, db, queued, scopes, to, noop, proto, atomic));
    };
    const writes = scopes.length > 0;
    const lane = client ? client.mayStart(carrier, want === SPANS) : carrier === ANY_LANE ? this.readLane(0, false) : carrier;
    if (lane === NOT_YET) return client!.enqueue(carrier, want === SPANS, writes, run);
    client?.started(lane);
    run(lane);
  }

  private dispatchTransaction(lane: Lane, db: number, queued: QueuedCommand[], scopes: WriteScope[], cb: ReplyCallback, done: () => void, proto: Protocol, atomic: boolean): void {
    if (queued.some((q) => q.scope)) {
      for (const q of queued) if (q.scope) this.notifyDispatch(lane, q.scope, undefined, { name: q.args[0].toString('latin1').toLowerCase(), args: q.args });
    } else {
      for (const scope of scopes) this.notifyDispatch(lane, scope);
    }
    // A SELECT inside the transaction moves the connection to another db as soon as EXEC runs,
    // before its reply arrives: commands sent after this batch must re-select (now, not in the callback).
    const selects = queued.some((q) => q.args[0].length === 6 && q.args[0].toString().toLowerCase() === 'select');
    const answered: ReplyCallback = (reply, err) => this.transactionAnswered(db, queued, scopes, cb, done, reply, err);
    if (atomic) {
      // The node's queue-time errors answer nothing the client sees (it saw +QUEUED from the
      // proxy): the first one becomes the reason of the EXECABORT it causes.
      let firstError: Buffer | undefined;
      const queuedReply: ReplyCallback = (reply) => {
        if (!firstError && reply?.type === 45) firstError = Buffer.from(reply.raw);
      };
      lane.send(db, MULTI, noop, proto);
      for (const q of queued) lane.connection.send(q.raw, queuedReply);
      lane.connection.send(EXEC, (reply, err) => answered(reply && firstError ? withAbortReason(reply, firstError) : reply, err));
    } else {
      const replyOf = arrayOfReplies(queued.length, answered);
      lane.send(db, queued[0].raw, replyOf(0), proto);
      for (let i = 1; i < queued.length; i++) lane.connection.send(queued[i].raw, replyOf(i));
    }
    if (selects) lane.connection.db = -1;
  }

  /** EXEC's reply (or the batch's replies as one array) is in: log, wake, then answer. */
  private transactionAnswered(db: number, queued: QueuedCommand[], scopes: WriteScope[], cb: ReplyCallback, done: () => void, reply: FramedReply | null, err?: SyncProxyError): void {
    if (err && queued.some((q) => q.write)) this.replyLost(err);
    let served: Promise<void> | undefined;
    if (reply && reply.type === 42) {
      this.recorder.transaction(db, queued, reply.raw);
      for (const scope of scopes) served = this.applied(scope) ?? served;
    }
    done();
    if (!served) return cb(reply, err);
    const raw = Buffer.from(reply!.raw);
    void served.then(() => cb({ raw, type: raw[0] }, err));
  }

  /**
   * One probe with an integer answer, on the lane of the write being dispatched (else lane 0),
   * in whatever protocol the lane is in (an integer either way: no switch before the write).
   */
  probeInteger(db: number, args: Buffer[], done: (n: number | null) => void): void {
    const lane = this.dispatching ?? this.lanes[0];
    lane.send(db, encodeArgs(args), (reply, err) => {
      done(err || reply?.type !== 58 ? null : Number(reply.raw.toString('latin1', 1, reply.raw.length - 2)));
    }, lane.connection.proto);
  }

  /**
   * Resolves after every write dispatched before it was answered (and logged): writes still
   * waiting in a client's order first reach their lanes, then a PING behind them on every lane.
   * (A running snapshot build holds new writes at its gate meanwhile, so this ends.)
   */
  async barrier(): Promise<number> {
    while (this.queuedWrites > 0) await new Promise<void>((resolve) => this.writesOnLanes.push(resolve));
    await Promise.all(
      this.lanes.map((lane) => new Promise<void>((resolve, reject) => lane.submit((x) => x.connection.send(PING, (_r, err) => (err ? reject(err) : resolve()))))),
    );
    return this.recorder.log.lastOffset;
  }
}

/** A write waiting for the node's reply: logged, then answered, by its ordered path. */
class PendingWrite implements ReplyTarget {
  constructor(
    private readonly path: OrderedPath,
    readonly db: number,
    readonly req: Request,
    readonly scope: WriteScope,
    readonly origin: object | undefined,
    readonly target: ReplyCallback | ReplyTarget,
    readonly tag: number,
    /** Ends the exclusive hold of a write that spans lanes. */
    readonly done: () => void,
  ) {}

  onReply(_tag: number, buf: Buffer, start: number, end: number): void {
    this.path.answered(this, buf, start, end);
  }

  onReplyError(_tag: number, error: SyncProxyError): void {
    this.path.replyLost(error);
    deliverError(this.target, this.tag, error);
    this.done();
  }
}

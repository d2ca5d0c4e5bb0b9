/**
 * The one ordered path to the node. Every client command of the proxy (except dedicated pub/sub
 * and XREAD BLOCK connections) goes through one shared NodeConnection, so the order in which
 * the node answers is the order in which it executed, and the write log appended from replies is
 * in the node's execution order (DESIGN.md §4).
 *
 * It also keeps the connection's selected db in step with each client's db, offers the
 * `barrier()` a snapshot build starts from, and tells WATCH and blocked-pop emulation which keys
 * writes touch.
 */
import type { Logger } from 'pino';
import { NodeConnection, ReplyCallback, ReplyTarget, deliverError, deliverReply } from '../backend/node-connection';
import type { SyncProxyError } from '../errors';
import type { Request } from '../resp/request';
import { encodeArgs } from '../resp/request-parser';
import { execToLogCommands, replaysAsSent, toLogCommands } from '../source/log-rewrite';
import type { OrderedPath as OrderedPathContract, WriteScope } from '../source/types';

/** The parts of the write log the data path uses. */
export interface LogSink {
  append(db: number, commands: Buffer[][]): number;
  /** `append(db, [args])` for the request's own bytes `buf[start, end)` (a RESP multibulk). */
  appendRequest(db: number, buf: Buffer, start: number, end: number): number;
  reset(reason: string): void;
  readonly lastOffset: number;
}

/**
 * `origin` is the session whose command it was (a blocked client is not woken by its own pops);
 * `command` the write itself (dispatch listeners only: WATCH judges FLUSHDB/FLUSHALL/SWAPDB by it).
 * A dispatch listener may send commands of its own: they reach the node before the write.
 */
export type KeysListener = (scope: WriteScope, origin?: object, command?: { readonly name: string; readonly args: readonly Buffer[] }) => void;

const EXISTS = Buffer.from('EXISTS');

const PING = encodeArgs(['PING']);
const MULTI = encodeArgs(['MULTI']);
const EXEC = encodeArgs(['EXEC']);
const selectCache = new Map<number, Buffer>();
function selectCommand(db: number): Buffer {
  let raw = selectCache.get(db);
  if (!raw) selectCache.set(db, (raw = encodeArgs(['SELECT', String(db)])));
  return raw;
}

export class OrderedPath implements OrderedPathContract {
  /** Called at dispatch of every write (WATCH dirtiness is conservative: a failed write counts). */
  private readonly dispatchListeners: KeysListener[] = [];
  /** Called after the node accepted a write (wakes emulated blocking pops). */
  private readonly appliedListeners: KeysListener[] = [];
  /** When false (replica role) nothing is appended; client writes are refused there anyway. */
  logging = true;
  /** A write was sent and its reply lost with the link: the node may have executed it unlogged. */
  private writeLost = false;

  constructor(
    readonly connection: NodeConnection,
    private readonly log: LogSink,
    private readonly logger: Logger,
  ) {
    connection.on('up', () => (connection.db = 0));
    // Only a lost write can leave the node ahead of the log; reads, SELECTs and keep-alive PINGs
    // lost with the link change nothing the log describes, so they keep the log generation
    // (replicas continue without a full sync). The node's errors reach 'down' after the lost
    // requests' errors (node-connection.ts), so writeLost is complete here.
    connection.on('down', () => {
      if (!this.writeLost) return;
      this.writeLost = false;
      this.log.reset('backend link lost with a write unanswered');
    });
  }

  /** A write sent on the link got no reply (the link dropped): see `writeLost`. */
  replyLost(error: SyncProxyError): void {
    if (error.code === 'BACKEND_CONNECTION_LOST') this.writeLost = true;
  }

  onDispatch(listener: KeysListener): void {
    this.dispatchListeners.push(listener);
  }

  onApplied(listener: KeysListener): void {
    this.appliedListeners.push(listener);
  }

  private selectDb(db: number): void {
    if (this.connection.db === db) return;
    this.connection.db = db;
    this.connection.send(selectCommand(db), (reply, err) => {
      if (err || reply?.type !== 45) return;
      // The proxy validated the index against the node's db count, so this is a real fault.
      this.logger.error({ db, reply: reply.raw.toString().trim() }, 'node refused SELECT on the ordered connection');
      this.connection.db = -1;
    });
  }

  /** Forwards a non-write command in `db`. */
  send(db: number, raw: Buffer, cb: ReplyCallback): void {
    if (this.connection.isUp) this.selectDb(db);
    this.connection.send(raw, cb);
  }

  /** Forwards a client's non-write request in `db`; `target` gets the reply with `tag`. */
  forward(db: number, req: Request, target: ReplyTarget, tag: number): void {
    if (this.connection.isUp) this.selectDb(db);
    this.connection.sendRange(req.buf, req.start, req.end, target, tag);
  }

  /**
   * Forwards a write (the caller has already waited for the snapshot gate) and appends it to the
   * log once the node accepted it; then `target` gets the reply with `tag`.
   */
  sendWrite(db: number, req: Request, scope: WriteScope, target: ReplyCallback | ReplyTarget, tag: number, origin?: object): void {
    for (const l of this.dispatchListeners) l(scope, origin, req);
    if (this.connection.isUp) this.selectDb(db);
    this.connection.sendRange(req.buf, req.start, req.end, new PendingWrite(this, db, req, scope, origin, target, tag), 0);
  }

  /** The node answered a write sent by `sendWrite`. */
  answered(w: PendingWrite, buf: Buffer, start: number, end: number): void {
    if (buf[start] !== 45) {
      this.appendWrite(w.db, w.req, buf, start, end);
      for (const l of this.appliedListeners) l(w.scope, w.origin);
    }
    deliverReply(w.target, w.tag, buf, start, end);
  }

  /**
   * Sends MULTI, the queued commands and EXEC as one contiguous batch on the ordered connection,
   * so no other client's command lands inside the transaction. The callback gets EXEC's reply;
   * the intermediate +OK/+QUEUED replies are checked and dropped.
   */
  sendTransaction(db: number, queued: { args: Buffer[]; raw: Buffer; write: boolean; scope?: WriteScope }[], scopes: WriteScope[], cb: ReplyCallback): void {
    if (queued.some((q) => q.scope)) {
      for (const q of queued) {
        if (!q.scope) continue;
        const command = { name: q.args[0].toString('latin1').toLowerCase(), args: q.args };
        for (const l of this.dispatchListeners) l(q.scope, undefined, command);
      }
    } else {
      for (const scope of scopes) for (const l of this.dispatchListeners) l(scope);
    }
    if (this.connection.isUp) this.selectDb(db);
    // +OK/+QUEUED are dropped: a command refused at queue time makes the node answer EXEC with
    // EXECABORT, which reaches the client as EXEC's reply.
    const intermediate: ReplyCallback = () => undefined;
    this.connection.send(MULTI, intermediate);
    for (const q of queued) this.connection.send(q.raw, intermediate);
    // A SELECT inside the transaction moves the connection to another db as soon as EXEC runs,
    // before its reply arrives: commands sent after this batch must re-select (now, not in the callback).
    const selects = queued.some((q) => q.args[0].length === 6 && q.args[0].toString().toLowerCase() === 'select');
    this.connection.send(EXEC, (reply, err) => {
      if (err && queued.some((q) => q.write)) this.replyLost(err);
      if (reply && reply.type === 42) {
        this.appendTransaction(db, queued, reply.raw);
        for (const scope of scopes) for (const l of this.appliedListeners) l(scope);
      }
      cb(reply, err);
    });
    if (selects) this.connection.db = -1;
  }

  /**
   * Logs one executed write. A write that replays as sent is logged from its request bytes (the
   * hot path: no view, no clock read).
   */
  private appendWrite(db: number, req: Request, replyBuf: Buffer, replyStart: number, replyEnd: number): void {
    if (!this.logging) return;
    try {
      if (replaysAsSent(req.name, req.argc)) {
        this.log.appendRequest(db, req.buf, req.start, req.end);
        return;
      }
      const commands = toLogCommands(req.args, replyBuf.subarray(replyStart, replyEnd), Date.now());
      if (commands && commands.length > 0) this.log.append(db, commands);
    } catch (err) {
      this.appendFailed(err);
    }
  }

  private appendTransaction(db: number, queued: { args: Buffer[]; write: boolean }[], execReplyRaw: Buffer): void {
    if (!this.logging) return;
    try {
      const writes = new Set(queued.filter((q) => q.write).map((q) => q.args));
      const commands = execToLogCommands(queued.map((q) => q.args), execReplyRaw, Date.now(), (args) => writes.has(args));
      if (commands && commands.length > 0) this.log.append(db, commands);
    } catch (err) {
      this.appendFailed(err);
    }
  }

  private appendFailed(err: unknown): void {
    // A write the node executed but the log cannot hold breaks every replica's exactness:
    // start a new log generation so replicas resync instead of silently diverging.
    this.logger.error({ err: (err as Error).message }, 'could not log an executed write; resetting the write log');
    this.log.reset(`append failed: ${(err as Error).message}`);
  }

  /**
   * Asks the node which of `keys` exist in `db`, in order with everything sent before and after
   * (one EXISTS per key); `done` gets one flag per key, or null when any answer failed.
   */
  probeExists(db: number, keys: Buffer[], done: (exists: boolean[] | null) => void): void {
    const exists: boolean[] = [];
    let failed = false;
    let left = keys.length;
    if (left === 0) return queueMicrotask(() => done(exists));
    keys.forEach((key, i) => {
      this.send(db, encodeArgs([EXISTS, key]), (reply, err) => {
        if (err || reply?.type !== 58) failed = true;
        else exists[i] = reply.raw.toString('latin1', 1, reply.raw.length - 2) !== '0';
        if (--left === 0) done(failed ? null : exists);
      });
    });
  }

  /** Resolves after every command dispatched before it was answered (and logged). */
  barrier(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.connection.send(PING, (_reply, err) => (err ? reject(err) : resolve(this.log.lastOffset)));
    });
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
  ) {}

  onReply(_tag: number, buf: Buffer, start: number, end: number): void {
    this.path.answered(this, buf, start, end);
  }

  onReplyError(_tag: number, error: SyncProxyError): void {
    this.path.replyLost(error);
    deliverError(this.target, this.tag, error);
  }
}

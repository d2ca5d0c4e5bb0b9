/**
 * MULTI/EXEC/DISCARD/WATCH/UNWATCH. The proxy queues the transaction itself and, at EXEC, sends
 * MULTI + the commands + EXEC as one contiguous batch on one lane of the ordered path, so no other
 * client's command can land inside it and the whole transaction is logged as one entry.
 * Queue-time errors (wrong arity, a read refused on a replica, a write on a replica, the node's
 * -OOM while it has a maxmemory: memory-limit.ts) abort it with EXECABORT, as Redis does; WATCH is
 * emulated (watch-registry.ts); the role is checked again at EXEC and the proxy's own commands
 * inside MULTI answer after the node's (transaction-exec.ts).
 */
import { firstEntryRead, isApproxTrim } from '../source/stream-trims';
import { queuedRead } from './read-backs';
import * as encode from '../resp/encode';
import { isReadBack } from '../source/script-images';
import type { ClientSession } from './client-session';
import { READONLY_ERROR, adminRefusal, errorReply, unknownWriteRefusal } from './refusals';
import type { CommandSpec } from './command-table';
import { changesScriptState, clientExecReply, readBacksToQueue, scriptRefusal } from './scripting';
import { Queued, dbAfter, execRoleRefusal, execWithProxyCommands } from './transaction-exec';
import { QUEUE_PROBE } from './memory-limit';
import { arrayElements } from '../resp/reply-framer';

const NOT_IN_TRANSACTION = new Set(['pubsub', 'refused']);
/** The commands Redis 7.0 flags no-multi: refused at queue time with Redis's own text. */
const NO_MULTI = new Set(['save', 'shutdown', 'sync', 'psync']);

export class Transaction {
  private readonly queued: Queued[] = [];
  private aborted = false;
  /** The node's queue-time answers still to come (askNode). */
  private asked: Promise<Buffer>[] = [];
  /** The db the queued commands will run in: a SELECT inside the transaction moves it. */
  private db: number;

  /** Commands the client queued (CLIENT LIST's multi=), without the proxy's script read-backs. */
  get size(): number {
    return this.queued.filter((q) => !isReadBack(q.args)).length;
  }

  abort(): void {
    this.aborted = true;
  }

  constructor(private readonly session: ClientSession) {
    this.db = session.db;
  }

  /**
   * Queues one command; returns the reply for it (+QUEUED or the queue-time error), or the node's
   * queue-time answer to come while it has a memory limit (memory-limit.ts).
   */
  queue(name: string, spec: CommandSpec | undefined, args: Buffer[], raw: Buffer): Buffer | Promise<Buffer> {
    const s = this.session;
    if (NO_MULTI.has(name)) {
      this.aborted = true;
      return encode.error('ERR Command not allowed inside a transaction');
    }
    if (spec && NOT_IN_TRANSACTION.has(spec.category)) {
      this.aborted = true;
      return encode.error(`ERR Command '${name}' is not allowed inside a transaction through pika-sync-proxy`);
    }
    // The proxy's own replication commands answer at EXEC, after the node's (transaction-exec.ts).
    if (spec?.category === 'replication') {
      this.queued.push({ args, raw, write: false, local: true });
      return encode.QUEUED;
    }
    if (spec?.category === 'connection' && name !== 'select' && name !== 'ping' && name !== 'echo') {
      this.aborted = true;
      return encode.error(`ERR Command '${name}' is not allowed inside a transaction`);
    }
    const refusal = spec?.category === 'admin' ? adminRefusal(name, { args }) : scriptRefusal(s, name);
    if (refusal) {
      this.aborted = true;
      return refusal;
    }
    const write = spec?.category === 'write' || spec?.category === 'blocking' || changesScriptState(name, args);
    if (write && s.ctx.replication.role === 'replica') {
      this.aborted = true;
      return READONLY_ERROR;
    }
    if (!write) {
      const refusal = s.readRefusal();
      if (refusal) {
        this.aborted = true;
        return refusal;
      }
    }
    if (name === 'select') {
      const db = Number(args[1].toString());
      // An invalid index fails inside EXEC and leaves the db as it was, as on the node.
      if (Number.isInteger(db) && db >= 0 && db < s.ctx.dbCount()) this.db = db;
    }
    // Scopes (snapshot copy-on-write, WATCH) must name the db the command will really write.
    const scope = write ? s.scopeOf(spec, args) : undefined;
    if (scope && scope.kind !== 'all') scope.db = this.db;
    this.queued.push({ args, raw, write, scope });
    // A script's after-images are read back inside the same transaction (scripting.ts).
    this.queued.push(...readBacksToQueue(s, name, args));
    // An approximate trim's exact outcome is read right behind it (approx-trims.ts).
    if (write && (name === 'xadd' || name === 'xtrim') && isApproxTrim(args)) this.queued.push(queuedRead(firstEntryRead(args[1])));
    const queued = (): Buffer | Promise<Buffer> => (s.ctx.memoryLimit.limited ? this.askNode() : encode.QUEUED);
    return spec ? queued() : this.askUnknown(name, queued);
  }

  /**
   * A command the table does not know: a write the node names as one aborts the transaction
   * (unknown-commands.ts); anything else is queued as a read.
   */
  private askUnknown(name: string, queued: () => Buffer | Promise<Buffer>): Buffer | Promise<Buffer> {
    const unknown = this.session.ctx.unknownCommands;
    const refuse = (): Buffer => {
      this.aborted = true;
      return unknownWriteRefusal(name);
    };
    const writes = unknown.known(name);
    if (writes !== undefined) return writes ? refuse() : queued();
    const answer = unknown.writes(name).then((w) => (w ? refuse() : queued()));
    this.asked.push(answer);
    return answer;
  }

  static handle(s: ClientSession, name: string, args: Buffer[]): Promise<void> | void {
    switch (name) {
      case 'multi':
        if (s.transaction) return s.reply(encode.error('ERR MULTI calls can not be nested'));
        s.transaction = new Transaction(s);
        return s.reply(encode.OK);
      case 'discard':
        if (!s.transaction) return s.reply(encode.error('ERR DISCARD without MULTI'));
        s.transaction = null;
        s.ctx.watches.unwatch(s);
        return s.reply(encode.OK);
      case 'watch':
        if (s.transaction) return s.reply(encode.error('ERR WATCH inside MULTI is not allowed'));
        s.ctx.watches.watch(s, s.db, args.slice(1));
        return watchExpiries(s, args.slice(1));
      case 'unwatch':
        s.ctx.watches.unwatch(s);
        return s.reply(encode.OK);
      case 'exec':
        if (!s.transaction) return s.reply(encode.error('ERR EXEC without MULTI'));
        return s.transaction.exec();
    }
  }

  /** Whether the node would queue a command now (-OOM over maxmemory): PING inside MULTI meets that check. */
  private askNode(): Promise<Buffer> {
    const s = this.session;
    const answer = new Promise<Buffer>((resolve) => {
      s.ctx.path.sendBatch(this.db, QUEUE_PROBE, [], (reply, err) => {
        const ping = reply?.type === 42 ? arrayElements(reply.raw)[1] : undefined;
        const refusal = ping === undefined ? errorReply(err) : ping[0] === 45 ? ping : null;
        if (refusal) this.aborted = true;
        resolve(refusal ?? encode.QUEUED);
      }, s.lanes);
    });
    this.asked.push(answer);
    return answer;
  }

  private exec(): Promise<void> | void {
    const s = this.session;
    // EXEC judges the node's queue-time answers: wait for those still on their way.
    if (this.asked.length > 0) {
      const asked = Promise.all(this.asked);
      this.asked = [];
      return asked.then(() => this.exec());
    }
    s.transaction = null;
    if (this.aborted) {
      s.ctx.watches.unwatch(s);
      return s.reply(encode.error('EXECABORT Transaction discarded because of previous errors.'));
    }
    const scopes = this.queued.filter((q) => q.scope).map((q) => q.scope!);
    const waits = scopes.map((scope) => s.gate(scope)).filter((w): w is Promise<void> => w !== null);
    const dispatch = (): Promise<void> | void => {
      // With several lanes, the WATCH check and the batch's holds must happen in one go: wait
      // until nothing of this client is on its way, so the batch leaves at once after the check.
      const idle = s.ctx.path.keyed ? s.lanes.whenIdle() : null;
      if (idle) return idle.then(dispatch);
      // A flush sent earlier may still be finding out whether a watched key existed.
      const probing = s.ctx.watches.settled(s);
      if (probing) return probing.then(dispatch);
      const watched = s.ctx.path.keyed ? s.ctx.watches.keysOf(s) : [];
      const dirty = s.watchDirty || s.ctx.watches.expiredSince(s);
      s.ctx.watches.unwatch(s);
      if (dirty) return s.reply(encode.NULL_ARRAY);
      if (this.queued.length === 0) return s.reply(Buffer.from('*0\r\n'));
      // The role may have changed since the commands were queued (another client's REPLICAOF).
      const refusal = execRoleRefusal(s, this.queued);
      if (refusal) return s.reply(refusal);
      const db = s.db;
      // A SELECT inside the transaction leaves the client in that db afterwards, as on Redis.
      s.db = dbAfter(this.queued, db, s.ctx.dbCount());
      const slot = s.slot();
      // Over maxmemory the node refuses every command queued in its MULTI, yet Redis runs an EXEC
      // of reads queued before: reads go without MULTI, every lane held, so nothing comes between.
      if (s.ctx.memoryLimit.limited && !this.queued.some((q) => q.write || q.local)) {
        return s.ctx.path.sendBatch(db, this.queued, [], (reply, err) => s.fill(slot, reply ? clientExecReply(this.queued, reply.raw) : errorReply(err)), s.lanes, true);
      }
      if (this.queued.some((q) => q.local)) {
        return execWithProxyCommands(s, this.queued, db, watched).then((reply) => s.fill(slot, reply), (err) => s.fill(slot, errorReply(err)));
      }
      s.ctx.path.sendTransaction(db, this.queued, scopes, (reply, err) => s.fill(slot, reply ? clientExecReply(this.queued, reply.raw) : errorReply(err)), s.lanes, watched);
    };
    if (waits.length === 0) return dispatch();
    return Promise.all(waits).then(dispatch);
  }
}

const PTTL = Buffer.from('PTTL');

/**
 * WATCH's reply waits for the PTTL of each key (in the client's order, so the next EXEC sees it):
 * a key with a TTL aborts the EXEC once that time has passed (WatchRegistry.expiresAt). A key
 * without a TTL, missing or already expired (PTTL -1, -2; Pika answers 0 for a missing key) has
 * no deadline. A PTTL that got no integer counts as expired now, as a failed flush probe counts as
 * "existed": the EXEC aborts rather than run past an expiry nobody saw.
 */
function watchExpiries(s: ClientSession, keys: Buffer[]): void {
  const slot = s.slot();
  let left = keys.length;
  for (const key of keys) {
    s.ctx.path.send(s.db, encode.encodeCommand([PTTL, key]), (reply) => {
      const ms = reply?.type === 58 ? Number(reply.raw.toString('latin1', 1, reply.raw.length - 2)) : NaN;
      if (Number.isNaN(ms)) s.ctx.watches.expiresAt(s, Date.now());
      else if (ms > 0) s.ctx.watches.expiresAt(s, Date.now() + ms);
      if (--left === 0) s.fill(slot, encode.OK);
    }, s.lanes);
  }
}

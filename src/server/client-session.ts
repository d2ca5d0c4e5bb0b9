/**
 * One client connection: parses its requests, classifies each through the command table, and
 * answers in order. Replies are slots in a FIFO filled as answers arrive (from the node, or made
 * by the proxy) and written in request order, so a pipelined client sees Redis's ordering and its
 * reads never overtake its own writes (everything of one client goes through the ordered path, and
 * a switch to another connection waits for the client's earlier replies).
 *
 * Flow control: reading pauses while too many requests are queued or unanswered; a client whose
 * unsent replies exceed --client-output-limit is disconnected (bounded proxy memory).
 */
import { SAFE_PROFILE, toNodeForm } from '../backend/node-profile';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { SlotTimes, UNKNOWN_CLASS, UNTIMED } from '../metrics/command-timing';
import type { Logger } from 'pino';
import { Fifo } from '../backend/fifo';
import type { ReplyTarget } from '../backend/node-connection';
import type { LaneClient } from './lane-client';
import type { SyncProxyError } from '../errors';
import * as encode from '../resp/encode';
import { Request, requestOf } from '../resp/request';
import { RequestParser } from '../resp/request-parser';
import type { WriteScope } from '../source/types';
import { CommandSpec, commandKeys, lookupLowerCase } from './command-table';
import { dispatch } from './command-dispatch';
import type { ProxyContext } from './context';
import { PubSubMode } from './pubsub-mode';
import { errorReply } from './refusals';
import { ReplyQueue, Slot } from './reply-queue';
import { Transaction } from './transaction';
import { answerIfBusy, meetsBusyScript } from './script-watch';

/** Pause reading when this many requests are queued or unanswered; resume below half. */
const MAX_OUTSTANDING = 4096;
const ALWAYS_ALLOWED_BEFORE_AUTH = new Set(['auth', 'hello', 'quit']);

let nextId = 1;

export class ClientSession implements ReplyTarget {
  readonly id = nextId++;
  readonly createdAt = Date.now();
  db = 0;
  name = '';
  authenticated: boolean;
  watchDirty = false;
  /** CLIENT REPLY: 'off' drops every reply, 'skip' this one and the next; pushes still go out. */
  replyMode: 'on' | 'off' | 'skip' = 'on';
  private skipNextReply = false;
  lastCommand = '';
  private commandsRun = 0;
  transaction: Transaction | null = null;
  pubsub: PubSubMode | null = null;
  private diverted?: (chunk: Buffer) => void;
  /** This client's order across the node lanes; its node replies come back through it. */
  readonly lanes: LaneClient;
  private readonly parser = new RequestParser();
  private readonly requests = new Fifo<Request>();
  /** A protocol error to answer once the requests parsed before it are answered. */
  private protocolError: string | undefined;
  private readonly replies: ReplyQueue;
  private busy = false;
  private paused = false;
  private closing = false;
  closed = false;
  private readonly closeListeners: (() => void)[] = [];

  private readonly logger: Logger;
  /** Command timing (metrics on): when the current command could start, and its class. */
  private readonly timed: boolean;
  private runnableAt = 0;
  private commandClass = UNTIMED;

  constructor(readonly socket: net.Socket, readonly ctx: ProxyContext) {
    this.logger = ctx.logger.child({ conn: this.id, addr: `${socket.remoteAddress}:${socket.remotePort}` });
    this.logger.debug('client connected');
    this.authenticated = !ctx.config.requirepass;
    this.replies = new ReplyQueue(socket, ctx.config.clientOutputLimit, () => this.afterFlush(), (pendingBytes) => {
      ctx.stats.outputLimitDisconnects++;
      this.logger.warn({ pendingBytes }, 'client output limit exceeded; disconnecting');
    }, ctx.commandTiming ? new SlotTimes(ctx.commandTiming) : null);
    this.timed = ctx.commandTiming !== undefined;
    this.lanes = ctx.path.client(this);
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.onClose());
  }

  describe(): string {
    const addr = `${this.socket.remoteAddress}:${this.socket.remotePort}`;
    const age = Math.floor((Date.now() - this.createdAt) / 1000);
    const flags = this.ctx.blocked.isBlocked(this) ? 'b' : this.transaction ? 'x' : this.pubsub ? 'P' : 'N';
    return `id=${this.id} addr=${addr} name=${this.name} age=${age} db=${this.db} flags=${flags} multi=${this.transaction ? this.transaction.size : -1} sub=${this.pubsub ? 1 : 0} resp=${this.proto} cmd=${this.lastCommand}`;
  }

  onClosed(listener: () => void): void {
    this.closeListeners.push(listener);
  }

  /**
   * From now on the client's bytes go to `sink` unparsed (SYNC's pipe to the node, sync-pipe.ts);
   * requests already parsed and not run are dropped with the session's end.
   */
  divert(sink: (chunk: Buffer) => void): void {
    this.diverted = sink;
    while (this.requests.shift());
  }

  private onData(chunk: Buffer): void {
    if (this.diverted) return this.diverted(chunk);
    if (this.closing) return;
    if (this.timed) this.runnableAt = performance.now();
    try {
      this.parser.feed(chunk);
      for (let req = this.parser.next(); req; req = this.parser.next()) this.requests.push(req);
    } catch (err) {
      this.ctx.stats.protocolErrors++;
      this.logger.info({ err: (err as Error).message }, 'protocol error; closing the connection');
      // As Redis: answer the requests already parsed, then the protocol error, then close.
      this.protocolError = `ERR ${(err as Error).message}`;
    }
    this.pump();
  }

  private pump(): void {
    while (!this.busy && !this.closed && !this.closing) {
      const req = this.requests.shift();
      if (!req) {
        if (this.protocolError !== undefined) {
          this.commandClass = UNTIMED; // answers no command
          this.reply(encode.error(this.protocolError));
          // Not paused: what the client still sends is read and dropped (onData) until the close,
          // so a client blocked writing its bad bytes is not left waiting on a full socket.
          this.closing = true;
        }
        break;
      }
      this.ctx.stats.commandsProcessed++;
      this.commandsRun++;
      let pending: Promise<void> | void;
      // Busy already while it starts: a command that flushes replies before its first await
      // (repliesSettled) would otherwise start the next command from afterFlush, ahead of itself.
      this.busy = true;
      try {
        pending = this.execute(req);
      } catch (err) {
        this.busy = false;
        this.reply(errorReply(err));
        continue;
      }
      this.busy = false;
      if (pending) {
        this.busy = true;
        pending
          .catch((err) => this.reply(errorReply(err)))
          .finally(() => {
            this.busy = false;
            // The commands queued behind this one could only start now.
            if (this.timed) this.runnableAt = performance.now();
            this.pump();
          });
      }
    }
    this.applyFlowControl();
  }

  private applyFlowControl(): void {
    const outstanding = this.requests.length + this.replies.length;
    if (!this.paused && outstanding >= MAX_OUTSTANDING) {
      this.paused = true;
      this.socket.pause();
    } else if (this.paused && !this.closing && outstanding < MAX_OUTSTANDING / 2) {
      this.paused = false;
      this.socket.resume();
    }
  }

  /**
   * Runs one command; a returned promise holds this client's later commands until it settles.
   * The hot paths (forwarded reads, plain writes) never make the argument views (see Request).
   */
  private execute(sent: Request, busyChecked = false): Promise<void> | void {
    const name = sent.name;
    // PEXPIREAT means "expire then" to a client; a node that deletes the key instead (Pika 4.0.1)
    // gets the time remaining, so the command does what it says (node-profile.ts).
    const req = name === 'pexpireat' && sent.argc === 3 && (this.ctx.nodeProfile() ?? SAFE_PROFILE).expiry === 'pexpire' ? requestOf(toNodeForm(sent.args, SAFE_PROFILE)) : sent;
    this.lastCommand = name;
    const spec = lookupLowerCase(name);
    // The first slot this command takes is its reply (slot()); later ones are pushes.
    this.commandClass = spec ? spec.categoryIndex : UNKNOWN_CLASS;
    if (!this.authenticated && !ALWAYS_ALLOWED_BEFORE_AUTH.has(name)) return this.reply(encode.error('NOAUTH Authentication required.'));
    if (!busyChecked && this.ctx.scripts.activeFor(this) && meetsBusyScript(name, spec, req)) {
      return answerIfBusy(this, name).then((answered) => (answered ? undefined : this.execute(sent, true)));
    }
    return dispatch(this, name, spec, req, () => this.execute(sent));
  }

  /** Reads are refused on a replica until its sync is confirmed. */
  readRefusal(): Buffer | null {
    if (this.ctx.replication.role !== 'replica') return null;
    const gate = this.ctx.replication.readGate();
    return gate ? encode.error(gate) : null;
  }

  forwardRead(req: Request, bulky?: boolean): void {
    const refusal = this.readRefusal();
    if (refusal) return this.reply(refusal);
    this.forward(req, bulky);
  }

  forward(req: Request, bulky?: boolean): void {
    this.ctx.path.forward(this.lanes, this.db, req, this.slot(), bulky);
  }

  scopeOf(spec: CommandSpec | undefined, args: Buffer[]): WriteScope {
    if (spec?.scope === 'all') return { kind: 'all' };
    if (spec?.scope === 'db') return { kind: 'db', db: this.db };
    const keys = spec ? commandKeys(spec, args) : null;
    return keys ? { kind: 'keys', db: this.db, keys } : { kind: 'all' };
  }

  /** Waits for the snapshot build's copy-on-write of the keys, if one runs. */
  gate(scope: WriteScope): Promise<void> | null {
    return this.ctx.writeGate()?.beforeWrite(scope) ?? null;
  }

  /** Sends a write with `scope` once the snapshot build's gate lets it (logged when answered). */
  sendGatedWrite(req: Request, scope: WriteScope): Promise<void> | void {
    const wait = this.gate(scope);
    // The common case (no gate to wait for) dispatches without making a closure.
    if (!wait) return this.ctx.path.sendWrite(this.db, req, scope, this.lanes, this.slot(), undefined, this.lanes);
    return wait.then(() => this.ctx.path.sendWrite(this.db, req, scope, this.lanes, this.slot(), undefined, this.lanes));
  }

  /** Resolves once every reply queued so far is ready (before switching connections). */
  async repliesSettled(): Promise<void> {
    while (this.replies.length > 0 && !this.closed) {
      this.replies.flush();
      if (this.replies.length === 0) return;
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** A reply from the node to the request that took `slot` (ReplyTarget). */
  onReply(slot: Slot, buf: Buffer, start: number, end: number): void {
    this.replies.fillRange(slot, buf, start, end);
  }

  onReplyError(slot: Slot, error: SyncProxyError): void {
    this.fill(slot, errorReply(error));
  }

  /** The RESP version the client speaks (HELLO). */
  get proto(): 2 | 3 {
    return this.lanes.proto;
  }

  slot(): Slot {
    let slot: Slot;
    if (!this.timed) slot = this.replies.slot();
    else {
      slot = this.replies.slot(this.commandClass, this.runnableAt);
      this.commandClass = UNTIMED;
    }
    if (this.replyMode !== 'on' || this.skipNextReply) this.silenceReply(slot);
    return slot;
  }

  private silenceReply(slot: Slot): void {
    if (this.replyMode === 'skip') {
      this.replyMode = 'on';
      this.skipNextReply = true;
    } else if (this.replyMode === 'on') {
      this.skipNextReply = false;
    }
    this.replies.silence(slot);
  }

  fill(slot: Slot, data: Buffer): void {
    // The proxy's own nulls are RESP2's; a RESP3 client gets RESP3's one null for either.
    if (this.lanes.proto === 3 && (data === encode.NULL_BULK || data === encode.NULL_ARRAY)) data = encode.NULL3;
    this.replies.fill(slot, data);
  }

  reply(data: Buffer): void {
    this.fill(this.slot(), data);
  }

  /** Pushes that do not answer a request (pub/sub messages) go straight to the client's queue. */
  push(data: Buffer): void {
    this.fill(this.replies.slot(), data); // answers no command: not timed
  }

  private afterFlush(): void {
    if (this.closing && this.replies.length === 0) this.closeNow();
    this.applyFlowControl();
    if (!this.busy && this.requests.length > 0) this.pump();
  }

  /**
   * Graceful stop: read and run nothing more; what was already sent to the node is still
   * answered. `drained` tells when every reply owed has been written.
   */
  stopAccepting(): void {
    this.closing = true;
    this.socket.pause();
  }

  get drained(): boolean {
    return this.replies.length === 0 || this.closed;
  }

  /**
   * Closes as Redis does after its last reply (QUIT, a protocol error, a stop): the reply is
   * flushed, then the socket is closed, not just half-closed. A half-close left a client that
   * was still writing (the bad bytes of a protocol error) blocked forever: its writes never drain
   * so its own end never completes.
   */
  private closeNow(): void {
    if (this.socket.writableEnded) return;
    this.socket.end(() => this.socket.destroy());
  }

  /** QUIT: answer, then close once every earlier reply is written. */
  closeAfterReplies(): void {
    this.closing = true;
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.logger.debug({ commands: this.commandsRun }, 'client disconnected');
    this.ctx.watches.unwatch(this);
    this.pubsub?.close();
    for (const l of this.closeListeners) l();
  }
}

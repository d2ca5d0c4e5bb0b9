/**
 * Lanes: the data path's connections to the node (`--node-connections N`). A lane runs what it
 * is given in order (one NodeConnection: the node answers a connection's commands in the order
 * it executed them). Commands on one key always take the lane its name hashes to, so the write
 * log, appended as replies arrive, holds each key's writes in the node's order; writes on
 * different lanes touch different keys and commute. What spans lanes (a multi-key write whose
 * keys hash apart, FLUSHALL, a transaction, the snapshot's barrier) goes through `exclusive`:
 * every lane involved is held and drained first.
 */
import type { Logger } from 'pino';
import { Fifo } from '../backend/fifo';
import type { NodeConnection, ReplyCallback, ReplyTarget } from '../backend/node-connection';
import { encodeArgs } from '../resp/request-parser';

const PING = encodeArgs(['PING']);
const selectCache = new Map<number, Buffer>();
function selectCommand(db: number): Buffer {
  let raw = selectCache.get(db);
  if (!raw) selectCache.set(db, (raw = encodeArgs(['SELECT', String(db)])));
  return raw;
}

/** HELLO 2 / HELLO 3: a lane answers in the protocol of the client whose command it carries. */
export const HELLO = { 2: encodeArgs(['HELLO', '2']), 3: encodeArgs(['HELLO', '3']) } as const;

/** The RESP version a client speaks (HELLO); its commands are answered in it. */
export type Protocol = 2 | 3;

type LaneTask = (lane: Lane) => void;

export class Lane {
  /** Tasks submitted while the lane is held, run in order on release. */
  private readonly waiting = new Fifo<LaneTask>();
  /** An exclusive operation owns the lane: nothing else is sent on it. */
  held = false;

  constructor(
    readonly index: number,
    readonly connection: NodeConnection,
    private readonly logger: Logger,
  ) {
    connection.on('up', () => {
      connection.db = 0;
      connection.proto = 2;
    });
  }

  /** Commands sent and not answered, plus those waiting for a hold to end. */
  get load(): number {
    return this.connection.inFlight + this.waiting.length;
  }

  /** Runs `task` now, or in order once the lane is released. */
  submit(task: LaneTask): void {
    if (this.held) this.waiting.push(task);
    else task(this);
  }

  /** Ends a hold: what was submitted meanwhile runs now, in order (until a task holds again). */
  release(): void {
    this.held = false;
    while (!this.held && this.waiting.length > 0) this.waiting.shift()!(this);
  }

  /**
   * Holds the lane once every task submitted before has run, and calls `drained` once the node
   * has answered everything sent on it before (a PING behind them; a lost link answers too).
   */
  holdWhenDrained(drained: () => void): void {
    this.submit(() => {
      this.held = true;
      this.connection.send(PING, () => drained());
    });
  }

  private selectDb(db: number): void {
    const connection = this.connection;
    if (connection.db === db || !connection.isUp) return;
    connection.db = db;
    connection.send(selectCommand(db), (reply, err) => {
      if (err || reply?.type !== 45) return;
      // The proxy validated the index against the node's db count, so this is a real fault.
      this.logger.error({ db, lane: this.index, reply: reply.raw.toString().trim() }, 'node refused SELECT on a lane');
      connection.db = -1;
    });
  }

  /**
   * Switches the connection to the client's protocol (RESP3 clients share lanes with RESP2 ones:
   * the switch is one HELLO pipelined before the command, only when the protocol changes, so a
   * lane used by RESP2 clients alone never sends one). Commands without a client go in RESP2:
   * the proxy reads their replies.
   */
  private selectProtocol(proto: Protocol): void {
    const connection = this.connection;
    if (connection.proto === proto || !connection.isUp) return;
    connection.proto = proto;
    connection.send(HELLO[proto], (reply, err) => {
      if (err || reply?.type !== 45) return;
      // The proxy sends HELLO 3 only to a node whose profile says it speaks RESP3.
      this.logger.error({ proto, lane: this.index, reply: reply.raw.toString().trim() }, 'node refused HELLO on a lane');
      connection.proto = 2;
    });
  }

  /** Sends `raw` in `db` now (the caller owns the lane's order: not held, or the hold's owner). */
  send(db: number, raw: Buffer, cb: ReplyCallback, proto: Protocol = 2): void {
    this.selectDb(db);
    this.selectProtocol(proto);
    this.connection.send(raw, cb);
  }

  sendRange(db: number, buf: Buffer, start: number, end: number, target: ReplyCallback | ReplyTarget, tag: number, proto: Protocol = 2): void {
    this.selectDb(db);
    this.selectProtocol(proto);
    this.connection.sendRange(buf, start, end, target, tag);
  }
}

/**
 * The lane of a key: FNV-1a over its bytes. Hand-written: a key is a few dozen bytes, and a call
 * into a native CRC costs more than hashing it here; any well-spread hash keeps the rule (one
 * key, one lane). The db is left out on purpose: MOVE and COPY … DB name a key in two dbs.
 */
export function laneOfKey(key: Buffer, lanes: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i], 0x01000193);
  return (h >>> 0) % lanes;
}

/**
 * Runs `run` on `carrier` while every lane of `lanes` is held and drained: nothing sent before on
 * them is still unanswered, nothing sent after runs before it. `run` calls `done` once the node
 * answered; the other lanes stay held until then (the carrier is FIFO, so it is released as soon
 * as `run` has sent). Holds are taken in one synchronous pass, so two exclusive operations queue
 * in the same order on every lane they share and never wait for each other in a cycle.
 */
export function exclusive(lanes: readonly Lane[], carrier: Lane, run: (carrier: Lane, done: () => void) => void): void {
  if (lanes.length === 1) return carrier.submit((lane) => run(lane, noop));
  let left = lanes.length;
  const go = (): void => {
    run(carrier, () => {
      for (const lane of lanes) if (lane !== carrier) lane.release();
    });
    carrier.release();
  };
  for (const lane of lanes) lane.holdWhenDrained(() => --left === 0 && go());
}

function noop(): void {}

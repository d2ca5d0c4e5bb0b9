/**
 * One client's order across lanes. On a direct connection a client's commands take effect in the
 * order it sent them; through lanes they would not if a command on one lane overtook the
 * client's earlier command still waiting on another. So: a command may start on the lane where
 * the client's unanswered commands are (the lane is FIFO), or anywhere once nothing of the client
 * is unanswered; otherwise it waits here, in order, and so does everything the client sends after
 * it. With one lane nothing ever waits.
 *
 * It is the ReplyTarget of the client's node requests: it counts the answers, then hands each to
 * the session.
 */
import { Fifo } from '../backend/fifo';
import type { ReplyCallback, ReplyTarget } from '../backend/node-connection';
import type { SyncProxyError } from '../errors';
import type { FramedReply } from '../resp/reply-framer';
import type { Protocol } from './lanes';

/** `want` of a read: whichever lane the client's order and the lanes' load allow. */
export const ANY_LANE = -1;
/** `want` of a bulky read (CommandSpec.bulky): any lane, but not the quick reads' lane. */
export const ANY_BULKY_LANE = -3;
/** `mayStart`'s answer when the command must wait for the client's earlier commands. */
export const NOT_YET = -2;

interface Waiting {
  want: number;
  idle: boolean;
  write: boolean;
  run: (lane: number) => void;
}

/** What a client needs from the path: a lane for a read, and word when a queued write leaves. */
export interface LaneChooser {
  readLane(home: number, bulky: boolean): number;
  writeDequeued(): void;
  writeQueued(): void;
}

export class LaneClient implements ReplyTarget {
  /** The lane of the client's unanswered commands (meaningful while `unanswered` > 0). */
  lane = 0;
  unanswered = 0;
  /** The protocol the client speaks (HELLO): its commands go to the node in it. */
  proto: Protocol = 2;
  private readonly waiting = new Fifo<Waiting>();
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly target: ReplyTarget,
    private readonly chooser: LaneChooser,
    /** Which of the bulky reads' lanes this client's bulky reads take. */
    readonly home: number,
  ) {}

  /**
   * The lane the command may start on now, or NOT_YET. `idle`: it needs nothing of the client
   * unanswered (an operation across lanes); `want` is then its carrier lane.
   */
  mayStart(want: number, idle: boolean): number {
    if (this.waiting.length > 0) return NOT_YET;
    return this.laneFor(want, idle);
  }

  private laneFor(want: number, idle: boolean): number {
    if (this.unanswered === 0) return want >= 0 ? want : this.chooser.readLane(this.home, want === ANY_BULKY_LANE);
    if (idle) return NOT_YET;
    if (want < 0 || want === this.lane) return this.lane;
    return NOT_YET;
  }

  /** The command starts on `lane` (its answer must come through `answered`). */
  started(lane: number): void {
    this.lane = lane;
    this.unanswered++;
  }

  /** Queues a command `mayStart` refused; `run` gets its lane once the client's order allows. */
  enqueue(want: number, idle: boolean, write: boolean, run: (lane: number) => void): void {
    this.waiting.push({ want, idle, write, run });
    if (write) this.chooser.writeQueued();
  }

  /** One of the client's commands was answered (or failed). */
  answered(): void {
    if (--this.unanswered > 0) return;
    for (let head = this.waiting.peek(); head; head = this.waiting.peek()) {
      const lane = this.laneFor(head.want, head.idle);
      if (lane === NOT_YET) return;
      this.waiting.shift();
      if (head.write) this.chooser.writeDequeued();
      this.started(lane);
      head.run(lane);
    }
    if (this.unanswered === 0 && this.idleWaiters.length > 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** null when nothing of the client is unanswered or waiting; else resolves when that is so. */
  whenIdle(): Promise<void> | null {
    if (this.unanswered === 0 && this.waiting.length === 0) return null;
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  onReply(tag: number, buf: Buffer, start: number, end: number): void {
    this.target.onReply(tag, buf, start, end);
    this.answered();
  }

  onReplyError(tag: number, error: SyncProxyError): void {
    this.target.onReplyError(tag, error);
    this.answered();
  }

  /** `cb`, counted as one of the client's answers. */
  callback(cb: ReplyCallback): ReplyCallback {
    return (reply: FramedReply | null, err?: SyncProxyError) => {
      cb(reply, err);
      this.answered();
    };
  }
}

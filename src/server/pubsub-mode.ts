/**
 * SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE put a client on a dedicated node connection: pushed messages
 * have no request to match, so they cannot share the ordered connection. Every frame from that
 * connection goes to the client as it came.
 *
 * The (P|S)(UN)SUBSCRIBE commands answer one frame per channel, not one per request (and an
 * UNSUBSCRIBE without arguments one per subscription, or one with a nil channel when there is
 * none), so they never go on the ordered connection, where the extra frames would be taken for the
 * replies of other requests: outside the mode an UNSUBSCRIBE runs here too, and the mode ends
 * again once its frames are in. The mode counts the frames each command still owes (./pubsub-
 * frames.ts) so that replies the proxy makes (errors, QUIT, RESET) wait behind them, and the mode
 * ends only when no frame is owed and nothing is subscribed, by the proxy's own count of the
 * channels: Pika 4.0.1 reports 0 remaining for an UNSUBSCRIBE of a channel it was not subscribed
 * to while others still are, so the node's count cannot be trusted for that.
 */
import type { NodeConnection } from '../backend/node-connection';
import * as encode from '../resp/encode';
import type { FramedReply } from '../resp/reply-framer';
import type { Request } from '../resp/request';
import type { ClientSession } from './client-session';
import { HELLO } from './lanes';
import { Owed, Subscriptions, familyOf, framesOwed, readFrame } from './pubsub-frames';

const ALLOWED = new Set(['subscribe', 'psubscribe', 'ssubscribe', 'unsubscribe', 'punsubscribe', 'sunsubscribe', 'ping', 'quit', 'reset']);
const SUBSCRIBING = new Set(['subscribe', 'psubscribe', 'ssubscribe']);

/** What the client is owed, in order: frames from the node, or a reply made here. */
type Pending = Owed | { local: Buffer; then?: () => void };

export class PubSubMode {
  private readonly subs = new Subscriptions();
  private readonly pending: Pending[] = [];
  private idleWaiters: (() => void)[] = [];
  private closed = false;

  private constructor(private readonly session: ClientSession, private readonly conn: NodeConnection) {}

  /** A pub/sub command outside pub/sub mode. */
  static async enter(s: ClientSession, name: string, req: Request): Promise<void> {
    await s.repliesSettled();
    const conn = s.ctx.dedicatedConnection();
    try {
      await conn.connect();
    } catch (err) {
      return s.reply(encode.error(`ERR ${(err as Error).message}`));
    }
    const mode = new PubSubMode(s, conn);
    s.pubsub = mode;
    conn.pushSink = (frame) => mode.onFrame(frame);
    // The node dropped the subscriber link: close the client so its library resubscribes.
    conn.on('down', mode.onLinkDown);
    // A RESP3 client gets its messages as RESP3 pushes: the dedicated connection speaks RESP3 too
    // (HELLO 3 is sent only where the node's profile says it speaks it, see connection-commands).
    if (s.proto === 3) conn.send(HELLO[3], () => undefined);
    mode.send(name, req.argc, req.raw);
    // An UNSUBSCRIBE with nothing subscribed: later commands wait until the mode has ended again.
    if (!SUBSCRIBING.has(name)) await mode.idle();
  }

  /**
   * A command the mode refuses, behind an UNSUBSCRIBE still owed frames, waits for them: the mode
   * may end with them, and then the command runs as usual (as Redis runs it).
   */
  waitBefore(name: string): Promise<void> | null {
    // RESP3: any command runs in the mode, after the frames owed before it (its reply follows them).
    if (this.session.proto === 3 && !this.owns(name)) return this.pending.length > 0 ? this.idle() : null;
    if (ALLOWED.has(name) || !this.pending.some((p) => 'family' in p && p.unsubscribe)) return null;
    return this.idle();
  }

  /**
   * Whether the mode answers `name` itself. In RESP2 it answers everything (refusing what is not
   * allowed); in RESP3, where a subscribed client may run any command (pushes are told apart from
   * replies by their type), only the pub/sub commands, QUIT and RESET: the rest takes the usual path.
   */
  owns(name: string): boolean {
    return this.session.proto === 2 || (ALLOWED.has(name) && name !== 'ping');
  }

  handle(name: string, args: Buffer[], raw: Buffer): Promise<void> | void {
    const s = this.session;
    if (!ALLOWED.has(name)) {
      return this.local(encode.error(`ERR Can't execute '${name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`));
    }
    if (name === 'quit') return this.local(encode.OK, () => s.closeAfterReplies());
    if (name === 'reset') {
      // Later commands run outside the mode, so they wait for it to end.
      return new Promise((resolve) => this.local(encode.simple('RESET'), () => {
        this.close();
        s.pubsub = null;
        resolve();
      }));
    }
    this.send(name, args.length, raw);
  }

  private send(name: string, argc: number, raw: Buffer): void {
    this.pending.push({ family: familyOf(name), remaining: framesOwed(name, argc), unsubscribe: name.endsWith('unsubscribe') });
    this.conn.send(raw, (frame) => frame && this.onFrame(frame));
  }

  /** A reply made here, written after every frame owed before it. */
  private local(data: Buffer, then?: () => void): void {
    if (this.pending.length > 0) return void this.pending.push({ local: data, then });
    this.session.push(data);
    then?.();
  }

  private onFrame(frame: FramedReply): void {
    this.session.push(frame.raw);
    const head = this.pending[0];
    const seen = readFrame(frame.raw);
    if (seen.kind === 'message') return; // a push, not a reply
    if (head && 'family' in head && head.remaining === 'all') head.remaining = Math.max(1, this.subs.count(head.family));
    this.subs.apply(seen);
    if (head && 'family' in head && (seen.kind === 'error' || --(head.remaining as number) <= 0)) this.pending.shift();
    this.runLocal();
    if (this.pending.length > 0) return;
    if (this.subs.total === 0) {
      this.close();
      this.session.pubsub = null;
    }
    this.wakeIdle();
  }

  /** Writes the replies made here that no longer wait for a frame. */
  private runLocal(): void {
    for (let p = this.pending[0]; p && 'local' in p; p = this.pending[0]) {
      this.pending.shift();
      this.session.push(p.local);
      p.then?.();
    }
  }

  /** Resolves when no frame is owed (or the mode has ended). */
  idle(): Promise<void> {
    if (this.closed || this.pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private readonly onLinkDown = (): void => {
    this.session.socket.destroy();
  };

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.conn.off('down', this.onLinkDown);
    this.conn.pushSink = undefined;
    this.conn.destroy();
    this.wakeIdle();
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}

/**
 * SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE put a client on a dedicated node connection: pushed messages
 * have no request to match, so they cannot share the ordered connection. Every frame from that
 * connection goes to the client as it came; the mode ends when the node reports zero
 * subscriptions, or the client disconnects.
 */
import type { NodeConnection } from '../backend/node-connection';
import { decodeReply } from '../resp/decode';
import * as encode from '../resp/encode';
import type { FramedReply } from '../resp/reply-framer';
import type { Request } from '../resp/request';
import type { ClientSession } from './client-session';

const ALLOWED = new Set(['subscribe', 'psubscribe', 'ssubscribe', 'unsubscribe', 'punsubscribe', 'sunsubscribe', 'ping', 'quit', 'reset']);
const SUBSCRIBING = new Set(['subscribe', 'psubscribe', 'ssubscribe']);

export class PubSubMode {
  private constructor(private readonly session: ClientSession, private readonly conn: NodeConnection) {}

  /** A pub/sub command outside pub/sub mode. */
  static async enter(s: ClientSession, name: string, req: Request): Promise<void> {
    if (!SUBSCRIBING.has(name)) return void s.forward(req); // UNSUBSCRIBE while not subscribed
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
    conn.send(req.raw, (frame) => frame && mode.onFrame(frame));
  }

  handle(name: string, args: Buffer[], raw: Buffer): void {
    const s = this.session;
    if (!ALLOWED.has(name)) {
      return s.reply(encode.error(`ERR Can't execute '${name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`));
    }
    if (name === 'quit') {
      s.reply(encode.OK);
      return s.closeAfterReplies();
    }
    if (name === 'reset') {
      this.close();
      s.pubsub = null;
      return s.reply(encode.simple('RESET'));
    }
    if (args.length === 0) return;
    this.conn.send(raw, (frame) => frame && this.onFrame(frame));
  }

  private onFrame(frame: FramedReply): void {
    this.session.push(frame.raw);
    // ["unsubscribe", channel, remaining]: leave the mode when nothing remains subscribed.
    if (frame.type !== 42) return;
    const head = frame.raw.subarray(0, 40).toString('latin1').toLowerCase();
    if (!head.includes('unsubscribe')) return;
    const decoded = decodeReply(frame.raw);
    if (Array.isArray(decoded) && decoded[2] === 0) {
      this.close();
      this.session.pubsub = null;
    }
  }

  private readonly onLinkDown = (): void => {
    this.session.socket.destroy();
  };

  close(): void {
    this.conn.off('down', this.onLinkDown);
    this.conn.pushSink = undefined;
    this.conn.destroy();
  }
}

/**
 * -BUSY while a script runs too long, as Redis answers it. A node running a script past its
 * busy-reply-threshold (lua-time-limit) answers every other connection's command with -BUSY, but
 * the connection running the script is not read until it ends: through a lane, every command
 * queued behind the script on its lane (with one lane: every command of every client) would wait
 * for it instead, and a client waiting for its -BUSY before sending SCRIPT KILL would wait forever.
 *
 * So while a script is on its way, a command first asks the node on a connection of its own
 * (PING): a node busy with a script answers that PING with its -BUSY, which becomes the command's
 * answer. A node not busy yet answers PONG and the command goes its usual way (behind the script
 * on its lane, as it would wait on Redis before the threshold).
 */
import type { NodeConnection } from '../backend/node-connection';
import { encodeArgs } from '../resp/request-parser';

const PING = encodeArgs(['PING']);

export class ScriptWatch {
  private running = 0;
  private side: NodeConnection | undefined;

  constructor(private readonly connect: () => NodeConnection) {}

  /** A script was sent to the node; call the returned function once it is answered. */
  started(): () => void {
    this.running++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.running === 0) this.closeSide();
    };
  }

  /** Some script is on its way: commands check `busyError` first. */
  get active(): boolean {
    return this.running > 0;
  }

  /** The node's -BUSY error while a script holds it; null when it answers (or cannot be asked). */
  async busyError(): Promise<Buffer | null> {
    try {
      if (!this.side || !this.side.isUp) {
        this.side?.destroy();
        this.side = this.connect();
        await this.side.connect();
      }
      const side = this.side;
      const reply = await new Promise<Buffer | null>((resolve) => side.send(PING, (r) => resolve(r ? Buffer.from(r.raw) : null)));
      return reply && reply.toString('latin1', 0, 5) === '-BUSY' ? reply : null;
    } catch {
      return null;
    }
  }

  private closeSide(): void {
    this.side?.destroy();
    this.side = undefined;
  }
}

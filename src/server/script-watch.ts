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
import * as encode from '../resp/encode';
import type { Request } from '../resp/request';
import { encodeArgs } from '../resp/request-parser';
import type { ClientSession } from './client-session';
import type { CommandSpec } from './command-table';
import { isOnOwnConnection } from './scripting';

const PING = encodeArgs(['PING']);

export class ScriptWatch {
  private running = 0;
  /** Scripts on their way per client that sent them. */
  private readonly owners = new Map<object, number>();
  private side: NodeConnection | undefined;

  constructor(private readonly connect: () => NodeConnection) {}

  /** `owner` sent a script to the node; call the returned function once it is answered. */
  started(owner: object): () => void {
    this.running++;
    this.owners.set(owner, (this.owners.get(owner) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.owners.get(owner) ?? 1) - 1;
      if (left > 0) this.owners.set(owner, left);
      else this.owners.delete(owner);
      if (--this.running === 0) this.closeSide();
    };
  }

  /**
   * Some other client's script is on its way: `owner`'s commands check `busyError` first. A
   * client's own commands after its script wait for it, as on the node, which does not read the
   * connection running a script until it ends (they never meet its -BUSY).
   */
  activeFor(owner: object): boolean {
    return this.running > 0 && this.running > (this.owners.get(owner) ?? 0);
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

/** Of the commands the proxy answers itself, those Redis answers with -BUSY (not allow-busy). */
const BUSY_CONNECTION_COMMANDS = new Set(['ping', 'echo', 'select']);

/**
 * Whether Redis answers `name` with -BUSY while a script runs: what is not flagged allow-busy
 * in Redis 7.0 (MULTI, DISCARD, WATCH, UNWATCH, AUTH, HELLO, CLIENT, RESET, QUIT are; SCRIPT KILL,
 * FUNCTION KILL and FUNCTION STATS go on a connection of their own).
 */
export function meetsBusyScript(name: string, spec: CommandSpec | undefined, req: Request): boolean {
  if (spec?.category === 'connection') return BUSY_CONNECTION_COMMANDS.has(name);
  if (spec?.category === 'transaction') return name === 'exec';
  if ((name === 'script' || name === 'function') && req.argc === 2 && isOnOwnConnection(req.args[1])) return false;
  return true;
}

/**
 * Answers `s`'s command `name` with the node's -BUSY when the node is busy with a script (true);
 * false when the command may go its usual way. Inside MULTI the -BUSY discards the transaction at
 * EXEC; EXEC itself answers `-EXECABORT Transaction discarded because of: BUSY …`, as Redis does.
 */
export async function answerIfBusy(s: ClientSession, name: string): Promise<boolean> {
  const busy = await s.ctx.scripts.busyError();
  if (!busy) return false;
  if (name === 'exec' && s.transaction) {
    s.transaction = null;
    s.ctx.watches.unwatch(s);
    s.reply(encode.error(`EXECABORT Transaction discarded because of: ${busy.toString('latin1', 1, busy.length - 2)}`));
    return true;
  }
  s.transaction?.abort();
  s.reply(busy);
  return true;
}

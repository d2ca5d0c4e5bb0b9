/**
 * Commands the command table does not know — a newer node's (Redis 7.4's HEXPIRE, …), a module's
 * (JSON.SET, …), one renamed on the node — are forwarded as reads, unless the node says they
 * write: its `COMMAND INFO <name>` flags. Those are refused, because the proxy cannot log them
 * and replicas would silently diverge; a read the node knows passes as before. A node without
 * COMMAND (Pika 4.0.1, whose own commands are all in the table) answers an error: its unknown
 * commands pass to it, as before, and get its own answer.
 *
 * The node is asked once per name and link (a node that restarted may have other modules); the
 * answers kept are bounded, since the names come from clients.
 */
import { decodeReply } from '../resp/decode';
import { encodeArgs } from '../resp/request-parser';
import type { OrderedPath } from './ordered-path';

const MAX_KEPT = 1024;

export class UnknownCommands {
  /** true: the node flags it `write`. */
  private readonly verdicts = new Map<string, boolean>();
  private readonly asking = new Map<string, Promise<boolean>>();

  constructor(private readonly path: OrderedPath) {
    path.connection.on('up', () => this.verdicts.clear());
  }

  /** What the node said of `name` on this link, or undefined when not asked yet. */
  known(name: string): boolean | undefined {
    return this.verdicts.get(name);
  }

  /** Whether the node flags `name` as a write (false when it cannot say: no COMMAND, link down). */
  writes(name: string): Promise<boolean> {
    let answer = this.asking.get(name);
    if (answer) return answer;
    answer = new Promise<boolean>((resolve) => {
      this.path.send(0, encodeArgs(['COMMAND', 'INFO', name]), (reply) => {
        this.asking.delete(name);
        if (!reply) return resolve(false); // the link: the command itself will meet it too
        const writes = flagsOf(decodeReply(reply.raw)).includes('write');
        if (this.verdicts.size < MAX_KEPT) this.verdicts.set(name, writes);
        resolve(writes);
      });
    });
    this.asking.set(name, answer);
    return answer;
  }
}

/** COMMAND INFO's flags of its one command ([] for nil: the node does not know it; or an error). */
function flagsOf(decoded: unknown): string[] {
  const info = Array.isArray(decoded) ? decoded[0] : undefined;
  const flags = Array.isArray(info) ? info[2] : undefined;
  return Array.isArray(flags) ? flags.map((f) => String(f).toLowerCase()) : [];
}

/**
 * A raw pipelined RESP connection for tests that replay many commands into a node (snapshot
 * records, write-log entries): commands go out without waiting, every reply is checked in order,
 * and `settle()` waits for all replies and throws with the first failures. Independent of the
 * replica's own pipeline (src/replication), so a test built on it checks the master side alone.
 */
import net from 'node:net';
import { encodeArgs } from '../../src/resp/request-parser';
import { FramedReply, ReplyFramer } from '../../src/resp/reply-framer';

/** Returns a failure text for a bad reply, or null when the reply is fine. */
export type ReplyCheck = (reply: FramedReply) => string | null;

export const expectNoError: ReplyCheck = (r) => (r.type === 45 ? r.raw.toString().trim() : null);

export class PipelinedNode {
  private readonly framer = new ReplyFramer();
  private readonly checks: ReplyCheck[] = [];
  private head = 0;
  private readonly failures: string[] = [];
  private waiter: (() => void) | undefined;
  private closedError: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      this.framer.feed(chunk);
      for (let r = this.framer.next(); r; r = this.framer.next()) {
        const check = this.checks[this.head];
        this.checks[this.head++] = undefined as unknown as ReplyCheck;
        const failure = check ? check(r) : 'unexpected reply';
        if (failure) this.failures.push(failure);
      }
      if (this.head >= this.checks.length) this.wake();
    });
    socket.on('error', (err) => {
      this.closedError = err;
      this.wake();
    });
    socket.on('close', () => {
      this.closedError ??= new Error('connection closed');
      this.wake();
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<PipelinedNode> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, host, () => resolve(new PipelinedNode(s)));
      s.once('error', reject);
    });
  }

  get pending(): number {
    return this.checks.length - this.head;
  }

  send(args: readonly (Buffer | string)[], check: ReplyCheck = expectNoError): void {
    this.sendRaw(encodeArgs(args), check);
  }

  sendRaw(raw: Buffer, check: ReplyCheck = expectNoError): void {
    this.checks.push(check);
    this.socket.write(raw);
  }

  /** Waits for every reply; throws listing the failed replies (at most 10 shown). */
  async settle(what: string): Promise<void> {
    while (this.head < this.checks.length && !this.closedError) {
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    if (this.head < this.checks.length) throw new Error(`${what}: ${this.closedError?.message}`);
    this.checks.length = 0;
    this.head = 0;
    if (this.failures.length > 0) {
      const shown = this.failures.slice(0, 10).join('; ');
      throw new Error(`${what}: ${this.failures.length} command(s) failed on the node: ${shown}`);
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}

/**
 * A raw RESP client for tests: sends commands and returns each reply's exact bytes, so the
 * proxy's answers can be compared byte for byte with the node's.
 */
import net from 'node:net';
import { encodeArgs } from '../../src/resp/request-parser';
import { ReplyFramer } from '../../src/resp/reply-framer';

export class RespClient {
  private readonly framer = new ReplyFramer();
  private readonly replies: Buffer[] = [];
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk) => {
      this.framer.feed(chunk);
      for (let r = this.framer.next(); r; r = this.framer.next()) this.replies.push(Buffer.from(r.raw));
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, host, () => resolve(new RespClient(s)));
      s.once('error', reject);
    });
  }

  send(raw: Buffer | string): void {
    this.socket.write(raw);
  }

  /** The next reply's bytes; rejects when the connection closes first or after `timeoutMs`. */
  async read(timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > deadline) throw new Error('no reply in time');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    return this.replies.shift()!;
  }

  async call(...args: (string | Buffer)[]): Promise<Buffer> {
    this.send(encodeArgs(args));
    return this.read();
  }

  /** `call` returning the reply as text (CRLF kept). */
  async text(...args: (string | Buffer)[]): Promise<string> {
    return (await this.call(...args)).toString();
  }

  /** Resolves when the server closes the connection. */
  async waitClosed(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('connection still open');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

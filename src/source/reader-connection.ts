/**
 * A pipelined RESP connection for the snapshot key reader: a batch of commands is encoded into
 * one buffer and written with one socket write, and its replies are decoded (./resp/reply-reader)
 * and handed back together, one promise per batch instead of one per command.
 *
 * It never reconnects: a node that goes away fails every waiting batch and later calls
 * (BACKEND_CONNECTION_LOST), so the build fails instead of stalling. A node that stops answering
 * for COMMAND_TIMEOUT_MS while replies are owed fails the same way. Because it does not
 * reconnect, it must not be timed out by the node while it waits (the priority reader waits for
 * client writes, a scanner for the snapshot writer): it pings when idle (../backend/keep-alive.ts).
 */
import net from 'node:net';
import { IDLE_TIMEOUT_QUERY, KeepAlive, idleTimeoutSeconds, keepAliveIntervalMs } from '../backend/keep-alive';
import { SyncProxyError, classifySystemError } from '../errors';
import { NodeErrorReply, Reply, ReplyReader, bulkItems } from '../resp/reply-reader';
import { CommandEncoder } from '../resp/command-encoder';

export interface NodeAddress {
  host: string;
  port: number;
  password?: string;
  /** PING interval on an idle connection; 0 or absent: a third of the node's `timeout`. */
  keepAliveMs?: number;
}

export type Command = ReadonlyArray<Buffer | string>;

/** The replies of one batch, in order, and how many bytes they took. */
export type BatchReplies = Reply[] & { bytes?: number };

const COMMAND_TIMEOUT_MS = 60_000;
const PING: Command = ['PING'];

interface PendingBatch {
  replies: BatchReplies;
  expected: number;
  /** `reader.consumed` before the batch's first reply. */
  consumedBefore: number;
  resolve: (replies: BatchReplies) => void;
  reject: (err: SyncProxyError) => void;
}

export class ReaderConnection {
  private readonly reader = new ReplyReader();
  private readonly encoder = new CommandEncoder();
  private readonly batches: PendingBatch[] = [];
  private batchHead = 0;
  private failure?: SyncProxyError;
  private lastReplyAt = Date.now();
  private timer?: NodeJS.Timeout;
  /** Its PING is a batch of one whose reply nobody reads. */
  private readonly keepAlive = new KeepAlive(() => {
    // Never inside a batch a caller is still encoding (commands() then sendEncoded()).
    if (this.failure || this.encoder.length > 0) return;
    this.encoder.command(PING);
    this.sendEncoded(1).catch(() => undefined);
  });

  private constructor(private readonly socket: net.Socket, private readonly what: string) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new SyncProxyError('BACKEND_CONNECTION_LOST', `${what}: ${err.message}`, { cause: err })));
    socket.on('close', () => this.fail(new SyncProxyError('BACKEND_CONNECTION_LOST', `${what}: connection closed`)));
  }

  /** Connects, authenticates and selects `db`. */
  static async connect(node: NodeAddress, db: number): Promise<ReaderConnection> {
    const what = `snapshot reader connection to ${node.host}:${node.port}`;
    const socket = net.connect({ host: node.host, port: node.port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', (err) => reject(new SyncProxyError(classifySystemError(err) === 'MASTER_UNREACHABLE' ? 'BACKEND_UNAVAILABLE' : 'BACKEND_CONNECTION_LOST', `snapshot reader cannot connect to the node: ${err.message}`, { cause: err })));
    }).catch((err) => {
      socket.destroy();
      throw err;
    });
    socket.removeAllListeners('error');
    socket.setNoDelay(true);
    const conn = new ReaderConnection(socket, what);
    try {
      const setup: Command[] = [];
      if (node.password !== undefined) setup.push(['AUTH', node.password]);
      if (db !== 0) setup.push(['SELECT', String(db)]);
      const configured = node.keepAliveMs !== undefined && node.keepAliveMs > 0;
      // The node's idle timeout rides in the setup batch (no round trip of its own).
      if (!configured) setup.push(IDLE_TIMEOUT_QUERY);
      const replies = setup.length > 0 ? await conn.batch(setup) : [];
      for (let i = 0; i < setup.length - (configured ? 0 : 1); i++) expectNoError(replies[i], setup[i][0] === 'AUTH' ? 'AUTH' : `SELECT ${db}`);
      conn.keepAlive.start(keepAliveIntervalMs(node.keepAliveMs, configured ? undefined : idleTimeoutSeconds(bulkItems(replies[replies.length - 1]))));
    } catch (err) {
      conn.close();
      throw err;
    }
    return conn;
  }

  /** Sends `commands` in one write; resolves with their replies in order (error replies included as values). */
  batch(commands: readonly Command[]): Promise<Reply[]> {
    if (this.failure) return Promise.reject(this.failure);
    for (const c of commands) this.encoder.command(c);
    return this.sendEncoded(commands.length);
  }

  /** Like `batch` for commands already written into `encoder()` (`count` of them). */
  sendEncoded(count: number): Promise<BatchReplies> {
    if (this.failure) return Promise.reject(this.failure);
    // A batch owed no reply would swallow the next batch's first reply.
    if (count === 0) {
      if (this.encoder.length > 0) return Promise.reject(new SyncProxyError('INTERNAL', `${this.what}: encoded commands without a count`));
      return Promise.resolve([]);
    }
    const data = this.encoder.take();
    return new Promise<BatchReplies>((resolve, reject) => {
      if (this.batchHead >= this.batches.length) this.lastReplyAt = Date.now();
      this.batches.push({ replies: [], expected: count, consumedBefore: -1, resolve, reject });
      this.socket.write(data);
      this.keepAlive.wrote();
      this.armTimer();
    });
  }

  /** The encoder of the next `sendEncoded` (to build a batch without intermediate arrays). */
  commands(): CommandEncoder {
    return this.encoder;
  }

  async call(command: Command): Promise<Reply> {
    return (await this.batch([command]))[0];
  }

  close(): void {
    this.fail(new SyncProxyError('BACKEND_CONNECTION_LOST', `${this.what}: closed by the snapshot builder`));
  }

  private onData(chunk: Buffer): void {
    this.lastReplyAt = Date.now();
    this.reader.feed(chunk);
    try {
      let consumedBefore = this.reader.consumed;
      for (let reply = this.reader.next(); reply !== undefined; reply = this.reader.next()) {
        const batch = this.batches[this.batchHead];
        if (!batch) throw new SyncProxyError('MALFORMED_RESPONSE', `${this.what}: a reply without a command`);
        if (batch.consumedBefore < 0) batch.consumedBefore = consumedBefore;
        batch.replies.push(reply);
        consumedBefore = this.reader.consumed;
        if (batch.replies.length === batch.expected) {
          batch.replies.bytes = consumedBefore - batch.consumedBefore;
          this.batches[this.batchHead++] = undefined as unknown as PendingBatch;
          batch.resolve(batch.replies);
        }
      }
    } catch (err) {
      this.fail(err instanceof SyncProxyError ? err : new SyncProxyError('INTERNAL', String(err), { cause: err }));
      return;
    }
    if (this.batchHead > 1024 && this.batchHead * 2 > this.batches.length) {
      this.batches.splice(0, this.batchHead);
      this.batchHead = 0;
    }
  }

  private armTimer(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.failure || this.batchHead >= this.batches.length) return;
      if (Date.now() - this.lastReplyAt >= COMMAND_TIMEOUT_MS) {
        this.fail(new SyncProxyError('BACKEND_CONNECTION_LOST', `${this.what}: no reply for ${COMMAND_TIMEOUT_MS} ms`));
      } else this.armTimer();
    }, COMMAND_TIMEOUT_MS / 4);
  }

  private fail(err: SyncProxyError): void {
    if (this.failure) return;
    this.failure = err;
    this.keepAlive.stop();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.socket.destroy();
    for (let i = this.batchHead; i < this.batches.length; i++) this.batches[i]?.reject(err);
    this.batches.length = 0;
    this.batchHead = 0;
  }
}

/** A node reply of a shape the reader did not expect. */
export function malformedReply(what: string): SyncProxyError {
  return new SyncProxyError('MALFORMED_RESPONSE', `${what} answered an unexpected reply shape`);
}

/** Throws BACKEND_ERROR_REPLY for an error reply. */
export function expectNoError(reply: Reply, what: string): void {
  if (reply instanceof NodeErrorReply) throw new SyncProxyError('BACKEND_ERROR_REPLY', `${what} failed on the node: ${reply.message}`);
}

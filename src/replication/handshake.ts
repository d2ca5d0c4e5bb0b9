/**
 * The replica's handshake on the master PROXY's RESP port: AUTH (masterauth) when configured,
 * then `SYNCPROXY HELLO`, which tells us the master's sync port, protocol version, run id and
 * role. A raw socket keeps every reply visible: a bare redis-server/Pika answers HELLO with an
 * error, which must become a clear fatal NOT_A_SYNC_PROXY rather than a retry loop.
 */
import net from 'node:net';
import { SyncProxyError, classifySystemError } from '../errors';
import { decodeReply, Decoded } from '../resp/decode';
import { ReplyFramer } from '../resp/reply-framer';
import { encodeArgs } from '../resp/request-parser';
import { SYNC_PROTOCOL_VERSION } from '../source/types';

export interface HandshakeOptions {
  host: string;
  port: number;
  password?: string;
  /** This proxy's run id: a master answering with it is ourselves. */
  ownRunId: string;
  timeoutMs: number;
  signal?: AbortSignal;
}

export interface MasterHello {
  name: string;
  version: string;
  protocol: number;
  syncPort: number;
  runId: string;
  role: string;
  /** Where the master's sync service listens: the master host and its sync_port. */
  syncHost: string;
}

export async function handshake(options: HandshakeOptions): Promise<MasterHello> {
  const conn = await RespExchange.connect(options.host, options.port, options.timeoutMs, options.signal);
  try {
    if (options.password !== undefined) {
      const auth = await conn.call(['AUTH', options.password]);
      if (auth instanceof Error && isDenied(auth.message)) throw protectedMode(options, auth.message);
      if (auth instanceof Error) throw new SyncProxyError('AUTH_FAILED', `master ${options.host}:${options.port} refused AUTH: ${auth.message}`);
    }
    const reply = await conn.call(['SYNCPROXY', 'HELLO']);
    if (reply instanceof Error) {
      if (isDenied(reply.message)) throw protectedMode(options, reply.message);
      if (/^(NOAUTH|WRONGPASS)/i.test(reply.message)) {
        throw new SyncProxyError('AUTH_FAILED', `master ${options.host}:${options.port} requires a password (set --masterauth): ${reply.message}`);
      }
      throw notASyncProxy(options, `it answered SYNCPROXY HELLO with "${reply.message}"`);
    }
    const hello = parseHello(reply, options);
    if (hello.protocol !== SYNC_PROTOCOL_VERSION) {
      throw new SyncProxyError('PROTOCOL_VERSION_MISMATCH', `master speaks sync protocol ${hello.protocol}, this proxy speaks ${SYNC_PROTOCOL_VERSION}`);
    }
    if (hello.runId === options.ownRunId) {
      throw new SyncProxyError('SELF_REPLICATION', `master ${options.host}:${options.port} is this proxy itself (run id ${hello.runId})`);
    }
    if (hello.role !== 'master') {
      throw new SyncProxyError('NOT_A_MASTER', `master ${options.host}:${options.port} is a ${hello.role}, not serving as a master`);
    }
    return hello;
  } finally {
    conn.close();
  }
}

/** A proxy (or Redis) in protected mode answers every connection from a non-loopback peer `-DENIED ...`. */
function isDenied(message: string): boolean {
  return /^DENIED\b/.test(message);
}

function protectedMode(options: { host: string; port: number }, message: string): SyncProxyError {
  return new SyncProxyError('PROTECTED_MODE', `master ${options.host}:${options.port} refused this replica: ${message.replace(/^DENIED\s*/, '')}`);
}

function notASyncProxy(options: HandshakeOptions, why: string): SyncProxyError {
  return new SyncProxyError(
    'NOT_A_SYNC_PROXY',
    `${options.host}:${options.port} is not a pika-sync-proxy (${why}); the master must be a pika-sync-proxy in front of the node, not a bare Redis/Pika node`,
  );
}

/** Validates the flat HELLO array; anything unexpected from the peer is refused, never guessed. */
export function parseHello(reply: Decoded, options: HandshakeOptions): MasterHello {
  if (!Array.isArray(reply) || reply.length % 2 !== 0) throw notASyncProxy(options, 'SYNCPROXY HELLO did not answer a flat field/value array');
  const fields = new Map<string, Decoded>();
  for (let i = 0; i < reply.length; i += 2) {
    const key = reply[i];
    if (!Buffer.isBuffer(key)) throw notASyncProxy(options, 'SYNCPROXY HELLO field names are not strings');
    fields.set(key.toString('utf8'), reply[i + 1]);
  }
  const text = (name: string): string => {
    const v = fields.get(name);
    if (Buffer.isBuffer(v)) return v.toString('utf8');
    if (typeof v === 'number') return String(v);
    throw new SyncProxyError('MALFORMED_RESPONSE', `SYNCPROXY HELLO from ${options.host}:${options.port} lacks field "${name}"`);
  };
  const int = (name: string): number => {
    const n = Number(text(name));
    if (!Number.isSafeInteger(n)) throw new SyncProxyError('MALFORMED_RESPONSE', `SYNCPROXY HELLO field "${name}" is not an integer`);
    return n;
  };
  if (text('name') !== 'pika-sync-proxy') throw notASyncProxy(options, `HELLO names it "${text('name')}"`);
  const syncPort = int('sync_port');
  if (syncPort < 1 || syncPort > 65535) throw new SyncProxyError('MALFORMED_RESPONSE', `SYNCPROXY HELLO sync_port ${syncPort} is not a port`);
  return {
    name: text('name'),
    version: text('version'),
    protocol: int('protocol'),
    syncPort,
    runId: text('run_id'),
    role: text('role'),
    syncHost: options.host,
  };
}

/** One request at a time over a socket, each reply decoded; errors mapped to catalogue codes. */
class RespExchange {
  private readonly framer = new ReplyFramer();
  private waiter?: { resolve: (v: Decoded) => void; reject: (e: unknown) => void };
  private failure?: SyncProxyError;

  private constructor(private readonly socket: net.Socket, private readonly what: string, private readonly timeoutMs: number, private readonly address: { host: string; port: number }) {
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new SyncProxyError(classifySystemError(err) ?? 'MASTER_CONNECTION_LOST', `${what}: ${err.message}`, { cause: err })));
    socket.on('close', () => this.fail(new SyncProxyError('MASTER_CONNECTION_LOST', `${what}: connection closed during the handshake`)));
  }

  static connect(host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<RespExchange> {
    const what = `master ${host}:${port}`;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => done(new SyncProxyError('MASTER_TIMEOUT', `${what}: no connection after ${timeoutMs} ms`)), timeoutMs);
      const onAbort = (): void => done(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = (err?: unknown): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.removeAllListeners('connect').removeAllListeners('error');
        if (err !== undefined) {
          socket.destroy();
          reject(err);
        } else {
          const exchange = new RespExchange(socket, what, timeoutMs, { host, port });
          // Removed with the socket: the signal outlives this handshake (one per replication run).
          const onAbortExchange = (): void => exchange.fail(signal?.reason);
          signal?.addEventListener('abort', onAbortExchange, { once: true });
          socket.once('close', () => signal?.removeEventListener('abort', onAbortExchange));
          resolve(exchange);
        }
      };
      socket.once('connect', () => done());
      socket.once('error', (err) => done(new SyncProxyError(classifySystemError(err) ?? 'MASTER_UNREACHABLE', `${what}: ${err.message}`, { cause: err })));
    });
  }

  call(args: string[]): Promise<Decoded> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new SyncProxyError('MASTER_TIMEOUT', `${this.what}: no reply to ${args[0]} after ${this.timeoutMs} ms`)), this.timeoutMs);
      this.waiter = {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.socket.write(encodeArgs(args));
    });
  }

  private onData(chunk: Buffer): void {
    this.framer.feed(chunk);
    try {
      const reply = this.framer.next();
      if (!reply) return;
      const waiter = this.waiter;
      this.waiter = undefined;
      if (!waiter) {
        // Protected mode answers at accept time, possibly before the first request went out.
        const early = decodeReply(Buffer.from(reply.raw));
        if (early instanceof Error && isDenied(early.message)) return this.fail(protectedMode(this.address, early.message));
        return this.fail(new SyncProxyError('MALFORMED_RESPONSE', `${this.what}: reply without a request`));
      }
      waiter.resolve(decodeReply(Buffer.from(reply.raw)));
    } catch (err) {
      this.fail(new SyncProxyError('MALFORMED_RESPONSE', `${this.what}: ${(err as Error).message}`, { cause: err }));
    }
  }

  fail(err: unknown): void {
    if (this.failure) return;
    this.failure = err instanceof SyncProxyError ? err : new SyncProxyError('SYNC_ABORTED', String(err), { cause: err });
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(err);
    this.socket.destroy();
  }

  close(): void {
    this.failure ??= new SyncProxyError('MASTER_CONNECTION_LOST', `${this.what}: closed`);
    this.socket.destroy();
  }
}

/**
 * Whether the node refuses commands for memory: a Redis (or Valkey) node with `maxmemory` set.
 *
 * Redis refuses every command queued in MULTI while it is over maxmemory (-OOM at queue time, and
 * the EXEC then aborts), yet runs an EXEC of reads only (server.c processCommand). The proxy
 * queues transactions itself and sends them at EXEC, so while the node has a limit it asks the
 * node at queue time (Transaction, with MULTI/PING/DISCARD: PING inside MULTI meets the same
 * check and can never change data), and sends a transaction of reads only without MULTI. Without
 * a limit (the default, and Pika, whose maxmemory is a cache size it never refuses a command for)
 * nothing of this costs anything.
 *
 * The limit is read at link-up (`CONFIG GET maxmemory`) and follows every CONFIG SET maxmemory
 * sent through the proxy (taken when the node answered +OK, before that client sees it).
 */
import * as encode from '../resp/encode';
import type { Request } from '../resp/request';
import type { ClientSession } from './client-session';
import { errorReply } from './refusals';

const ENFORCING = new Set(['redis', 'valkey']);

export class MemoryLimit {
  private bytes = 0;

  constructor(private readonly product: () => string | undefined) {}

  get limited(): boolean {
    return this.bytes > 0 && ENFORCING.has(this.product() ?? '');
  }

  /** A `maxmemory` value as Redis takes it ("0", "100mb", "1gb"…): only zero or not matters. */
  set(value: string): void {
    const n = Number.parseFloat(value);
    this.bytes = Number.isFinite(n) && n > 0 ? n : 0;
  }
}

/** The value of `maxmemory` in a CONFIG SET (any case, among other pairs), or null. */
export function maxmemoryOf(args: readonly Buffer[]): string | null {
  if (args[1]?.toString('latin1').toLowerCase() !== 'set') return null;
  for (let i = 2; i + 1 < args.length; i += 2) {
    if (args[i].toString('latin1').toLowerCase() === 'maxmemory') return args[i + 1].toString('latin1');
  }
  return null;
}

/** CONFIG SET … maxmemory …: forwarded; the limit is taken once the node accepted it. */
export function runConfigSetMaxmemory(s: ClientSession, req: Request, value: string): void {
  const slot = s.slot();
  s.ctx.path.send(s.db, req.raw, (reply, err) => {
    if (reply?.type === 43) s.ctx.memoryLimit.set(value); // '+OK'
    s.fill(slot, reply ? Buffer.from(reply.raw) : errorReply(err));
  }, s.lanes);
}

export const QUEUE_PROBE = [['MULTI'], ['PING'], ['DISCARD']].map((args) => ({ args: args.map((a) => Buffer.from(a)), raw: encode.encodeCommand(args), write: false }));

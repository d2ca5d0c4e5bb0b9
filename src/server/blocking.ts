/**
 * Blocking pops (BLPOP, BRPOP, BLMOVE, BZPOPMIN, BLMPOP, XREADGROUP BLOCK, ...) on the ordered
 * path. A blocked command would stall the shared node connection, and a pop served on another
 * connection could not be placed in the write log's order. So the proxy runs the non-blocking
 * form (LPOP, LMOVE, ZPOPMIN, ...) on the ordered path and, when nothing is there, parks the
 * client until a write to one of its keys was applied or the timeout passes (pure planning here;
 * the session runs the plan).
 *
 * As on Redis 7.0 (blocked.c serveClientsBlockedOnKey): a key of the wrong type when the command
 * runs answers -WRONGTYPE at once, but a wake-up that finds a key missing or of the wrong type
 * leaves the client blocked (MULTI; LPUSH k a; DEL k; SET k x; EXEC serves nobody).
 */
import * as encode from '../resp/encode';
import type { WriteScope } from '../source/types';

export interface BlockingAttempt {
  args: Buffer[];
  keys: Buffer[];
  /** Turns the non-blocking reply into the blocking command's reply; null = nothing popped. */
  convert(raw: Buffer): Buffer | null;
  /**
   * Moves only (LMOVE, RPOPLPUSH): the source key, whose TYPE tells after a wake-up whether a
   * -WRONGTYPE came from the source (keep waiting) or from the destination (the client's answer,
   * as Redis gives it when it serves the client).
   */
  source?: Buffer;
}

export interface BlockingPlan {
  keys: Buffer[];
  attempts: BlockingAttempt[];
  /** 0 = wait forever. */
  timeoutMs: number;
  timeoutReply: Buffer;
}

const b = (s: string): Buffer => Buffer.from(s);
const NIL_REPLIES = new Set(['$-1\r\n', '*-1\r\n', '*0\r\n', '_\r\n']);
const isNil = (raw: Buffer): boolean => raw.length <= 5 && NIL_REPLIES.has(raw.toString('latin1'));
const asIs = (raw: Buffer): Buffer | null => (isNil(raw) ? null : raw);

/** A wrong-type error: Redis's and Pika's `-WRONGTYPE …`, or Pika's `-ERR Invalid argument: WRONGTYPE, …` (ZPOPMIN). */
export function isWrongType(raw: Buffer): boolean {
  if (raw[0] !== 45) return false;
  const head = raw.toString('latin1', 0, Math.min(raw.length, 40));
  return head.startsWith('-WRONGTYPE') || head.startsWith('-ERR Invalid argument: WRONGTYPE');
}

function parseTimeout(arg: Buffer, unit: 'seconds' | 'ms'): number | string {
  const n = Number(arg.toString());
  if (!Number.isFinite(n) || arg.length === 0) return 'ERR timeout is not a float or out of range';
  if (n < 0) return 'ERR timeout is negative';
  return unit === 'seconds' ? Math.round(n * 1000) : Math.round(n);
}

/** Prefixes a popped reply with the key it came from: `*2 key value` / `*3 key member score`. */
function withKey(key: Buffer): (raw: Buffer) => Buffer | null {
  return (raw) => {
    if (isNil(raw)) return null;
    if (raw[0] === 42) {
      // ZPOPMIN's array: replace its header "*2" with "*3" and put the key first.
      const headerEnd = raw.indexOf('\r\n') + 2;
      const count = Number(raw.toString('latin1', 1, headerEnd - 2));
      return Buffer.concat([b(`*${count + 1}\r\n`), encode.bulk(key), raw.subarray(headerEnd)]);
    }
    return Buffer.concat([b('*2\r\n'), encode.bulk(key), raw]);
  };
}

/** The plan for a blocking command, or an error text for bad arguments. */
export function planBlocking(name: string, args: Buffer[]): BlockingPlan | string {
  const last = args[args.length - 1];
  switch (name) {
    case 'blpop':
    case 'brpop':
    case 'bzpopmin':
    case 'bzpopmax': {
      const timeoutMs = parseTimeout(last, 'seconds');
      if (typeof timeoutMs === 'string') return timeoutMs;
      const keys = args.slice(1, -1);
      const op = { blpop: 'LPOP', brpop: 'RPOP', bzpopmin: 'ZPOPMIN', bzpopmax: 'ZPOPMAX' }[name];
      return { keys, timeoutMs, timeoutReply: encode.NULL_ARRAY, attempts: keys.map((k) => ({ args: [b(op), k], keys: [k], convert: withKey(k) })) };
    }
    case 'brpoplpush':
    case 'blmove': {
      const timeoutMs = parseTimeout(last, 'seconds');
      if (typeof timeoutMs === 'string') return timeoutMs;
      const rest = args.slice(1, -1);
      const op = name === 'brpoplpush' ? 'RPOPLPUSH' : 'LMOVE';
      return { keys: [rest[0]], timeoutMs, timeoutReply: encode.NULL_ARRAY, attempts: [{ args: [b(op), ...rest], keys: rest.slice(0, 2), convert: asIs, source: rest[0] }] };
    }
    case 'blmpop':
    case 'bzmpop': {
      const timeoutMs = parseTimeout(args[1], 'seconds');
      if (typeof timeoutMs === 'string') return timeoutMs;
      const n = Number(args[2].toString());
      if (!Number.isInteger(n) || n <= 0 || 3 + n > args.length) return 'ERR numkeys should be greater than 0';
      const keys = args.slice(3, 3 + n);
      const op = name === 'blmpop' ? 'LMPOP' : 'ZMPOP';
      // One key per attempt (`LMPOP 1 key …`), as LMPOP itself tries them in order: after a
      // wake-up a key of the wrong type is skipped, not the whole command failed.
      const rest = args.slice(3 + n);
      const attempts = keys.map((k) => ({ args: [b(op), b('1'), k, ...rest], keys: [k], convert: asIs }));
      return { keys, timeoutMs, timeoutReply: encode.NULL_ARRAY, attempts };
    }
    case 'xreadgroup': {
      const at = args.findIndex((a, i) => i > 0 && a.toString().toLowerCase() === 'block');
      const timeoutMs = parseTimeout(args[at + 1] ?? b(''), 'ms');
      if (typeof timeoutMs === 'string') return 'ERR timeout is not an integer or out of range';
      const plain = [...args.slice(0, at), ...args.slice(at + 2)];
      const s = plain.findIndex((a, i) => i > 0 && a.toString().toLowerCase() === 'streams');
      const streams = s < 0 ? [] : plain.slice(s + 1, s + 1 + (plain.length - s - 1) / 2);
      return { keys: streams, timeoutMs, timeoutReply: encode.NULL_ARRAY, attempts: [{ args: plain, keys: streams, convert: asIs }] };
    }
    default:
      return `ERR blocking command '${name}' is not supported through pika-sync-proxy`;
  }
}

/**
 * The `origin` of a pop attempt on the ordered path. Its write wakes nobody there: an attempt that
 * popped nothing changed nothing (two clients blocked on one empty key would wake each other
 * forever), and the runner wakes the keys of one that popped (`applied(scope, owner)`).
 */
export class PopAttempt {
  constructor(readonly owner: object) {}
}

/** Clients parked on keys, woken when a write to one of them was applied. */
/**
 * How long a writer's reply waits at most for the clients its write woke (a bound, not a wait:
 * a woken client's attempt is one round trip; this only keeps a lost wake-up from holding it).
 */
const SERVE_WAIT_MS = 2000;

export class BlockedClients {
  private readonly waiters = new Set<Waiter>();
  /** Woken clients whose attempt has not finished (nor woken others that have not). */
  private serving = 0;
  private servedWaiters: (() => void)[] = [];

  /** Some client is parked (writes must report what they touch). */
  get active(): boolean {
    return this.waiters.size > 0;
  }

  /** Clients in a blocking pop, from its first try to its answer (INFO proxy `blocked_clients`). */
  get count(): number {
    return this.waiters.size;
  }

  register(owner: object, db: number, keys: Buffer[]): Waiter {
    const w = new Waiter(owner, db, new Set(keys.map((k) => k.toString('latin1'))), this);
    this.waiters.add(w);
    return w;
  }

  unregister(w: Waiter): void {
    this.waiters.delete(w);
    w.wake();
    w.settle();
    w.retired = true;
  }

  /** A woken client started serving (Waiter.wake). */
  startedServing(): void {
    this.serving++;
  }

  /** A woken client's attempt finished (Waiter.settle). */
  finishedServing(): void {
    if (--this.serving > 0) return;
    const waiters = this.servedWaiters;
    this.servedWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /**
   * Resolves once every woken client has been served (or gone back to waiting), including those
   * their pops woke in turn; undefined when none is being served. Redis serves blocked clients
   * before it runs the next command, so a writer that reads right after its push sees what they
   * did (`Circular BRPOPLPUSH`): its reply waits for this.
   */
  whenServed(): Promise<void> | undefined {
    if (this.serving === 0) return undefined;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, SERVE_WAIT_MS);
      this.servedWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Whether `owner` is in a blocking pop (CLIENT LIST flags=b). */
  isBlocked(owner: object): boolean {
    for (const w of this.waiters) if (w.owner === owner) return true;
    return false;
  }

  /** CLIENT UNBLOCK: ends `owner`'s blocking pop as a timeout or an error; false when it has none. */
  unblock(owner: object, how: 'timeout' | 'error'): boolean {
    for (const w of this.waiters) {
      if (w.owner !== owner) continue;
      w.unblocked = how;
      w.wake();
      return true;
    }
    return false;
  }

  /** A write was applied: wakes the clients blocked on what it touched; see `whenServed`. */
  applied(scope: WriteScope, origin?: object): Promise<void> | undefined {
    if (origin instanceof PopAttempt || this.waiters.size === 0) return undefined;
    for (const w of this.waiters) {
      if (w.owner === origin) continue;
      if (scope.kind === 'all' || (scope.kind === 'db' && scope.db === w.db)) w.wake();
      else if (scope.kind === 'keys' && scope.db === w.db && scope.keys.some((k) => w.keys.has(k.toString('latin1')))) w.wake();
    }
    return this.whenServed();
  }
}

export class Waiter {
  touched = false;
  /** Set by CLIENT UNBLOCK: the pop ends with its timeout reply or an -UNBLOCKED error. */
  unblocked: 'timeout' | 'error' | undefined;
  private resolve?: () => void;
  /** Woken and not yet through its next attempt (counted in BlockedClients.serving). */
  private serving = false;
  /** Its pop has ended: a late wake-up (its client closing) is no one to serve. */
  retired = false;

  constructor(readonly owner: object, readonly db: number, readonly keys: Set<string>, private readonly registry: BlockedClients) {}

  wake(): void {
    this.touched = true;
    if (!this.serving && !this.retired) {
      this.serving = true;
      this.registry.startedServing();
    }
    this.resolve?.();
  }

  /** Its attempt after a wake-up is done (it answered, or waits again). */
  settle(): void {
    if (!this.serving) return;
    this.serving = false;
    this.registry.finishedServing();
  }

  /** Resolves true when woken, false after `ms` (Infinity = never times out). */
  wait(ms: number): Promise<boolean> {
    if (this.touched) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(() => resolve(false), Math.max(0, ms)) : undefined;
      this.resolve = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
  }
}

/**
 * The one command table. Every client command is classified here; forwarding, read gating on
 * replicas, the write log and snapshot copy-on-write all hang on this classification.
 *
 * Arity follows Redis: n > 0 means exactly n arguments (name included), n < 0 means at least -n.
 * Keys follow Redis's (first, last, step) spec; `last` < 0 counts from the end. Commands whose
 * keys cannot be described that way have a `keys` function; a write whose keys are unknown is
 * treated as touching every database, which is always safe for a running snapshot build.
 */

export type Category =
  | 'read' // reads data: gated on a replica until the sync is confirmed
  | 'write' // changes data: logged on a master, refused on a replica
  | 'admin' // forwarded, never gated (CONFIG, DBSIZE is a read, see below)
  | 'connection' // handled by the proxy per client (AUTH, SELECT, PING, CLIENT, ...)
  | 'replication' // handled by the proxy (SLAVEOF, ROLE, SYNCPROXY, INFO)
  | 'blocking' // a blocking write, emulated on the ordered path (BLPOP, ...)
  | 'pubsub'
  | 'transaction'
  | 'refused'; // cannot be logged or would break the shared connection

/** Every category, in a fixed order: `CommandSpec.categoryIndex` (the metrics' `class` label). */
export const CATEGORIES: readonly Category[] = ['read', 'write', 'admin', 'connection', 'replication', 'blocking', 'pubsub', 'transaction', 'refused'];

export interface CommandSpec {
  name: string;
  arity: number;
  category: Category;
  /** Position of `category` in CATEGORIES (a number the data path can store per request). */
  categoryIndex: number;
  first: number;
  last: number;
  step: number;
  /** Custom key extraction; `null` result = unknown keys. */
  keys?: (args: readonly Buffer[]) => Buffer[] | null;
  /** Writes that empty a whole db or all dbs. */
  scope?: 'db' | 'all';
  /**
   * A read whose cost grows with what it reads (a whole collection, a scan, a set operation): it
   * takes a lane of its own kind, so quick reads never queue behind it (ordered-path.ts).
   */
  bulky?: boolean;
}

type Row = [arity: number, first?: number, last?: number, step?: number];

const READS: Record<string, Row> = {
  get: [2, 1, 1, 1], mget: [-2, 1, -1, 1], strlen: [2, 1, 1, 1], getrange: [4, 1, 1, 1], substr: [4, 1, 1, 1],
  exists: [-2, 1, -1, 1], type: [2, 1, 1, 1], ttl: [2, 1, 1, 1], pttl: [2, 1, 1, 1], expiretime: [2, 1, 1, 1],
  pexpiretime: [2, 1, 1, 1], getbit: [3, 1, 1, 1], bitcount: [-2, 1, 1, 1], bitpos: [-3, 1, 1, 1],
  hget: [3, 1, 1, 1], hmget: [-3, 1, 1, 1], hgetall: [2, 1, 1, 1], hkeys: [2, 1, 1, 1], hvals: [2, 1, 1, 1],
  hlen: [2, 1, 1, 1], hexists: [3, 1, 1, 1], hstrlen: [3, 1, 1, 1], hscan: [-3, 1, 1, 1], hrandfield: [-2, 1, 1, 1],
  lrange: [4, 1, 1, 1], llen: [2, 1, 1, 1], lindex: [3, 1, 1, 1], lpos: [-3, 1, 1, 1],
  smembers: [2, 1, 1, 1], sismember: [3, 1, 1, 1], smismember: [-3, 1, 1, 1], scard: [2, 1, 1, 1],
  srandmember: [-2, 1, 1, 1], sscan: [-3, 1, 1, 1], sinter: [-2, 1, -1, 1], sunion: [-2, 1, -1, 1], sdiff: [-2, 1, -1, 1],
  sintercard: [-3], zrange: [-4, 1, 1, 1], zrevrange: [-4, 1, 1, 1], zrangebyscore: [-4, 1, 1, 1],
  zrevrangebyscore: [-4, 1, 1, 1], zrangebylex: [-4, 1, 1, 1], zrevrangebylex: [-4, 1, 1, 1], zscore: [3, 1, 1, 1],
  zmscore: [-3, 1, 1, 1], zrank: [-3, 1, 1, 1], zrevrank: [-3, 1, 1, 1], zcard: [2, 1, 1, 1], zcount: [4, 1, 1, 1],
  zlexcount: [4, 1, 1, 1], zscan: [-3, 1, 1, 1], zrandmember: [-2, 1, 1, 1], zunion: [-3], zinter: [-3], zdiff: [-3],
  zintercard: [-3], xrange: [-4, 1, 1, 1], xrevrange: [-4, 1, 1, 1], xlen: [2, 1, 1, 1], xinfo: [-2], xpending: [-3, 1, 1, 1],
  xread: [-4], pfcount: [-2, 1, -1, 1], geopos: [-2, 1, 1, 1], geodist: [-4, 1, 1, 1], geohash: [-2, 1, 1, 1],
  geosearch: [-7, 1, 1, 1], georadius_ro: [-6, 1, 1, 1], georadiusbymember_ro: [-5, 1, 1, 1], scan: [-2], keys: [2],
  randomkey: [1], dbsize: [1], lcs: [-3, 1, 2, 1], sort_ro: [-2, 1, 1, 1], object: [-2, 2, 2, 1], memory: [-2],
  dump: [2, 1, 1, 1], touch: [-2, 1, -1, 1], bitfield_ro: [-2, 1, 1, 1], pkscanrange: [-4], pkrscanrange: [-4],
  // Pika's own reads (Pika 4.0.1 src/pika_command.cc).
  pkhscanrange: [-4, 1, 1, 1], pkhrscanrange: [-4, 1, 1, 1], hscanx: [-3, 1, 1, 1], scanx: [-3], scandb: [-1],
  slotshashkey: [-1], slotsinfo: [-1], slotsscan: [-3], 'slotsmgrt-async-status': [1], pfdebug: [-3, 2, 2, 1],
  // Read-only scripts and functions: their keys are the numkeys keys they declare.
  eval_ro: [-3], evalsha_ro: [-3], fcall_ro: [-3],
};

/** Reads whose cost grows with the data they read (see CommandSpec.bulky). */
const BULKY_READS = [
  'lrange', 'hgetall', 'hkeys', 'hvals', 'hscan', 'smembers', 'sscan', 'sinter', 'sunion', 'sdiff', 'sintercard',
  'zrange', 'zrevrange', 'zrangebyscore', 'zrevrangebyscore', 'zrangebylex', 'zrevrangebylex', 'zscan', 'zunion',
  'zinter', 'zdiff', 'zintercard', 'xrange', 'xrevrange', 'scan', 'keys', 'sort_ro', 'lcs', 'georadius_ro',
  'georadiusbymember_ro', 'geosearch', 'pkscanrange', 'pkrscanrange', 'dump', 'bitcount', 'bitpos', 'lpos',
  'pkhscanrange', 'pkhrscanrange', 'hscanx', 'scanx', 'scandb', 'slotsscan',
];

const WRITES: Record<string, Row> = {
  set: [-3, 1, 1, 1], setnx: [3, 1, 1, 1], setex: [4, 1, 1, 1], psetex: [4, 1, 1, 1], mset: [-3, 1, -1, 2],
  msetnx: [-3, 1, -1, 2], getset: [3, 1, 1, 1], getdel: [2, 1, 1, 1], getex: [-2, 1, 1, 1], append: [3, 1, 1, 1],
  setrange: [4, 1, 1, 1], incr: [2, 1, 1, 1], decr: [2, 1, 1, 1], incrby: [3, 1, 1, 1], decrby: [3, 1, 1, 1],
  incrbyfloat: [3, 1, 1, 1], setbit: [4, 1, 1, 1], bitfield: [-2, 1, 1, 1], del: [-2, 1, -1, 1], unlink: [-2, 1, -1, 1],
  expire: [-3, 1, 1, 1], pexpire: [-3, 1, 1, 1], expireat: [-3, 1, 1, 1], pexpireat: [-3, 1, 1, 1], persist: [2, 1, 1, 1],
  rename: [3, 1, 2, 1], renamenx: [3, 1, 2, 1], hset: [-4, 1, 1, 1], hsetnx: [4, 1, 1, 1], hmset: [-4, 1, 1, 1],
  hdel: [-3, 1, 1, 1], hincrby: [4, 1, 1, 1], hincrbyfloat: [4, 1, 1, 1], lpush: [-3, 1, 1, 1], rpush: [-3, 1, 1, 1],
  lpushx: [-3, 1, 1, 1], rpushx: [-3, 1, 1, 1], lpop: [-2, 1, 1, 1], rpop: [-2, 1, 1, 1], lset: [4, 1, 1, 1],
  lrem: [4, 1, 1, 1], ltrim: [4, 1, 1, 1], linsert: [5, 1, 1, 1], rpoplpush: [3, 1, 2, 1], lmove: [5, 1, 2, 1],
  lmpop: [-4], sadd: [-3, 1, 1, 1], srem: [-3, 1, 1, 1], spop: [-2, 1, 1, 1], smove: [4, 1, 2, 1],
  sinterstore: [-3, 1, -1, 1], sunionstore: [-3, 1, -1, 1], sdiffstore: [-3, 1, -1, 1], zadd: [-4, 1, 1, 1],
  zincrby: [4, 1, 1, 1], zrem: [-3, 1, 1, 1], zremrangebyscore: [4, 1, 1, 1], zremrangebyrank: [4, 1, 1, 1],
  zremrangebylex: [4, 1, 1, 1], zpopmin: [-2, 1, 1, 1], zpopmax: [-2, 1, 1, 1], zmpop: [-4], zrangestore: [-5, 1, 2, 1],
  zunionstore: [-4], zinterstore: [-4], zdiffstore: [-4], xadd: [-5, 1, 1, 1], xdel: [-3, 1, 1, 1], xtrim: [-4, 1, 1, 1],
  xgroup: [-2, 2, 2, 1], xack: [-4, 1, 1, 1], xclaim: [-6, 1, 1, 1], xautoclaim: [-6, 1, 1, 1], xsetid: [-3, 1, 1, 1],
  xreadgroup: [-7], pfadd: [-2, 1, 1, 1], pfmerge: [-2, 1, -1, 1], geoadd: [-5, 1, 1, 1], georadius: [-6, 1, 1, 1],
  georadiusbymember: [-5, 1, 1, 1], geosearchstore: [-8, 1, 2, 1], bitop: [-4, 2, -1, 1], sort: [-2, 1, 1, 1],
  move: [3, 1, 1, 1], copy: [-3, 1, 2, 1], restore: [-4, 1, 1, 1], flushdb: [-1], flushall: [-1], swapdb: [3],
  // Pika's own compare-and-delete, logged as DEL when it deleted (log-rewrite.ts).
  delvx: [3, 1, 1, 1],
  // Logged as the after-images of their declared keys (src/server/scripting.ts).
  eval: [-3], evalsha: [-3], fcall: [-3],
};

const BLOCKING: Record<string, Row> = {
  blpop: [-3, 1, -2, 1], brpop: [-3, 1, -2, 1], brpoplpush: [4, 1, 2, 1], blmove: [6, 1, 2, 1],
  bzpopmin: [-3, 1, -2, 1], bzpopmax: [-3, 1, -2, 1], blmpop: [-5], bzmpop: [-5],
};

const CONNECTION: Record<string, number> = {
  auth: -2, ping: -1, echo: 2, quit: -1, select: 2, hello: -1, client: -2, reset: 1,
};
const REPLICATION: Record<string, number> = {
  slaveof: -3, replicaof: -3, role: 1, syncproxy: -2, info: -1, sync: -1, psync: -3, wait: 3, replconf: -1,
};
const TRANSACTION: Record<string, number> = { multi: 1, exec: 1, discard: 1, watch: -2, unwatch: 1 };
const PUBSUB: Record<string, number> = {
  subscribe: -2, psubscribe: -2, unsubscribe: -1, punsubscribe: -1, ssubscribe: -2, sunsubscribe: -1,
};
const ADMIN: Record<string, number> = {
  config: -2, command: -1, time: 1, slowlog: -2, latency: -2, lastsave: 1, publish: 3, pubsub: -2, spublish: 3,
  bgsave: -1, bgrewriteaof: 1, save: 1, lolwut: -1, compact: -1, debug: -2,
  // Pika's own administration: none changes data (Pika 4.0.1 src/pika_admin.cc).
  compactrange: -4, cache: -2, clearcache: 1, clearreplicationid: 1, purgelogsto: -2, delbackup: 1, disablewal: 2, diskrecovery: 2,
  // Their subcommands are judged one by one (scripting.ts): LOAD/FLUSH/DELETE/RESTORE are logged.
  function: -2, script: -2,
};
/** MONITOR would take over the shared connection; SHUTDOWN/MIGRATE act on the node behind clients' backs. (DEBUG is
 * admin: its subcommands are judged one by one, DEBUG_SUBCOMMANDS.) */
const REFUSED: Record<string, number> = {
  monitor: 1, shutdown: -1, migrate: -6, failover: -1, cluster: -2, readonly: 1, readwrite: 1,
  // Pika's: its replication of one db, padding of its binlog, and Codis slot migration, which
  // deletes keys here after copying them elsewhere. PKPATTERNMATCHDEL deletes keys its reply does
  // not name, so nothing exact could be logged; PKSETEXAT deletes the key on Pika 4.0.1.
  dbslaveof: -2, padding: 2, pkpatternmatchdel: -2, pksetexat: 4, slotsdel: -2, slotsmgrtone: 5, slotsmgrtslot: 5, slotsmgrttagone: 5,
  slotsmgrttagslot: 5, 'slotsmgrttagslot-async': 8, 'slotsmgrt-exec-wrapper': -3, 'slotsmgrt-async-cancel': 1,
  slotscleanup: -2, slotscleanupoff: -1, slotsreload: 1, slotsreloadoff: -1,
};

/**
 * What a DEBUG subcommand does to the node (Redis 7.0 src/debug.c, plus the names older and newer
 * Redis versions use). 'pass': changes no data, forwarded as sent (DEBUG SLEEP holds the one
 * ordered node connection, so every client waits, as every client of a Redis node would);
 * 'data': changes data outside the write log; 'reload': replaces the dataset with the same data
 * read back from disk (passed only where that holds); 'diverge': makes the node accept writes its
 * replicas would refuse; 'stop': stops or restarts the node. A subcommand not listed is refused.
 */
export type DebugEffect = 'pass' | 'data' | 'diverge' | 'stop' | 'reload';

export const DEBUG_SUBCOMMANDS: ReadonlyMap<string, DebugEffect> = new Map<string, DebugEffect>([
  // Inspect data or the server, or tune what does not change data.
  ...[
    'help', 'object', 'digest', 'digest-value', 'sdslen', 'listpack', 'listpack-entries', 'quicklist', 'ziplist',
    'htstats', 'htstats-key', 'structsize', 'jmap', 'mallctl', 'mallctl-str', 'log', 'error', 'leak', 'sleep',
    'set-active-expire', 'quicklist-packed-threshold', 'stringmatch-test', 'stringmatch-len', 'protocol',
    'change-repl-id', 'replybuffer', 'pause-cron', 'dict-resizing', 'client-eviction', 'aof-flush-sleep',
    'config-rewrite-force-all', 'set-disable-deny-scripts', 'script', 'drop-cluster-packet-filter', 'clusterlink',
  ].map((name): [string, DebugEffect] => [name, 'pass']),
  // POPULATE creates keys, REPLICATE feeds a command to the node's own replication stream and AOF.
  ...['populate', 'replicate'].map((name): [string, DebugEffect] => [name, 'data']),
  // RELOAD saves the dataset and loads it back, LOADAOF loads the AOF back: the same data, unless
  // RELOAD is told not to save or flush first, or no AOF is written (refusals.ts judges).
  ...['reload', 'loadaof'].map((name): [string, DebugEffect] => [name, 'reload']),
  // Skipping RESTORE's checksum lets the master take a payload every replica node refuses.
  ['set-skip-checksum-validation', 'diverge'],
  ...['segfault', 'panic', 'assert', 'oom', 'restart', 'crash-and-recover'].map((name): [string, DebugEffect] => [name, 'stop']),
]);

/** DEBUG_SUBCOMMANDS' verdict on `sub` (any case); undefined for a subcommand it does not know. */
export function debugEffect(sub: Buffer | undefined): DebugEffect | undefined {
  return sub ? DEBUG_SUBCOMMANDS.get(sub.toString('latin1').toLowerCase()) : undefined;
}

/** numkeys-style commands: `numkeys` at `at`, keys right after; `extra` = keys before it. */
function numkeysAt(at: number, extraBefore: number[] = []): (args: readonly Buffer[]) => Buffer[] | null {
  return (args) => {
    const n = Number(args[at]?.toString());
    if (!Number.isInteger(n) || n <= 0 || at + 1 + n > args.length) return null;
    return [...extraBefore.map((i) => args[i]), ...args.slice(at + 1, at + 1 + n)];
  };
}

/**
 * EVAL/EVALSHA/FCALL (and their _RO forms): `script numkeys key... arg...`. Unlike numkeysAt,
 * numkeys 0 is valid (a script that declares no keys); a malformed count is unknown (null).
 */
export function declaredKeys(args: readonly Buffer[]): Buffer[] | null {
  const n = Number(args[2]?.toString('latin1'));
  if (!Number.isInteger(n) || n < 0 || 3 + n > args.length) return null;
  return args.slice(3, 3 + n);
}

function streamsKeys(args: readonly Buffer[]): Buffer[] | null {
  const idx = args.findIndex((a, i) => i > 0 && a.toString().toLowerCase() === 'streams');
  if (idx < 0) return null;
  const rest = args.slice(idx + 1);
  if (rest.length === 0 || rest.length % 2 !== 0) return null;
  return rest.slice(0, rest.length / 2);
}

function storeOption(args: readonly Buffer[]): Buffer[] {
  const keys = [args[1]];
  for (let i = 2; i < args.length - 1; i++) {
    const word = args[i].toString().toLowerCase();
    if (word === 'store' || word === 'storedist') keys.push(args[i + 1]);
  }
  return keys;
}

const CUSTOM_KEYS: Record<string, CommandSpec['keys']> = {
  sintercard: numkeysAt(1), zunion: numkeysAt(1), zinter: numkeysAt(1), zdiff: numkeysAt(1), zintercard: numkeysAt(1),
  lmpop: numkeysAt(1), zmpop: numkeysAt(1), blmpop: numkeysAt(2), bzmpop: numkeysAt(2),
  zunionstore: numkeysAt(2, [1]), zinterstore: numkeysAt(2, [1]), zdiffstore: numkeysAt(2, [1]),
  xread: streamsKeys, xreadgroup: streamsKeys, sort: storeOption, georadius: storeOption, georadiusbymember: storeOption,
  eval: declaredKeys, evalsha: declaredKeys, fcall: declaredKeys, eval_ro: declaredKeys, evalsha_ro: declaredKeys, fcall_ro: declaredKeys,
  // MOVE and COPY ... DB touch another database too: unknown to a single-db scope.
  move: () => null,
  copy: (args) => (args.some((a) => a.toString().toLowerCase() === 'db') ? null : [args[1], args[2]]),
};

const TABLE = new Map<string, CommandSpec>();

function add(rows: Record<string, Row>, category: Category): void {
  for (const [name, [arity, first = 0, last = 0, step = 0]] of Object.entries(rows)) {
    TABLE.set(name, { name, arity, category, categoryIndex: CATEGORIES.indexOf(category), first, last, step, keys: CUSTOM_KEYS[name] });
  }
}
function addSimple(rows: Record<string, number>, category: Category): void {
  for (const [name, arity] of Object.entries(rows)) TABLE.set(name, { name, arity, category, categoryIndex: CATEGORIES.indexOf(category), first: 0, last: 0, step: 0 });
}

add(READS, 'read');
add(WRITES, 'write');
add(BLOCKING, 'blocking');
addSimple(CONNECTION, 'connection');
addSimple(REPLICATION, 'replication');
addSimple(TRANSACTION, 'transaction');
addSimple(PUBSUB, 'pubsub');
addSimple(ADMIN, 'admin');
addSimple(REFUSED, 'refused');
for (const name of BULKY_READS) TABLE.get(name)!.bulky = true;
TABLE.get('flushdb')!.scope = 'db';
TABLE.get('flushall')!.scope = 'all';
TABLE.get('swapdb')!.scope = 'all';

export function lookupCommand(name: Buffer | string): CommandSpec | undefined {
  const key = typeof name === 'string' ? name.toLowerCase() : name.toString('latin1').toLowerCase();
  return TABLE.get(key);
}

let lastName = '';
let lastSpec: CommandSpec | undefined;

/**
 * `lookupCommand` for a name already in lower case. Pipelines repeat a name, so the last lookup
 * is remembered (the data path's names are cached strings: mostly a pointer comparison).
 */
export function lookupLowerCase(name: string): CommandSpec | undefined {
  if (name !== lastName) {
    lastSpec = TABLE.get(name);
    lastName = name;
  }
  return lastSpec;
}

export function arityOk(spec: CommandSpec, argc: number): boolean {
  return spec.arity >= 0 ? argc === spec.arity : argc >= -spec.arity;
}

/** Keys of a command per its spec; null when they cannot be determined. */
export function commandKeys(spec: CommandSpec, args: readonly Buffer[]): Buffer[] | null {
  if (spec.keys) return spec.keys(args);
  if (spec.first === 0) return [];
  const last = spec.last < 0 ? args.length + spec.last : spec.last;
  const keys: Buffer[] = [];
  for (let i = spec.first; i <= last && i < args.length; i += spec.step) keys.push(args[i]);
  return keys;
}

/** XREAD/XREADGROUP with a BLOCK option are blocking; without it they are plain commands. */
export function hasBlockOption(args: readonly Buffer[]): boolean {
  return args.some((a, i) => i > 0 && a.length === 5 && a.toString().toLowerCase() === 'block');
}

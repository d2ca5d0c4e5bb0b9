/**
 * WATCH emulation. Clients share one ordered node connection, so a WATCH sent to the node would
 * watch on behalf of everybody. Instead the proxy, which sees every write (all writes to a master
 * go through it), marks a watching client dirty when a write to one of its keys is dispatched;
 * EXEC of a dirty client answers a null array without touching the node, as Redis does.
 * Conservative by design: a write that then fails still aborts the transaction.
 *
 * FLUSHDB, FLUSHALL and SWAPDB follow Redis 7.0 (db.c touchAllWatchedKeysInDb): they abort only
 * the transactions watching a key that exists at that moment (for SWAPDB, in either db). The
 * proxy asks the node with one EXISTS per watched key of the dbs concerned, sent on the ordered
 * connection right before the flush, so the answer is the state the flush meets. Until the answer
 * is in, an EXEC of a client concerned waits (`settled`). A probe that fails counts as "existed".
 */
import type { WriteScope } from '../source/types';

export interface Watcher {
  db: number;
  watchDirty: boolean;
}

/** The write being dispatched, as far as WATCH needs it. */
export interface WriteCommand {
  readonly name: string;
  readonly args: readonly Buffer[];
}

/** Asks the node, in order with the writes, which of `keys` exist in `db` (null: unknown). */
export interface KeyProbe {
  exists(db: number, keys: Buffer[], done: (exists: boolean[] | null) => void): void;
  /** Whether `member` is in the set `key` (null: unknown), in order with the writes. */
  isMember(db: number, key: Buffer, member: Buffer, done: (isMember: boolean | null) => void): void;
  dbCount(): number;
}

/** A watched key a flush met, with the watch sessions (a client's key set) watching it then. */
interface Met {
  key: Buffer;
  holders: [Watcher, Set<string>][];
  /** The dbs where the key's existence makes it touched (its own; for SWAPDB both). */
  dbs: number[];
}

interface Probe {
  watchers: Set<Watcher>;
  done: Promise<void>;
}

export class WatchRegistry {
  private readonly byKey = new Map<string, Set<Watcher>>();
  private readonly byClient = new Map<Watcher, Set<string>>();
  private readonly probes = new Set<Probe>();
  /**
   * When the first of a client's watched keys that had a TTL at WATCH time expires (ms since the
   * epoch). Redis 7.0 aborts EXEC when a watched key that existed at WATCH has expired since
   * (multi.c isWatchedKeyExpired); an expiry is no write, so only its deadline can tell.
   */
  private readonly expiries = new Map<Watcher, number>();

  constructor(private readonly probe?: KeyProbe) {}

  private static id(db: number, key: Buffer): string {
    return `${db}:${key.toString('latin1')}`;
  }

  /** The keys `client` watches (with several lanes, theirs join its transaction's). */
  keysOf(client: Watcher): Buffer[] {
    const ids = this.byClient.get(client);
    return ids ? [...ids].map((id) => Buffer.from(id.slice(id.indexOf(':') + 1), 'latin1')) : [];
  }

  /** Some client watches keys (writes must report what they touch). */
  get active(): boolean {
    return this.byClient.size > 0;
  }

  watch(client: Watcher, db: number, keys: Buffer[]): void {
    let mine = this.byClient.get(client);
    if (!mine) this.byClient.set(client, (mine = new Set()));
    for (const key of keys) {
      const id = WatchRegistry.id(db, key);
      mine.add(id);
      let set = this.byKey.get(id);
      if (!set) this.byKey.set(id, (set = new Set()));
      set.add(client);
    }
  }

  /** A watched key of `client` expires at `atMs` unless written before (a write makes it dirty anyway). */
  expiresAt(client: Watcher, atMs: number): void {
    if (!this.byClient.has(client)) return;
    const known = this.expiries.get(client);
    if (known === undefined || atMs < known) this.expiries.set(client, atMs);
  }

  /** A watched key of `client` that existed at WATCH has expired by now. */
  expiredSince(client: Watcher, nowMs = Date.now()): boolean {
    const at = this.expiries.get(client);
    return at !== undefined && at <= nowMs;
  }

  unwatch(client: Watcher): void {
    this.expiries.delete(client);
    const mine = this.byClient.get(client);
    if (!mine) return;
    for (const id of mine) {
      const set = this.byKey.get(id);
      set?.delete(client);
      if (set && set.size === 0) this.byKey.delete(id);
    }
    this.byClient.delete(client);
    client.watchDirty = false;
  }

  /**
   * Resolves once every flush probe concerning `client` has its answer (null: none pending).
   * Its EXEC must wait for it: the EXEC reaches the node after those flushes.
   */
  settled(client: Watcher): Promise<void> | null {
    const waits: Promise<void>[] = [];
    for (const p of this.probes) if (p.watchers.has(client)) waits.push(p.done);
    return waits.length === 0 ? null : Promise.all(waits).then(() => undefined);
  }

  /** A write with `scope` is about to be sent (`command`: which one, for FLUSHDB/FLUSHALL/SWAPDB). */
  touched(scope: WriteScope, command?: WriteCommand): void {
    if (this.byClient.size === 0) return;
    if (scope.kind === 'keys') {
      if (command?.name === 'smove' && command.args.length === 4 && this.probe) return this.touchedBySmove(scope.db, command.args);
      for (const key of scope.keys) this.byKey.get(WatchRegistry.id(scope.db, key))?.forEach((c) => (c.watchDirty = true));
      return;
    }
    const dbs = this.probe && command ? this.emptiedDbs(scope, command) : null;
    if (dbs === null) {
      // Keys unknown: every watcher of the db (or of all dbs) is touched.
      const prefix = scope.kind === 'db' ? `${scope.db}:` : '';
      for (const [id, set] of this.byKey) if (id.startsWith(prefix)) set.forEach((c) => (c.watchDirty = true));
      return;
    }
    const met: Met[] = [];
    for (const [id, set] of this.byKey) {
      const colon = id.indexOf(':');
      const db = Number(id.slice(0, colon));
      const other = dbs.get(db);
      if (other === undefined) continue;
      met.push({ key: Buffer.from(id.slice(colon + 1), 'latin1'), holders: this.holdersOf(set), dbs: other === db ? [db] : [db, other] });
    }
    if (met.length > 0) this.probeMet(met);
  }

  /** The watchers of a key with the watch session (key set) each had when a probe was sent. */
  private holdersOf(watchers: Iterable<Watcher>): [Watcher, Set<string>][] {
    return [...watchers].map((w): [Watcher, Set<string>] => [w, this.byClient.get(w)!]);
  }

  /** Marks the holders a probe found touched; one that unwatched since (EXEC, UNWATCH, …) and maybe watched again is not. */
  private touchHolders(holders: [Watcher, Set<string>][]): void {
    for (const [w, session] of holders) if (this.byClient.get(w) === session) w.watchDirty = true;
  }

  /**
   * SMOVE src dst member touches dst only when it adds the member there (Redis 7.0 t_set.c): the
   * proxy asks SISMEMBER dst member right before the SMOVE, on its lane, and marks dst's watchers
   * only when the member was not there (or the answer failed). src's watchers are marked at once
   * (conservative: an SMOVE of a member src lacks changes nothing on Redis).
   */
  private touchedBySmove(db: number, args: readonly Buffer[]): void {
    const [, src, dst, member] = args;
    this.byKey.get(WatchRegistry.id(db, src))?.forEach((c) => (c.watchDirty = true));
    const watchers = this.byKey.get(WatchRegistry.id(db, dst));
    if (!watchers || watchers.size === 0 || src.equals(dst)) return;
    const holders = this.holdersOf(watchers);
    const probe: Probe = {
      watchers: new Set(watchers),
      done: new Promise<void>((resolve) => {
        this.probe!.isMember(db, dst, member, (isMember) => {
          this.probes.delete(probe);
          if (isMember !== true) this.touchHolders(holders);
          resolve();
        });
      }),
    };
    this.probes.add(probe);
  }

  /**
   * The dbs a flush or swap empties or replaces, each mapped to the db whose keys also count
   * (itself for a flush, the other one for SWAPDB); null when the keys cannot be judged.
   */
  private emptiedDbs(scope: WriteScope, command: WriteCommand): Map<number, number> | null {
    if (command.name === 'flushdb' && scope.kind === 'db') return new Map([[scope.db, scope.db]]);
    const count = this.probe!.dbCount();
    if (command.name === 'flushall') return new Map(Array.from({ length: count }, (_, db) => [db, db]));
    if (command.name === 'swapdb' && command.args.length === 3) {
      const [a, b] = [Number(command.args[1].toString()), Number(command.args[2].toString())];
      if (![a, b].every((db) => Number.isInteger(db) && db >= 0 && db < count)) return null;
      // SWAPDB of a db with itself changes nothing (Redis returns before touching any key).
      return a === b ? new Map() : new Map([[a, b], [b, a]]);
    }
    return null;
  }

  /** Sends the EXISTS probes for `met` now (before the flush) and marks its watchers when answered. */
  private probeMet(met: Met[]): void {
    const byDb = new Map<number, { key: Buffer; entry: Met }[]>();
    for (const entry of met) {
      for (const db of entry.dbs) {
        let list = byDb.get(db);
        if (!list) byDb.set(db, (list = []));
        list.push({ key: entry.key, entry });
      }
    }
    const existed = new Set<Met>();
    const answers = [...byDb].map(
      ([db, list]) =>
        new Promise<void>((resolve) => {
          this.probe!.exists(db, list.map((l) => l.key), (exists) => {
            list.forEach((l, i) => {
              if (!exists || exists[i]) existed.add(l.entry);
            });
            resolve();
          });
        }),
    );
    const watchers = new Set(met.flatMap((m) => m.holders.map(([w]) => w)));
    const probe: Probe = {
      watchers,
      done: Promise.all(answers).then(() => {
        this.probes.delete(probe);
        for (const entry of existed) {
          this.touchHolders(entry.holders);
        }
      }),
    };
    this.probes.add(probe);
  }
}

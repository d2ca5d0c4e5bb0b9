/**
 * WATCH emulation. Clients share one ordered node connection, so a WATCH sent to the node would
 * watch on behalf of everybody. Instead the proxy, which sees every write (all writes to a master
 * go through it), marks a watching client dirty when a write to one of its keys is dispatched;
 * EXEC of a dirty client answers a null array without touching the node, as Redis does.
 * Conservative by design: a write that then fails still aborts the transaction.
 */
import type { WriteScope } from '../source/types';

export interface Watcher {
  db: number;
  watchDirty: boolean;
}

export class WatchRegistry {
  private readonly byKey = new Map<string, Set<Watcher>>();
  private readonly byClient = new Map<Watcher, Set<string>>();

  private static id(db: number, key: Buffer): string {
    return `${db}:${key.toString('latin1')}`;
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

  unwatch(client: Watcher): void {
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

  /** A write with `scope` is about to run. */
  touched(scope: WriteScope): void {
    if (this.byClient.size === 0) return;
    if (scope.kind === 'keys') {
      for (const key of scope.keys) this.byKey.get(WatchRegistry.id(scope.db, key))?.forEach((c) => (c.watchDirty = true));
      return;
    }
    const prefix = scope.kind === 'db' ? `${scope.db}:` : '';
    for (const [id, set] of this.byKey) if (id.startsWith(prefix)) set.forEach((c) => (c.watchDirty = true));
  }
}

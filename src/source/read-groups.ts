/**
 * The copy-on-write gate's bookkeeping (./snapshot-builder.ts): which keys are being read right
 * now, in groups (one per scanner batch or priority read), and which keys were written since the
 * build started (W).
 *
 * Why groups keyed by a 32-bit hash instead of a Map entry per key: the scanner reads hundreds of
 * thousands of keys per second and almost none is ever written during a build, so a string id, a
 * Map entry and an object per key cost more than the read itself. A group holds its keys' hashes;
 * a write looks its key's hash up in the few groups in flight and confirms a hit byte by byte
 * (a collision never makes a write skip the read of its own key). A write waits for the whole
 * group its key is in: at most one batch, a few milliseconds.
 */

/** FNV-1a over the key's bytes. */
export function keyHash(key: Buffer): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key[i], 0x01000193);
  return hash >>> 0;
}

/** Keys of one db being read together; the promise a write waits on is made only when asked for. */
export class ReadGroup {
  private readonly hashes = new Set<number>();
  private done = false;
  private waiting?: { promise: Promise<void>; resolve: () => void };

  constructor(readonly db: number, readonly keys: readonly Buffer[], hashes: readonly number[]) {
    for (const h of hashes) this.hashes.add(h);
  }

  /** Whether `key` (with hash `hash`) is one of this group's keys. */
  holds(key: Buffer, hash: number): boolean {
    return this.hashes.has(hash) && this.keys.some((k) => k.equals(key));
  }

  get promise(): Promise<void> {
    if (this.done) return Promise.resolve();
    if (!this.waiting) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.waiting = { promise, resolve };
    }
    return this.waiting.promise;
  }

  resolve(): void {
    this.done = true;
    this.waiting?.resolve();
  }
}

export class InFlightReads {
  private readonly groups = new Set<ReadGroup>();

  /** Marks `keys` of `db` as being read (their hashes given, as the caller has computed them). */
  add(db: number, keys: readonly Buffer[], hashes: readonly number[]): ReadGroup {
    const group = new ReadGroup(db, keys, hashes);
    this.groups.add(group);
    return group;
  }

  /** The group's records are written: writes waiting on it may go. */
  finish(group: ReadGroup): void {
    this.groups.delete(group);
    group.resolve();
  }

  /** The groups in flight that hold `key` of `db`. */
  holding(db: number, key: Buffer, hash: number): ReadGroup[] {
    const found: ReadGroup[] = [];
    for (const g of this.groups) if (g.db === db && g.holds(key, hash)) found.push(g);
    return found;
  }

  /** Resolves once every group in flight now (of `db`, when given) is finished. */
  settled(db?: number): Promise<void> {
    const pending: Promise<void>[] = [];
    for (const g of this.groups) if (db === undefined || g.db === db) pending.push(g.promise);
    return Promise.all(pending).then(() => undefined);
  }

  /** Lets every waiting write go (a failed or finished build protects nothing any more). */
  releaseAll(): void {
    for (const g of this.groups) g.resolve();
    this.groups.clear();
  }
}

/** W: keys written since the build started, with a hash filter so the scanner's check is cheap. */
export class WrittenKeys {
  private readonly hashes = new Set<number>();
  private readonly ids = new Set<string>();

  get size(): number {
    return this.ids.size;
  }

  has(db: number, key: Buffer, hash: number): boolean {
    return this.hashes.has(hash) && this.ids.has(writtenId(db, key));
  }

  add(db: number, key: Buffer, hash: number): void {
    this.hashes.add(hash);
    this.ids.add(writtenId(db, key));
  }
}

function writtenId(db: number, key: Buffer): string {
  return `${db}:${key.toString('latin1')}`;
}

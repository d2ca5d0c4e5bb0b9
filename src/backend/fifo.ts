/**
 * A FIFO queue with O(1) push and shift: a ring buffer that doubles when full. Why not an array
 * with a moving head: Array#shift is O(n) on long pipelines, and compacting plus regrowing the
 * array costs allocations on every pipeline's worth of requests.
 */
/** An emptied queue above this capacity gives its array back (a burst does not pin memory). */
const SHRINK_ABOVE = 1024;

export class Fifo<T> {
  private items: (T | undefined)[] = new Array(16);
  /** items.length - 1 (the capacity is a power of two). */
  private mask = 15;
  private head = 0;
  private size = 0;

  get length(): number {
    return this.size;
  }

  push(item: T): void {
    if (this.size > this.mask) this.grow();
    this.items[(this.head + this.size) & this.mask] = item;
    this.size++;
  }

  /** The item `shift` would return, left in place. */
  peek(): T | undefined {
    return this.size === 0 ? undefined : this.items[this.head];
  }

  shift(): T | undefined {
    if (this.size === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) & this.mask;
    if (--this.size === 0 && this.mask >= SHRINK_ABOVE) this.reset();
    return item;
  }

  /** Removes and returns everything queued. */
  drain(): T[] {
    const rest: T[] = [];
    while (this.size > 0) rest.push(this.shift() as T);
    return rest;
  }

  private reset(): void {
    this.items = new Array(16);
    this.mask = 15;
    this.head = 0;
  }

  private grow(): void {
    const old = this.items;
    const items: (T | undefined)[] = new Array(old.length * 2);
    for (let i = 0; i < this.size; i++) items[i] = old[(this.head + i) & this.mask];
    this.items = items;
    this.mask = items.length - 1;
    this.head = 0;
  }
}

/**
 * A command name's lower- and upper-case string from its bytes, without making strings per
 * request: a small direct-mapped cache keyed by the exact bytes (pipelines repeat a few names).
 * Bounded: a fixed number of slots holding copies of names up to 24 bytes.
 */
const SLOTS = 128;
const MAX_CACHED_BYTES = 24;
const keys: (Uint8Array | undefined)[] = new Array(SLOTS).fill(undefined);
const lowers: string[] = new Array(SLOTS).fill('');
const uppers: string[] = new Array(SLOTS).fill('');

function slotOf(b: Buffer): number {
  const len = b.length;
  if (len === 0 || len > MAX_CACHED_BYTES) return -1;
  let h = len;
  for (let i = 0; i < len; i++) h = (Math.imul(h, 31) + b[i]) | 0;
  const slot = (h ^ (h >>> 7)) & (SLOTS - 1);
  const k = keys[slot];
  if (k !== undefined && k.length === len) {
    let i = 0;
    while (i < len && k[i] === b[i]) i++;
    if (i === len) return slot;
  }
  const text = b.toString('latin1');
  keys[slot] = Uint8Array.from(b);
  lowers[slot] = text.toLowerCase();
  uppers[slot] = text.toUpperCase();
  return slot;
}

/** `b.toString('latin1').toLowerCase()`, cached. */
export function lowerName(b: Buffer): string {
  const slot = slotOf(b);
  return slot < 0 ? b.toString('latin1').toLowerCase() : lowers[slot];
}

/** `b.toString('latin1').toUpperCase()`, cached. */
export function upperName(b: Buffer): string {
  const slot = slotOf(b);
  return slot < 0 ? b.toString('latin1').toUpperCase() : uppers[slot];
}

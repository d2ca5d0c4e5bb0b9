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

function slotOf(b: Buffer, start: number, end: number): number {
  const len = end - start;
  if (len <= 0 || len > MAX_CACHED_BYTES) return -1;
  let h = len;
  for (let i = start; i < end; i++) h = (Math.imul(h, 31) + b[i]) | 0;
  const slot = (h ^ (h >>> 7)) & (SLOTS - 1);
  const k = keys[slot];
  if (k !== undefined && k.length === len) {
    let i = 0;
    while (i < len && k[i] === b[start + i]) i++;
    if (i === len) return slot;
  }
  const text = b.toString('latin1', start, end);
  keys[slot] = Uint8Array.from(b.subarray(start, end));
  lowers[slot] = text.toLowerCase();
  uppers[slot] = text.toUpperCase();
  return slot;
}

/** `b.toString('latin1').toLowerCase()`, cached. */
export function lowerName(b: Buffer): string {
  return lowerNameAt(b, 0, b.length);
}

/** `lowerName(b.subarray(start, end))` without making the view. */
export function lowerNameAt(b: Buffer, start: number, end: number): string {
  const slot = slotOf(b, start, end);
  return slot < 0 ? b.toString('latin1', start, end).toLowerCase() : lowers[slot];
}

/** `b.toString('latin1').toUpperCase()`, cached. */
export function upperName(b: Buffer): string {
  const slot = slotOf(b, 0, b.length);
  return slot < 0 ? b.toString('latin1').toUpperCase() : uppers[slot];
}

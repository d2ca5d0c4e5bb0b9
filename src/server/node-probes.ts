/**
 * The node probes WATCH emulation asks while a write is dispatched (watch-registry.ts `KeyProbe`):
 * sent in order with everything before and after, on the lane of the write being dispatched
 * (OrderedPath.probeInteger), so they see the node exactly as that write will meet it.
 */
import type { OrderedPath } from './ordered-path';
import type { KeyProbe } from './watch-registry';

const EXISTS = Buffer.from('EXISTS');
const SISMEMBER = Buffer.from('SISMEMBER');

export function nodeProbes(path: OrderedPath, dbCount: () => number): KeyProbe {
  return {
    /** One EXISTS per key; `done` gets one flag per key, or null when any answer failed. */
    exists(db, keys, done) {
      const exists: boolean[] = [];
      let failed = false;
      let left = keys.length;
      if (left === 0) return queueMicrotask(() => done(exists));
      keys.forEach((key, i) => {
        path.probeInteger(db, [EXISTS, key], (n) => {
          if (n === null) failed = true;
          else exists[i] = n !== 0;
          if (--left === 0) done(failed ? null : exists);
        });
      });
    },
    /** SISMEMBER; null when it failed. */
    isMember(db, key, member, done) {
      path.probeInteger(db, [SISMEMBER, key, member], (n) => done(n === null ? null : n !== 0));
    },
    dbCount,
  };
}

/**
 * XADD and XTRIM with approximate trimming (`~`) in the write log (pure). The node then removes
 * only whole macro nodes of the stream, so how many entries go depends on how that node laid the
 * stream out — which differs on a replica built from a snapshot, or once entries were deleted:
 * on Redis 7.0, after some XDELs, the same `XADD … MAXLEN ~ 100` left 100 entries on one node
 * and 170 on the other, replayed as sent. Redis replicates these commands with their exact
 * outcome; so does the proxy: the data path reads the stream's first entry right behind the
 * command (same lane, nothing between: `firstEntryRead`), and the log gets the command with the
 * exact `MINID = <that id>` instead of the approximate threshold (`MAXLEN = 0` when the stream
 * was emptied). Trimming only ever removes entries from the head, so that is the same result.
 */
import { upperName } from '../resp/command-name';
import type { Decoded } from '../resp/decode';
import { markReadBack } from './script-images';

const B = (s: string): Buffer => Buffer.from(s);
const upper = (b: Buffer | undefined): string => (b ? upperName(b) : '');
const TILDE = B('~');
const EXACT = B('=');

/** Where the trim options are: [start, end) of `MAXLEN|MINID [=|~] threshold [LIMIT count]`, and whether `~`. */
function trimSpan(args: readonly Buffer[]): { start: number; end: number; approx: boolean } | null {
  const name = upper(args[0]);
  if (name !== 'XADD' && name !== 'XTRIM') return null;
  for (let i = 2; i < args.length; ) {
    const opt = upper(args[i]);
    if (opt === 'NOMKSTREAM') {
      i++;
      continue;
    }
    if (opt !== 'MAXLEN' && opt !== 'MINID') return null; // the id (XADD): no trim options
    let j = i + 1;
    const approx = args[j]?.equals(TILDE) ?? false;
    if (approx || args[j]?.equals(EXACT)) j++;
    j++; // threshold
    if (upper(args[j]) === 'LIMIT') j += 2;
    return { start: i, end: j, approx };
  }
  return null;
}

/** Whether the command trims approximately (`~`): it needs `firstEntryRead` right behind it. */
export function isApproxTrim(args: readonly Buffer[]): boolean {
  return trimSpan(args)?.approx ?? false;
}

/** The read sent right behind an approximate trim: the stream's first entry. */
export function firstEntryRead(key: Buffer): Buffer[] {
  return markReadBack([B('XRANGE'), key, B('-'), B('+'), B('COUNT'), B('1')]);
}

/** `command` (as the log would replay it) with its approximate trim made exact from the first-entry read's reply. */
export function exactTrim(command: Buffer[], firstEntry: Decoded): Buffer[] {
  const span = trimSpan(command);
  if (!span?.approx) return command;
  const first = Array.isArray(firstEntry) && Array.isArray(firstEntry[0]) ? firstEntry[0][0] : undefined;
  const exact = Buffer.isBuffer(first) ? [B('MINID'), EXACT, first] : [B('MAXLEN'), EXACT, B('0')];
  return [...command.slice(0, span.start), ...exact, ...command.slice(span.end)];
}

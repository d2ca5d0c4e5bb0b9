/**
 * What a pub/sub frame from the node means, and how many frames a pub/sub command is owed
 * (pure: no I/O). Used by ./pubsub-mode.ts to keep the client's replies in order and to know
 * when the mode ends.
 */
import { decodeReply } from '../resp/decode';

/** Channels, patterns (PSUBSCRIBE) and shard channels (SSUBSCRIBE) are counted apart, as Redis does. */
export type Family = 'channel' | 'pattern' | 'shard';

/** Frames a command sent to the node still owes; 'all': one per subscription of its family, at least one. */
export interface Owed {
  family: Family | null;
  remaining: number | 'all';
  /** An (P|S)UNSUBSCRIBE: the mode may end with its frames. */
  unsubscribe: boolean;
}

export type Frame =
  | { kind: 'message' }
  | { kind: 'error' }
  | { kind: 'subscribe' | 'unsubscribe'; family: Family; channel: string | null }
  | { kind: 'other' };

const FAMILY_OF: Record<string, Family> = {
  subscribe: 'channel', unsubscribe: 'channel',
  psubscribe: 'pattern', punsubscribe: 'pattern',
  ssubscribe: 'shard', sunsubscribe: 'shard',
};
const MESSAGES = new Set(['message', 'pmessage', 'smessage']);

export function familyOf(command: string): Family | null {
  return FAMILY_OF[command] ?? null;
}

/**
 * Frames owed for `command` with `argc` words (name included): one per channel for the
 * (un)subscribe commands, and for an UNSUBSCRIBE without channels one per subscription (known
 * only when its first frame comes). An error ends a command early (Pika has no SSUBSCRIBE).
 */
export function framesOwed(command: string, argc: number): number | 'all' {
  if (!FAMILY_OF[command]) return 1; // PING
  if (argc > 1) return argc - 1;
  return command.endsWith('unsubscribe') ? 'all' : 1;
}

/**
 * The first word of an array frame (`*3\r\n$7\r\nmessage\r\n…`, or the RESP3 push
 * `>3\r\n…`), lower-cased; null when it has none.
 */
function firstWord(raw: Buffer): string | null {
  if (raw[0] !== 42 && raw[0] !== 62) return null;
  const lenStart = raw.indexOf(10) + 1;
  if (lenStart === 0 || raw[lenStart] !== 36) return null;
  const lenEnd = raw.indexOf(13, lenStart);
  const len = Number(raw.toString('latin1', lenStart + 1, lenEnd));
  if (!(len >= 0 && len <= 16)) return null;
  return raw.toString('latin1', lenEnd + 2, lenEnd + 2 + len).toLowerCase();
}

/** Reads only the head of a message push (it may be large); (un)subscribe frames are small. */
export function readFrame(raw: Buffer): Frame {
  if (raw[0] === 45) return { kind: 'error' };
  const word = firstWord(raw);
  if (word === null) return { kind: 'other' };
  if (MESSAGES.has(word)) return { kind: 'message' };
  const family = FAMILY_OF[word];
  if (!family) return { kind: 'other' };
  const decoded = decodeReply(raw);
  const channel = Array.isArray(decoded) && Buffer.isBuffer(decoded[1]) ? decoded[1].toString('latin1') : null;
  return { kind: word.endsWith('unsubscribe') ? 'unsubscribe' : 'subscribe', family, channel };
}

/** The client's subscriptions, as the frames from the node report them. */
export class Subscriptions {
  private readonly sets: Record<Family, Set<string>> = { channel: new Set(), pattern: new Set(), shard: new Set() };

  count(family: Family | null): number {
    return family ? this.sets[family].size : 0;
  }

  get total(): number {
    return this.sets.channel.size + this.sets.pattern.size + this.sets.shard.size;
  }

  apply(frame: Frame): void {
    if (frame.kind !== 'subscribe' && frame.kind !== 'unsubscribe') return;
    if (frame.channel === null) return;
    if (frame.kind === 'subscribe') this.sets[frame.family].add(frame.channel);
    else this.sets[frame.family].delete(frame.channel);
  }
}

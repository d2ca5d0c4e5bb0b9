/**
 * The loader's unit of work (./loader.ts): the node commands of one chunk of a snapshot file, and
 * the few helpers that take markers apart. Kept apart from the loader so each file reads alone.
 */
import { SyncProxyError } from '../errors';
import { redactCommand } from '../logger';
import { CommandEncoder } from '../resp/command-encoder';
import { RequestParser } from '../resp/request-parser';
import { ReplyView, errorText } from './node-replies';

/** Key records of one db as the loader counts them. */
export interface DbTally {
  records: number;
  distinct: number;
  volatile: number;
}

/** Most keys in one variadic DEL (bounds the command the loader builds). */
export const MAX_GROUP_KEYS = 1000;

/**
 * One chunk's worth of node commands: spans of the file forwarded as they are (consecutive
 * commands merged into one span), SELECT/DEL made by the loader, and what to check in each reply.
 * Sent with one `sendMany`: no promise, closure or copy per command.
 *
 * Key records are deleted in groups: consecutive records of one db with distinct keys share one
 * `DEL k1 .. kn` for the keys without a TTL and one for the keys with a TTL, both sent before the
 * group's first record command (its place in the batch is kept and filled when the group closes).
 * Deleting a key earlier than its own record is the same as deleting it right before: the records
 * in between touch other keys. A key already in the group closes it (a duplicate record's DEL must
 * come after the first record's commands), as do a SELECT, a PSP.PART, the end of the chunk and
 * MAX_GROUP_KEYS. Distinct keys of one DEL = keys sent − reply, counted per kind, so
 * DbTally.distinct and DbTally.volatile stay exactly what one DEL per record counted. Keys are
 * known by a 32-bit hash of their bytes: a collision only closes a group early (always safe), and
 * the DEL is built from the key's bulk bytes in the file (no Buffer or string per key).
 */
export class LoadBatch {
  readonly parts: Buffer[] = [];
  count = 0;
  private readonly kinds: number[] = [];
  private readonly refs: unknown[] = [];
  private readonly madeCommand = new CommandEncoder();
  private span?: Buffer;
  /** The buffer of the forwarded commands (the scanner's buffer does not change within a chunk). */
  private forwardedFrom?: Buffer;
  private spanStart = 0;
  private spanEnd = 0;
  /** The open DEL group: its db's tally, where its DELs go, its keys by kind. */
  private group?: DbTally;
  private groupPartsAt = 0;
  private groupKindsAt = 0;
  /** The group's keys as `$len\r\nkey\r\n` ranges of file buffers, and whether each is volatile. */
  private readonly groupData: Buffer[] = [];
  private readonly groupStart: number[] = [];
  private readonly groupEnd: number[] = [];
  private readonly groupVolatile: boolean[] = [];
  private readonly groupSeen = new Set<number>();
  /** `$len key $len value` of the group's plain string records, sent as one MSET at its end. */
  private readonly msetParts: Buffer[] = [];

  constructor(private readonly fileName: string, private readonly loaded: LoadedKeys = new LoadedKeys()) {}

  /** Forwards `data[start, end)`, one complete command. */
  forward(data: Buffer, start: number, end: number): void {
    if (this.madeCommand.length > 0) this.parts.push(...this.madeCommand.takeChunks());
    if (this.span === data && start === this.spanEnd) {
      this.spanEnd = end;
    } else {
      this.closeSpan();
      this.span = data;
      this.spanStart = start;
      this.spanEnd = end;
    }
    this.expect(FORWARDED, start);
    this.forwardedFrom = data;
  }

  /** A command the loader made (not the file's bytes); `what` names it in an error. */
  made(args: ReadonlyArray<Buffer | string>, what: string): void {
    this.closeSpan();
    this.madeCommand.command(args);
    // In place now: a group's MSET, appended when the group closes, must come after it.
    this.parts.push(...this.madeCommand.takeChunks());
    this.expect(MADE, what);
  }

  select(db: number): void {
    this.closeGroup();
    this.closeSpan();
    this.madeCommand.command(['SELECT', String(db)]);
    this.expect(SELECT, db);
  }

  /**
   * A key record begins (its db already selected): its key, the bulk `data[bulkStart, bulkEnd)`
   * whose bytes hash to `hash` (keyHash), joins the open DEL group, or a new one when the
   * group is of another db, already holds the key or is full.
   */
  del(data: Buffer, bulkStart: number, bulkEnd: number, hash: number, tally: DbTally, volatile: boolean): void {
    if (this.group && (this.group !== tally || this.groupSeen.has(hash) || this.groupSeen.size >= MAX_GROUP_KEYS)) this.closeGroup();
    if (!this.group) {
      this.closeSpan();
      if (this.madeCommand.length > 0) this.parts.push(...this.madeCommand.takeChunks());
      this.group = tally;
      this.groupPartsAt = this.parts.length;
      this.groupKindsAt = this.kinds.length;
    }
    this.groupSeen.add(hash);
    if (this.loaded.firstTime(hash)) {
      // No record of this key was loaded since the FLUSHALL: it is a distinct key, nothing to delete.
      tally.distinct++;
      if (volatile) tally.volatile++;
      return;
    }
    this.groupData.push(data);
    this.groupStart.push(bulkStart);
    this.groupEnd.push(bulkEnd);
    this.groupVolatile.push(volatile);
  }

  /**
   * `SET key value` of a string record without a TTL, `data[start, end)`: joins the open group's
   * MSET (its keys are distinct, so the order of their writes does not matter, and MSET costs the
   * node one command instead of one per key). False when it has another shape: forward it then.
   */
  set(data: Buffer, start: number, end: number): boolean {
    if (!this.group || end - start < SET_HEADER.length + 8) return false;
    for (let i = 0; i < SET_HEADER.length; i++) if ((data[start + i] | SET_HEADER_CASE[i]) !== SET_HEADER[i]) return false;
    this.msetParts.push(data.subarray(start + SET_HEADER.length, end));
    return true;
  }

  /** Ends the open DEL group (PSP.PART: the continued key's commands are not part of one). */
  closeGroup(): void {
    const tally = this.group;
    if (!tally) return;
    this.closeSpan();
    const dels: Buffer[] = [];
    const kinds: number[] = [];
    const refs: unknown[] = [];
    for (const volatile of [false, true]) {
      let keys = 0;
      let bytes = 0;
      for (let i = 0; i < this.groupData.length; i++) {
        if (this.groupVolatile[i] !== volatile) continue;
        keys++;
        bytes += this.groupEnd[i] - this.groupStart[i];
      }
      if (keys === 0) continue;
      const header = `*${keys + 1}\r\n$3\r\nDEL\r\n`;
      const out = Buffer.allocUnsafe(header.length + bytes);
      let pos = out.write(header, 0, 'latin1');
      for (let i = 0; i < this.groupData.length; i++) {
        if (this.groupVolatile[i] !== volatile) continue;
        pos += this.groupData[i].copy(out, pos, this.groupStart[i], this.groupEnd[i]);
      }
      dels.push(out);
      kinds.push(volatile ? DEL_VOLATILE : DEL_PLAIN);
      refs.push({ tally, keys });
    }
    this.parts.splice(this.groupPartsAt, 0, ...dels);
    this.kinds.splice(this.groupKindsAt, 0, ...kinds);
    this.refs.splice(this.groupKindsAt, 0, ...refs);
    this.count += kinds.length;
    if (this.msetParts.length > 0) {
      // After the group's DELs and other commands: the same keys are never written twice in it.
      this.parts.push(Buffer.from(`*${1 + 2 * this.msetParts.length}\r\n$4\r\nMSET\r\n`, 'latin1'), ...this.msetParts);
      this.expect(MSET, this.msetParts.length);
      this.msetParts.length = 0;
    }
    this.groupData.length = 0;
    this.groupStart.length = 0;
    this.groupEnd.length = 0;
    this.groupVolatile.length = 0;
    this.groupSeen.clear();
    this.group = undefined;
  }

  /** The chunks to send, in order (call once, after the last command). */
  finish(): Buffer[] {
    this.closeGroup();
    this.closeSpan();
    if (this.madeCommand.length > 0) this.parts.push(...this.madeCommand.takeChunks());
    return this.parts;
  }

  readonly check = (reply: ReplyView, index: number): void => {
    const kind = this.kinds[index];
    const ref = this.refs[index];
    if (kind === FORWARDED) {
      if (reply.type === 45) throw new SyncProxyError('LOAD_FAILED', `the node refused "${describe(this.forwardedFrom!.subarray(ref as number))}" from ${this.fileName}: ${errorText(reply)}`);
    } else if (kind === MSET) {
      if (reply.type !== 43) throw new SyncProxyError('LOAD_FAILED', `MSET of ${ref as number} string records from ${this.fileName} failed on the node: ${errorText(reply)}`);
    } else if (kind === MADE) {
      if (reply.type === 45) throw new SyncProxyError('LOAD_FAILED', `the node refused ${ref as string} from ${this.fileName}: ${errorText(reply)}`);
    } else if (kind === SELECT) {
      if (reply.type !== 43) throw new SyncProxyError('LOAD_FAILED', `SELECT ${ref as number} failed on the node: ${errorText(reply)}`);
    } else {
      const n = reply.integer();
      const { tally, keys } = ref as { tally: DbTally; keys: number };
      if (n === undefined || n < 0 || n > keys) throw new SyncProxyError('LOAD_FAILED', `DEL of ${keys} keys failed on the node: ${errorText(reply)}`);
      // Keys the DEL did not find did not exist before their records: distinct keys.
      tally.distinct += keys - n;
      if (kind === DEL_VOLATILE) tally.volatile += keys - n;
    }
  };

  private expect(kind: number, ref: unknown): void {
    this.kinds.push(kind);
    this.refs.push(ref);
    this.count++;
  }

  private closeSpan(): void {
    if (!this.span) return;
    this.parts.push(this.span.subarray(this.spanStart, this.spanEnd));
    this.span = undefined;
  }
}

/**
 * FNV-1a of `data[start, end)`, a key's bytes: the same hash as the data path's laneOfKey
 * (src/server/lanes.ts), so `(keyHash >>> 0) % lanes` is a key's lane there and in the load.
 * Computed once per key record, for its lane and its DEL group.
 */
export function keyHash(data: Buffer, start: number, end: number): number {
  let hash = 0x811c9dc5;
  for (let i = start; i < end; i++) hash = Math.imul(hash ^ data[i], 0x01000193);
  return hash;
}

/**
 * Which keys may already have a record loaded, as one bit per 32-bit key hash folded to 2^27 bits
 * (16 MiB, whatever the key count). Why: deleting a key that cannot exist costs Pika more than
 * writing it (DEL of 1,000 missing keys + MSET: 2.5x the CPU of the MSET alone, measured with
 * redis-cli --pipe on Pika 4.0.1), and after the load's FLUSHALL almost every key is new. A clear
 * bit proves the key was not loaded before, so its DEL is left out; a set bit (a duplicate record,
 * or another key with the same bits, in any db) keeps the DEL, which is always safe.
 */
export class LoadedKeys {
  private bits?: Uint8Array;

  /** Marks the key's bits; true when they were clear (no record of the key was loaded yet). */
  firstTime(hash: number): boolean {
    const bits = (this.bits ??= new Uint8Array(LOADED_BYTES));
    const byte = hash >>> 8;
    const mask = 1 << (hash & 7);
    if (bits[byte] & mask) return false;
    bits[byte] |= mask;
    return true;
  }
}

const LOADED_BYTES = 1 << 24;

const FORWARDED = 0;
const SELECT = 1;
const DEL_PLAIN = 2;
const DEL_VOLATILE = 3;
const MSET = 4;
const MADE = 5;
/** `*3\r\n$3\r\nSET\r\n`, and the bits that make its letters match in any case. */
const SET_HEADER = Buffer.from('*3\r\n$3\r\nset\r\n', 'latin1');
const SET_HEADER_CASE = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x20, 0x20, 0, 0]);

/** The arguments of a complete, already validated multibulk command (markers only). */
export function argsOf(raw: Buffer): Buffer[] {
  const args: Buffer[] = [];
  let pos = 1;
  while (raw[pos] !== 13) pos++;
  pos += 2;
  while (pos < raw.length) {
    let len = 0;
    let i = pos + 1;
    for (; raw[i] !== 13; i++) len = len * 10 + raw[i] - 48;
    args.push(raw.subarray(i + 2, i + 2 + len));
    pos = i + 2 + len + 2;
  }
  return args;
}

const PSP_KEY = Buffer.from('PSP.KEY');
export const MINUS_ONE = Buffer.from('-1');

/** A marker's name in upper case (the common spelling without a string conversion). */
export function markerName(arg: Buffer): string {
  return arg.equals(PSP_KEY) ? 'PSP.KEY' : arg.toString('latin1').toUpperCase();
}

/** The redacted text of one raw command (only for error messages). */
function describe(raw: Buffer): string {
  const parser = new RequestParser();
  parser.feed(raw);
  const request = parser.next();
  return request ? redactCommand(request.args) : '?';
}

/** A name `data[start, end)` beginning "PSP." in any case (markers are matched case-insensitively). */
export function isMarker(data: Buffer, start: number, end: number): boolean {
  return end - start > 4 && (data[start] | 0x20) === 112 && (data[start + 1] | 0x20) === 115 && (data[start + 2] | 0x20) === 112 && data[start + 3] === 46;
}


/**
 * The loader's unit of work (./loader.ts): the node commands of one chunk of a snapshot file, and
 * the few helpers that take markers apart. Kept apart from the loader so each file reads alone.
 */
import { SyncProxyError } from '../errors';
import { redactCommand } from '../logger';
import { CommandEncoder } from '../resp/command-encoder';
import { RequestParser } from '../resp/request-parser';
import { ReplyView, errorText } from './node-pipeline';

/** Key records of one db as the loader counts them. */
export interface DbTally {
  records: number;
  distinct: number;
  volatile: number;
}

/**
 * One chunk's worth of node commands: spans of the file forwarded as they are (consecutive
 * commands merged into one span), SELECT/DEL made by the loader, and what to check in each reply.
 * Sent with one `sendMany`: no promise, closure or copy per command.
 */
export class LoadBatch {
  readonly parts: Buffer[] = [];
  count = 0;
  private readonly kinds: number[] = [];
  private readonly refs: unknown[] = [];
  private readonly made = new CommandEncoder();
  private span?: Buffer;
  /** The buffer of the forwarded commands (the scanner's buffer does not change within a chunk). */
  private forwardedFrom?: Buffer;
  private spanStart = 0;
  private spanEnd = 0;

  constructor(private readonly fileName: string) {}

  /** Forwards `data[start, end)`, one complete command. */
  forward(data: Buffer, start: number, end: number): void {
    if (this.made.length > 0) this.parts.push(...this.made.takeChunks());
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

  select(db: number): void {
    this.closeSpan();
    this.made.command(['SELECT', String(db)]);
    this.expect(SELECT, db);
  }

  del(key: Buffer, tally: DbTally, volatile: boolean): void {
    this.closeSpan();
    this.made.command([DEL, key]);
    this.expect(volatile ? DEL_VOLATILE : DEL_PLAIN, tally);
  }

  /** The chunks to send, in order (call once, after the last command). */
  finish(): Buffer[] {
    this.closeSpan();
    if (this.made.length > 0) this.parts.push(...this.made.takeChunks());
    return this.parts;
  }

  readonly check = (reply: ReplyView, index: number): void => {
    const kind = this.kinds[index];
    const ref = this.refs[index];
    if (kind === FORWARDED) {
      if (reply.type === 45) throw new SyncProxyError('LOAD_FAILED', `the node refused "${describe(this.forwardedFrom!.subarray(ref as number))}" from ${this.fileName}: ${errorText(reply)}`);
    } else if (kind === SELECT) {
      if (reply.type !== 43) throw new SyncProxyError('LOAD_FAILED', `SELECT ${ref as number} failed on the node: ${errorText(reply)}`);
    } else {
      const n = reply.integer();
      if (n === undefined) throw new SyncProxyError('LOAD_FAILED', `DEL failed on the node: ${errorText(reply)}`);
      // 0: the key did not exist before this record, so it is a distinct key.
      if (n === 0) {
        const tally = ref as DbTally;
        tally.distinct++;
        if (kind === DEL_VOLATILE) tally.volatile++;
      }
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

const FORWARDED = 0;
const SELECT = 1;
const DEL_PLAIN = 2;
const DEL_VOLATILE = 3;
const DEL = Buffer.from('DEL');

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


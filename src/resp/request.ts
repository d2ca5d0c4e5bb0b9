/**
 * One client request as the parser found it (pure): its RESP multibulk bytes `buf[start, end)`,
 * the argument count and where the command name lies. The Buffer views of the arguments (and of
 * the request) are made only when asked for: a view costs more than the rest of a request's
 * parse, and the data path forwards, classifies and logs most requests from the bytes alone.
 */
import { lowerNameAt } from './command-name';

export class Request {
  private views: Buffer[] | undefined;
  private rawView: Buffer | undefined;
  private lowerName: string | undefined;

  /** `args`, when given, are the arguments the bytes encode (they are not re-read). */
  constructor(
    readonly buf: Buffer,
    readonly start: number,
    readonly end: number,
    readonly argc: number,
    readonly nameStart: number,
    readonly nameEnd: number,
    args?: Buffer[],
  ) {
    this.views = args;
  }

  /** The command name in lower case. */
  get name(): string {
    return (this.lowerName ??= lowerNameAt(this.buf, this.nameStart, this.nameEnd));
  }

  /** The arguments, name included (views of `buf`). */
  get args(): Buffer[] {
    return (this.views ??= argViews(this.buf, this.start, this.argc));
  }

  /** The request's bytes, to forward as the client sent them. */
  get raw(): Buffer {
    if (this.rawView) return this.rawView;
    return (this.rawView = this.start === 0 && this.end === this.buf.length ? this.buf : this.buf.subarray(this.start, this.end));
  }
}

/** Views of the arguments of the well-formed multibulk at `start` (the parser checked it). */
function argViews(buf: Buffer, start: number, argc: number): Buffer[] {
  const args: Buffer[] = new Array(argc);
  let pos = start + 1;
  while (buf[pos] !== 13) pos++;
  pos += 2;
  for (let i = 0; i < argc; i++) {
    let len = 0;
    for (let c = buf[++pos]; c !== 13; c = buf[++pos]) len = len * 10 + c - 48;
    pos += 2;
    args[i] = buf.subarray(pos, pos + len);
    pos += len + 2;
  }
  return args;
}

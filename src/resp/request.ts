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

/** A request made by the proxy itself (e.g. a command rewritten for the node), from its arguments. */
export function requestOf(args: Buffer[]): Request {
  const header = `*${args.length}\r\n$${args[0].length}\r\n`;
  const parts: Buffer[] = [Buffer.from(header, 'latin1'), args[0], CRLF];
  for (let i = 1; i < args.length; i++) parts.push(Buffer.from(`$${args[i].length}\r\n`, 'latin1'), args[i], CRLF);
  const buf = Buffer.concat(parts);
  return new Request(buf, 0, buf.length, args.length, header.length, header.length + args[0].length, argViews(buf, 0, args.length));
}

const CRLF = Buffer.from('\r\n', 'latin1');

/**
 * Decodes complete replies into values with redis-parser, for the few replies the proxy must
 * understand (EXEC results, SPOP members, INFO text). Error replies decode to ReplyError.
 */
import RedisParser from 'redis-parser';

export type Decoded = Buffer | number | null | Error | Decoded[];

/** Decodes one complete reply (as framed by ReplyFramer); throws when `raw` is not one reply. */
export function decodeReply(raw: Buffer): Decoded {
  const values: Decoded[] = [];
  let fatal: Error | undefined;
  const parser = new RedisParser({
    returnBuffers: true,
    returnReply: (reply: unknown) => values.push(reply as Decoded),
    returnError: (err: Error) => values.push(err),
    returnFatalError: (err: Error) => (fatal = err),
  });
  parser.execute(raw);
  if (fatal) throw fatal;
  if (values.length !== 1) throw new Error(`expected one reply, decoded ${values.length}`);
  return values[0];
}

/**
 * Decodes complete replies into values, for the few replies the proxy must understand (EXEC
 * results, SPOP members, INFO text, probes). Error replies decode to ReplyError (Error).
 *
 * RESP2 goes through redis-parser. redis-parser knows no RESP3 (it stops at the first RESP3 type
 * byte), and a client that said HELLO 3 has its commands answered in RESP3 on its lane, so a
 * reply redis-parser cannot read is decoded by `decodeResp3` below: hand-written because no
 * library of the chosen set reads RESP3, and what the proxy needs from it is small (values as the
 * RESP2 form would give them: maps and sets flattened to arrays, doubles and big numbers as their
 * text, booleans as 1/0, nulls as null, attributes skipped).
 */
import RedisParser from 'redis-parser';
import { SyncProxyError } from '../errors';

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
  if (fatal) return decodeResp3(raw);
  if (values.length !== 1) throw new Error(`expected one reply, decoded ${values.length}`);
  return values[0];
}

class ReplyError extends Error {
  override name = 'ReplyError';
}

/** Decodes one complete RESP2 or RESP3 reply; throws MALFORMED_RESPONSE on anything else. */
export function decodeResp3(raw: Buffer): Decoded {
  const at = { pos: 0 };
  const value = readValue(raw, at);
  if (at.pos !== raw.length) throw malformed(`expected one reply, ${raw.length - at.pos} bytes left over`);
  return value;
}

function readValue(raw: Buffer, at: { pos: number }): Decoded {
  for (;;) {
    const type = raw[at.pos];
    const cr = raw.indexOf('\r\n', at.pos + 1, 'latin1');
    if (cr < 0) throw malformed('incomplete reply');
    const line = raw.subarray(at.pos + 1, cr);
    at.pos = cr + 2;
    switch (type) {
      case 43: // + simple string
      case 44: // , double
      case 40: // ( big number
        return Buffer.from(line);
      case 45: // - error
        return new ReplyError(line.toString());
      case 58: // : integer
        return Number(line.toString('latin1'));
      case 95: // _ null
        return null;
      case 35: // # boolean
        return line[0] === 116 ? 1 : 0;
      case 36: // $ bulk
      case 61: // = verbatim (the 4-byte format prefix "txt:" dropped)
      case 33: { // ! blob error
        const len = Number(line.toString('latin1'));
        if (len < 0) return null;
        const body = raw.subarray(at.pos, at.pos + len);
        if (body.length !== len) throw malformed('incomplete blob');
        at.pos += len + 2;
        if (type === 33) return new ReplyError(body.toString());
        return Buffer.from(type === 61 ? body.subarray(4) : body);
      }
      case 42: // * array
      case 126: // ~ set
      case 62: // > push
      case 37: { // % map (flattened)
        const n = Number(line.toString('latin1'));
        if (n < 0) return null;
        const items: Decoded[] = [];
        for (let i = 0; i < (type === 37 ? 2 * n : n); i++) items.push(readValue(raw, at));
        return items;
      }
      case 124: { // | attribute: metadata before the value it describes, skipped
        const n = Number(line.toString('latin1'));
        for (let i = 0; i < 2 * n; i++) readValue(raw, at);
        continue;
      }
      default:
        throw malformed(`unexpected type byte 0x${(type ?? 0).toString(16)}`);
    }
  }
}

function malformed(why: string): SyncProxyError {
  return new SyncProxyError('MALFORMED_RESPONSE', `cannot decode a reply from the node: ${why}`);
}

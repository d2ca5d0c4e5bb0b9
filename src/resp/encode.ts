/** Encoders for the replies the proxy produces itself (pure). */
import { oneLine } from '../errors';

export { encodeArgs as encodeCommand } from './request-parser';

export const OK = Buffer.from('+OK\r\n');
export const QUEUED = Buffer.from('+QUEUED\r\n');
export const PONG = Buffer.from('+PONG\r\n');
export const NULL_BULK = Buffer.from('$-1\r\n');
export const NULL_ARRAY = Buffer.from('*-1\r\n');
/** RESP3's one null, for both of RESP2's. */
export const NULL3 = Buffer.from('_\r\n');

export function simple(text: string): Buffer {
  return Buffer.from(`+${oneLine(text)}\r\n`);
}

/** `text` must start with the error prefix (ERR, MASTERDOWN, READONLY, ...). */
export function error(text: string): Buffer {
  return Buffer.from(`-${oneLine(text)}\r\n`);
}

export function integer(n: number | bigint): Buffer {
  return Buffer.from(`:${n}\r\n`);
}

export function bulk(value: Buffer | string | null): Buffer {
  if (value === null) return NULL_BULK;
  const b = typeof value === 'string' ? Buffer.from(value) : value;
  return Buffer.concat([Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n')]);
}

export type ReplyValue = string | number | Buffer | null | ReplyValue[];

/** Arrays of strings (as bulk), numbers (as integers), buffers, null and nested arrays. */
export function array(items: readonly ReplyValue[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${items.length}\r\n`)];
  for (const item of items) parts.push(encodeValue(item));
  return Buffer.concat(parts);
}

/** A RESP3 map from key/value pairs given flat (`[k1, v1, k2, v2, …]`). */
export function map(flat: readonly ReplyValue[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`%${flat.length / 2}\r\n`)];
  for (const item of flat) parts.push(encodeValue(item));
  return Buffer.concat(parts);
}

export function encodeValue(value: ReplyValue): Buffer {
  if (value === null) return NULL_BULK;
  if (Array.isArray(value)) return array(value);
  if (typeof value === 'number') return integer(value);
  return bulk(value);
}

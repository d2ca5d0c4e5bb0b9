/**
 * Per-client connection state the proxy answers itself: the node connection is shared, so AUTH
 * (the proxy's --requirepass), SELECT, CLIENT SETNAME/GETNAME/ID/LIST/INFO, HELLO, RESET and QUIT
 * are kept per client here. PING and ECHO need no node round trip.
 */
import { timingSafeEqual } from 'node:crypto';
import * as encode from '../resp/encode';
import type { ClientSession } from './client-session';

function passwordMatches(given: Buffer, expected: string): boolean {
  const want = Buffer.from(expected);
  return given.length === want.length && timingSafeEqual(given, want);
}

function auth(s: ClientSession, user: Buffer | undefined, pass: Buffer): Buffer {
  const required = s.ctx.config.requirepass;
  if (!required) {
    return encode.error('ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?');
  }
  if ((user && user.toString() !== 'default') || !passwordMatches(pass, required)) {
    s.authenticated = false;
    return encode.error('WRONGPASS invalid username-password pair or user is disabled.');
  }
  s.authenticated = true;
  return encode.OK;
}

function hello(s: ClientSession, args: Buffer[]): Buffer {
  let i = 1;
  if (args.length > 1) {
    const proto = args[1].toString();
    if (proto !== '2') return encode.error('NOPROTO unsupported protocol version (pika-sync-proxy speaks RESP2)');
    i = 2;
  }
  for (; i < args.length; i++) {
    const opt = args[i].toString().toLowerCase();
    if (opt === 'auth' && args[i + 2]) {
      const r = auth(s, args[i + 1], args[i + 2]);
      if (r[0] === 45) return r;
      i += 2;
    } else if (opt === 'setname' && args[i + 1]) {
      s.name = args[++i].toString();
    } else {
      return encode.error(`ERR Syntax error in HELLO option '${opt}'`);
    }
  }
  if (!s.authenticated) return encode.error('NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time');
  return encode.array(['server', 'redis', 'version', '7.0.0', 'proto', 2, 'id', s.id, 'mode', 'standalone', 'role', s.ctx.replication.role, 'modules', []]);
}

function client(s: ClientSession, args: Buffer[]): Buffer {
  const sub = args[1].toString().toLowerCase();
  switch (sub) {
    case 'setname': {
      if (args.length !== 3) return encode.error("ERR wrong number of arguments for 'client|setname' command");
      const name = args[2].toString();
      if (/[\s]/.test(name)) return encode.error('ERR Client names cannot contain spaces, newlines or special characters.');
      s.name = name;
      return encode.OK;
    }
    case 'getname':
      return encode.bulk(s.name === '' ? null : s.name);
    case 'id':
      return encode.integer(s.id);
    case 'info':
      return encode.bulk(`${s.describe()}\n`);
    case 'list':
      return encode.bulk([...s.ctx.sessions].map((c) => `${c.describe()}\n`).join(''));
    case 'setinfo':
    case 'no-evict':
    case 'no-touch':
    case 'reply':
      return encode.OK;
    default:
      return encode.error(`ERR CLIENT ${sub.toUpperCase()} is not supported through pika-sync-proxy (the node connection is shared)`);
  }
}

function select(s: ClientSession, arg: Buffer): Buffer {
  const text = arg.toString();
  if (!/^-?\d+$/.test(text)) return encode.error('ERR value is not an integer or out of range');
  const db = Number(text);
  if (db < 0 || db >= s.ctx.dbCount()) return encode.error('ERR DB index is out of range');
  s.db = db;
  return encode.OK;
}

export function handleConnectionCommand(s: ClientSession, name: string, args: Buffer[]): Buffer {
  switch (name) {
    case 'auth':
      if (args.length > 3) return encode.error('ERR syntax error');
      return args.length === 3 ? auth(s, args[1], args[2]) : auth(s, undefined, args[1]);
    case 'ping':
      if (args.length > 2) return encode.error("ERR wrong number of arguments for 'ping' command");
      return args.length === 2 ? encode.bulk(args[1]) : encode.PONG;
    case 'echo':
      return encode.bulk(args[1]);
    case 'quit':
      s.closeAfterReplies();
      return encode.OK;
    case 'select':
      return select(s, args[1]);
    case 'hello':
      return hello(s, args);
    case 'client':
      return client(s, args);
    case 'reset':
      s.transaction = null;
      s.ctx.watches.unwatch(s);
      s.db = 0;
      s.name = '';
      s.authenticated = !s.ctx.config.requirepass;
      return encode.simple('RESET');
    default:
      return encode.error(`ERR unknown command '${name}'`);
  }
}

/**
 * Per-client connection state the proxy answers itself: the node connection is shared, so AUTH
 * (the proxy's --requirepass), SELECT, CLIENT SETNAME/GETNAME/ID/LIST/INFO, HELLO, RESET and QUIT
 * are kept per client here. PING and ECHO need no node round trip.
 */
import { timingSafeEqual } from 'node:crypto';
import * as encode from '../resp/encode';
import type { ClientSession } from './client-session';
import { errorReply } from './refusals';

function passwordMatches(given: Buffer, expected: string): boolean {
  const want = Buffer.from(expected);
  return given.length === want.length && timingSafeEqual(given, want);
}

function auth(s: ClientSession, user: Buffer | undefined, pass: Buffer): Buffer | Promise<Buffer> {
  const required = s.ctx.config.requirepass;
  if (!required && user) return nodeAuth(s, user, pass);
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

/**
 * AUTH <user> <pass> where the proxy has no --requirepass: the node's ACL users (its default user too)
 * are checked by the node, on a connection of its own (closed after), and its answer is the reply. The
 * client's commands still run on the shared lanes as the proxy's node user: the node cannot
 * restrict them per client (README, Known limits). No access is gained by it: without
 * --requirepass every client already has the proxy's node user.
 */
async function nodeAuth(s: ClientSession, user: Buffer, pass: Buffer): Promise<Buffer> {
  const conn = s.ctx.dedicatedConnection();
  try {
    await conn.connect();
    return await new Promise<Buffer>((resolve) => conn.send(encode.encodeCommand(['AUTH', user, pass]), (r, err) => resolve(r ? Buffer.from(r.raw) : errorReply(err))));
  } catch (err) {
    return errorReply(err);
  } finally {
    conn.destroy();
  }
}

/**
 * HELLO [2|3] [AUTH user pass] [SETNAME name]. The protocol is the client's own: its commands
 * reach the node in it (lanes switch per command, lanes.ts), so RESP2 and RESP3 clients share one
 * proxy. A node without RESP3 (Pika 4.0.1) keeps the client in RESP2 and it gets the node's own
 * answer to HELLO, as it would directly.
 */
function hello(s: ClientSession, args: Buffer[]): Buffer | Promise<Buffer> {
  let proto: 2 | 3 | undefined;
  let i = 1;
  if (args.length > 1) {
    const text = args[1].toString();
    if (!/^-?\d+$/.test(text)) return encode.error('ERR Protocol version is not an integer or out of range');
    if (text !== '2' && text !== '3') return encode.error('NOPROTO unsupported protocol version');
    proto = text === '3' ? 3 : 2;
    i = 2;
  }
  let name: string | undefined;
  for (; i < args.length; i++) {
    const opt = args[i].toString().toLowerCase();
    if (opt === 'auth' && args[i + 2]) {
      const r = auth(s, args[i + 1], args[i + 2]);
      // An ACL user of the node: once the node accepted the pair, HELLO goes on without it.
      if (!Buffer.isBuffer(r)) return r.then((reply) => (reply[0] === 45 ? reply : hello(s, [...args.slice(0, i), ...args.slice(i + 3)])));
      if (r[0] === 45) return r;
      i += 2;
    } else if (opt === 'setname' && args[i + 1]) {
      name = args[++i].toString();
      if (/[\s]/.test(name)) return encode.error('ERR Client names cannot contain spaces, newlines or special characters.');
    } else {
      return encode.error(`ERR Syntax error in HELLO option '${opt}'`);
    }
  }
  if (!s.authenticated) return encode.error('NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time');
  if (name !== undefined) s.name = name;
  const profile = s.ctx.nodeProfile();
  if (proto === 3 && !profile?.resp3) return nodeHello(s, args[1]);
  if (proto !== undefined) s.lanes.proto = proto;
  const fields = ['server', 'redis', 'version', profile?.version || '7.0.0', 'proto', s.lanes.proto, 'id', s.id, 'mode', 'standalone', 'role', s.ctx.replication.role, 'modules', []];
  return s.lanes.proto === 3 ? encode.map(fields) : encode.array(fields);
}

/** The node's own answer to `HELLO <proto>` (a node without RESP3 says what it speaks). */
function nodeHello(s: ClientSession, proto: Buffer): Promise<Buffer> {
  return new Promise((resolve) => {
    s.ctx.path.send(s.db, encode.encodeCommand(['HELLO', proto]), (reply, err) => resolve(reply ? Buffer.from(reply.raw) : errorReply(err)), s.lanes);
  });
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
      return clientList(s, args);
    case 'unblock':
      return unblock(s, args);
    case 'reply': {
      const mode = args[2]?.toString().toLowerCase();
      if (args.length !== 3 || (mode !== 'on' && mode !== 'off' && mode !== 'skip')) return encode.error('ERR syntax error');
      // OFF and SKIP are not answered (the session silences this reply, then the next or all).
      s.replyMode = mode;
      return encode.OK;
    }
    case 'setinfo':
    case 'no-evict':
    case 'no-touch':
      return encode.OK;
    default:
      return encode.error(`ERR CLIENT ${sub.toUpperCase()} is not supported through pika-sync-proxy (the node connection is shared)`);
  }
}

/** CLIENT LIST [ID id …]: this proxy's clients (TYPE normal lists them all, other types none). */
function clientList(s: ClientSession, args: Buffer[]): Buffer {
  let clients = [...s.ctx.sessions];
  for (let i = 2; i < args.length; i++) {
    const opt = args[i].toString().toLowerCase();
    if (opt === 'id' && i + 1 < args.length) {
      const ids = args.slice(i + 1).map((a) => a.toString());
      if (ids.some((id) => !/^\d+$/.test(id))) return encode.error('ERR Invalid client ID');
      clients = clients.filter((c) => ids.includes(String(c.id)));
      break;
    }
    if (opt === 'type' && i + 1 < args.length) {
      const type = args[++i].toString().toLowerCase();
      if (!['normal', 'master', 'replica', 'slave', 'pubsub'].includes(type)) return encode.error(`ERR Unknown client type '${type}'`);
      clients = clients.filter((c) => (type === 'pubsub') === (c.pubsub !== null) && (type === 'normal' || type === 'pubsub'));
      continue;
    }
    return encode.error('ERR syntax error');
  }
  return encode.bulk(clients.map((c) => `${c.describe()}\n`).join(''));
}

/**
 * CLIENT UNBLOCK id [TIMEOUT|ERROR]: blocking pops wait in the proxy (blocking-runner.ts), so the
 * proxy ends them itself, with the pop's timeout reply or -UNBLOCKED.
 */
function unblock(s: ClientSession, args: Buffer[]): Buffer {
  if (args.length < 3 || args.length > 4) return encode.error("ERR wrong number of arguments for 'client|unblock' command");
  const text = args[2].toString();
  if (!/^-?\d+$/.test(text)) return encode.error('ERR value is not an integer or out of range');
  const how = args[3]?.toString().toLowerCase() ?? 'timeout';
  if (how !== 'timeout' && how !== 'error') return encode.error('ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR');
  const target = [...s.ctx.sessions].find((c) => String(c.id) === text);
  return encode.integer(target && s.ctx.blocked.unblock(target, how) ? 1 : 0);
}

function select(s: ClientSession, arg: Buffer): Buffer {
  const text = arg.toString();
  if (!/^-?\d+$/.test(text)) return encode.error('ERR value is not an integer or out of range');
  const db = Number(text);
  if (db < 0 || db >= s.ctx.dbCount()) return encode.error('ERR DB index is out of range');
  s.db = db;
  return encode.OK;
}

export function handleConnectionCommand(s: ClientSession, name: string, args: Buffer[]): Buffer | Promise<Buffer> {
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
      s.lanes.proto = 2;
      s.replyMode = 'on';
      s.authenticated = !s.ctx.config.requirepass;
      return encode.simple('RESET');
    default:
      return encode.error(`ERR unknown command '${name}'`);
  }
}

/**
 * Replication commands the proxy answers itself, in Redis's formats: SLAVEOF/REPLICAOF, ROLE,
 * INFO (the node's sections with its own Replication section replaced by the proxy's, plus
 * `# Proxy`), and SYNCPROXY HELLO/STATUS (discovery for replicas, the operator's sync status).
 */
import { describeProfile } from '../backend/node-profile';
import { SyncProxyError, describeError, oneLine } from '../errors';
import * as encode from '../resp/encode';
import { SYNC_PROTOCOL_VERSION } from '../source/types';
import type { ClientSession } from './client-session';

function slaveof(s: ClientSession, args: Buffer[]): Buffer | Promise<Buffer> {
  const name = args[0].toString().toLowerCase();
  if (args.length !== 3 && args.length !== 4) return encode.error(`ERR wrong number of arguments for '${name}' command`);
  const host = args[1].toString();
  const portText = args[2].toString();
  if (host.toLowerCase() === 'no' && portText.toLowerCase() === 'one' && args.length === 3) {
    return s.ctx.replication.noOne().then(() => encode.OK);
  }
  if (args.length === 4 && args[3].toString().toLowerCase() !== 'force') return encode.error('ERR syntax error');
  const port = /^\d+$/.test(portText) ? Number(portText) : NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535) return encode.error('ERR Invalid master port');
  if (host === '' || /[\s]/.test(host)) return encode.error('ERR Invalid master host');
  return s.ctx.replication.slaveof(host, port, args.length === 4).then(
    (result) => (result === 'already' ? encode.simple('OK Already connected to specified master') : encode.OK),
    (err) => encode.error(`ERR ${err instanceof SyncProxyError ? describeError(err) : String(err)}`),
  );
}

function syncproxy(s: ClientSession, args: Buffer[]): Buffer | Promise<Buffer> {
  const sub = args[1].toString().toLowerCase();
  switch (sub) {
    case 'hello':
      return encode.array([
        'name', 'pika-sync-proxy', 'version', s.ctx.version, 'protocol', SYNC_PROTOCOL_VERSION,
        'sync_port', s.ctx.syncPort(), 'run_id', s.ctx.runId, 'role', s.ctx.replication.role,
      ]);
    case 'status': {
      // The proxy's own probe of its node, for a master too (a replica's applier probes again).
      const own = s.ctx.nodeProfile();
      const profile = own ? describeProfile(own) : null;
      if (args[2]?.toString().toLowerCase() === 'json') return encode.bulk(JSON.stringify({ proxyNodeProfile: profile, ...s.ctx.replication.status() }));
      return encode.bulk(`proxyNodeProfile: ${profile ?? 'not probed yet'}\n${s.ctx.replication.statusText()}`);
    }
    case 'verify':
      return s.ctx.replication.verify().then(
        (r) => encode.bulk([
          `result: ${r.differingKeys > 0 ? 'mismatch' : 'ok'}`, `log_offset: ${r.logOffset}`, `snapshot_id: ${r.snapshotId}`, `keys: ${r.keys}`,
          `differing_ranges: ${r.differingRanges}/${r.ranges}`, `mismatched_keys: ${r.differingKeys}`, `duration_ms: ${r.durationMs}`,
          ...r.differences.map((d) => `difference: db ${d.db} ${JSON.stringify(d.key)}: ${d.problem}`),
        ].join('\n')),
        (err) => encode.error(`ERR ${oneLine(describeError(err))}`),
      );
    default:
      return encode.error(`ERR unknown SYNCPROXY subcommand '${sub}'. Try SYNCPROXY HELLO | STATUS [JSON] | VERIFY`);
  }
}

const LOCAL_SECTIONS = new Set(['replication', 'proxy']);
const ALL_SECTIONS = new Set(['all', 'everything', 'default']);

function info(s: ClientSession, args: Buffer[], raw: Buffer): Buffer | Promise<Buffer> {
  const sections = args.slice(1).map((a) => a.toString().toLowerCase());
  const wantsAll = sections.length === 0 || sections.some((x) => ALL_SECTIONS.has(x));
  const local = (): string => {
    let text = '';
    if (wantsAll || sections.includes('replication')) text += s.ctx.replication.infoReplication(s.ctx.masterView());
    if (wantsAll || sections.includes('proxy')) text += `${text ? '\r\n' : ''}${s.ctx.proxyInfo()}`;
    return text;
  };
  if (!wantsAll && sections.every((x) => LOCAL_SECTIONS.has(x))) return encode.bulk(local());
  return new Promise((resolve) => {
    s.ctx.path.send(s.db, raw, (reply, err) => {
      let nodeText = '';
      // A bulk, or for a RESP3 client the verbatim string `=<len>\r\ntxt:<text>\r\n`.
      if (reply && (reply.type === 36 || reply.type === 61)) {
        const body = reply.raw.toString('utf8');
        nodeText = body.slice(body.indexOf('\r\n') + 2 + (reply.type === 61 ? 4 : 0), body.length - 2);
      } else {
        nodeText = `# Backend\r\nbackend_error:${(err ? err.message : reply?.raw.toString().trim() ?? 'no reply').replace(/[\r\n]/g, ' ')}\r\n`;
      }
      // Blocking pops wait in the proxy, not on the node: the Clients section counts them.
      const blocked = s.ctx.blocked.count;
      if (blocked > 0) nodeText = nodeText.replace(/^blocked_clients:(\d+)/m, (_m, n: string) => `blocked_clients:${Number(n) + blocked}`);
      const withoutReplication = nodeText
        .split(/\r\n(?=# )/)
        .filter((section) => !section.startsWith('# Replication'))
        .join('\r\n')
        .replace(/(\r\n)*$/, '\r\n');
      resolve(encode.bulk(`${withoutReplication}\r\n${local()}`));
    }, s.lanes);
  });
}

export function handleReplicationCommand(s: ClientSession, name: string, args: Buffer[], raw: Buffer): Buffer | Promise<Buffer> {
  switch (name) {
    case 'slaveof':
    case 'replicaof':
      return slaveof(s, args);
    case 'role':
      return encode.encodeValue(s.ctx.replication.roleReply(s.ctx.masterView()));
    case 'syncproxy':
      return syncproxy(s, args);
    case 'info':
      return info(s, args, raw);
    case 'wait':
      // Replicas of this proxy acknowledge through the sync stream, not the node's WAIT.
      return encode.integer(0);
    default:
      return encode.error(`ERR '${name}' is not supported through pika-sync-proxy: replicas attach with SLAVEOF to a proxy`);
  }
}

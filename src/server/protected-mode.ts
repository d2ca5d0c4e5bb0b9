/**
 * Protected mode, as Redis has it: a proxy started without --requirepass serves only loopback
 * clients (127.0.0.0/8, ::1, ::ffff:127.x.x.x), on the RESP port and on the gRPC sync port (which
 * serves the whole dataset). Anyone else is told why and how to fix it: on RESP a `-DENIED` line,
 * then the connection is closed; on gRPC a PROTECTED_MODE error (PERMISSION_DENIED).
 * `--protected-mode no` turns it off; a password makes it moot.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config';

export const PROTECTED_MODE_MESSAGE =
  'pika-sync-proxy is running in protected mode because no --requirepass is set and it listens on a non-loopback address. ' +
  'In this mode only loopback clients (127.0.0.1, ::1) are served, on the RESP port and on the sync port. ' +
  'To serve other clients: set --requirepass <password> (clients AUTH with it, replicas use it as --masterauth), ' +
  'or start with --protected-mode no if every host that can reach this address is trusted, ' +
  'or bind to 127.0.0.1 (--bind 127.0.0.1) to accept local clients only.';

/** The RESP line a refused client gets (Redis's code DENIED). */
export const PROTECTED_MODE_REPLY = `-DENIED ${PROTECTED_MODE_MESSAGE}\r\n`;

/** A refused socket gets this long to read the reply and close before it is destroyed. */
const REFUSED_LINGER_MS = 2000;

/** True for 127.0.0.0/8, ::1 and IPv4-mapped 127.x addresses; false for anything else or undefined. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.toLowerCase().replace(/^\[|\]$/g, '');
  if (net.isIPv4(a)) return a.startsWith('127.');
  if (!net.isIPv6(a)) return false;
  if (a === '::1' || a === '0:0:0:0:0:0:0:1') return true;
  const mapped = /^(?:0:0:0:0:0|:):ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (mapped) return mapped[1].startsWith('127.');
  const hexMapped = /^(?:0:0:0:0:0|:):ffff:([0-9a-f]{1,4}):[0-9a-f]{1,4}$/.exec(a);
  return hexMapped !== null && parseInt(hexMapped[1], 16) >> 8 === 127;
}

/** A bind address only loopback clients can reach. Host names other than localhost count as open. */
export function isLoopbackBind(bind: string): boolean {
  return bind.toLowerCase() === 'localhost' || isLoopbackAddress(bind);
}

/** The host part of a grpc-js peer string (`1.2.3.4:5678`, `::ffff:1.2.3.4:5678`, `[::1]:5678`). */
export function peerAddress(peer: string): string {
  const m = /^(.*):(\d+)$/.exec(peer);
  return (m ? m[1] : peer).replace(/^\[|\]$/g, '');
}

export type Protection = 'password' | 'protected-mode' | 'none';

/** Decides, for one proxy's configuration, which clients are served. */
export class ClientGuard {
  readonly protection: Protection;
  private readonly bind: string;

  constructor(config: Pick<Readonly<Config>, 'requirepass' | 'protectedMode' | 'bind'>) {
    this.protection = config.requirepass ? 'password' : config.protectedMode ? 'protected-mode' : 'none';
    this.bind = config.bind;
  }

  /** Whether a client from `remoteAddress` is served (only protected mode refuses anyone). */
  allows(remoteAddress: string | undefined): boolean {
    return this.protection !== 'protected-mode' || isLoopbackAddress(remoteAddress);
  }

  /** The start-up line saying which protection is on (a warning when there is none on an open bind). */
  logProtection(logger: Logger): void {
    const bind = this.bind;
    if (this.protection === 'password') logger.info({ protection: 'password', bind }, 'clients and replicas must authenticate (--requirepass)');
    else if (this.protection === 'protected-mode') {
      logger.info({ protection: 'protected-mode', bind }, 'protected mode: no --requirepass, so only loopback clients are served on the RESP and sync ports');
    } else if (isLoopbackBind(bind)) logger.info({ protection: 'none', bind }, 'no password and protected mode off; listening on loopback only');
    else {
      logger.warn(
        { protection: 'none', bind },
        'NO PROTECTION: --protected-mode no and no --requirepass on a non-loopback bind: anyone who can reach this address can read and write the data and copy the whole dataset from the sync port',
      );
    }
  }
}

/** Tells a refused RESP client why, then closes (what the client sends meanwhile is discarded). */
export function refuseProtected(socket: net.Socket): void {
  socket.on('error', () => undefined);
  socket.resume();
  socket.end(PROTECTED_MODE_REPLY);
  setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
}

/**
 * The operator's HTTP port (--metrics-port, --metrics-bind): `/metrics` for Prometheus,
 * `/healthz` for a liveness probe, `/readyz` for a readiness probe (a load balancer or
 * Kubernetes sends reads only to a ready proxy). GET and HEAD only; anything else 405, other
 * paths 404. Nothing here changes the proxy: it reads.
 *
 * Why health and readiness differ: a proxy whose node link just dropped is alive (it reconnects
 * by itself, NodeConnection) and must not be restarted for it, but it cannot serve, so it is not
 * ready. Only a link down for longer than NODE_DOWN_UNHEALTHY_MS — several reconnect attempts at
 * the reconnect backoff's 2 s cap — or a stopping proxy is unhealthy.
 */
import http from 'node:http';
import type net from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

/** The node link may be down this long (reconnecting) before /healthz answers 503. */
export const NODE_DOWN_UNHEALTHY_MS = 5000;

/** What /healthz and /readyz look at (proxy.ts hands in the live objects). */
export interface HealthSources {
  node: { readonly isUp: boolean; readonly downSinceMs: number | undefined; readonly address: string };
  role(): 'master' | 'replica';
  /** The replication manager's read gate: null = reads served, else the `MASTERDOWN ...` text. */
  readGate(): string | null;
  stopping(): boolean;
}

export interface Verdict {
  status: 200 | 503;
  body: string;
}

export function health(src: HealthSources, now = Date.now()): Verdict {
  if (src.stopping()) return { status: 503, body: 'stopping' };
  const down = src.node.downSinceMs;
  if (!src.node.isUp && down !== undefined && now - down > NODE_DOWN_UNHEALTHY_MS) {
    return { status: 503, body: `node link to ${src.node.address} down for ${Math.floor((now - down) / 1000)} s (unhealthy after ${NODE_DOWN_UNHEALTHY_MS / 1000} s)` };
  }
  return { status: 200, body: 'ok' };
}

/** Ready = clients get answers: node link up, and on a replica the read gate open. */
export function readiness(src: HealthSources): Verdict {
  if (src.stopping()) return { status: 503, body: 'stopping' };
  if (!src.node.isUp) return { status: 503, body: `node link to ${src.node.address} is down` };
  const gate = src.role() === 'replica' ? src.readGate() : null;
  return gate === null ? { status: 200, body: 'ok' } : { status: 503, body: gate };
}

export class MetricsServer {
  private readonly server: http.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly registry: Registry, private readonly sources: HealthSources, private readonly logger: Logger) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    // A scraper's keep-alive connection must not hold stop() up.
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  /** Listens; resolves with the bound port (port 0 = any free port). */
  listen(port: number, bind: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, bind, () => {
        this.server.off('error', reject);
        this.server.on('error', (err) => this.logger.error({ err: err.message }, 'metrics listener error'));
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return this.send(res, req, 405, 'text/plain; charset=utf-8', 'method not allowed: GET or HEAD\n', { Allow: 'GET, HEAD' });
    const path = (req.url ?? '/').split('?')[0];
    try {
      switch (path) {
        case '/metrics':
          return this.send(res, req, 200, this.registry.contentType, await this.registry.metrics());
        case '/healthz': {
          const v = health(this.sources);
          return this.send(res, req, v.status, 'text/plain; charset=utf-8', `${v.body}\n`);
        }
        case '/readyz': {
          const v = readiness(this.sources);
          return this.send(res, req, v.status, 'text/plain; charset=utf-8', `${v.body}\n`);
        }
        default:
          return this.send(res, req, 404, 'text/plain; charset=utf-8', 'not found: /metrics, /healthz, /readyz\n');
      }
    } catch (err) {
      this.logger.error({ err: (err as Error).message, path }, 'metrics request failed');
      return this.send(res, req, 500, 'text/plain; charset=utf-8', `${(err as Error).message}\n`);
    }
  }

  private send(res: http.ServerResponse, req: http.IncomingMessage, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...headers });
    res.end(req.method === 'HEAD' ? undefined : body);
  }
}

/**
 * Free TCP ports for the servers tests start, picked below the kernel's ephemeral range (32768+;
 * /proc/sys/net/ipv4/ip_local_port_range). A port the kernel hands out (bind to 0) is one of its
 * ephemeral ports: between our check and the server's bind, an outgoing connection may take it as
 * its local port, and the server then fails to start. Below that range only the servers we start
 * bind, one after another, each checking first.
 *
 * Two disjoint ranges: Pika nodes take PORT in [PIKA_PORT_LOW, PIKA_PORT_HIGH) and also bind
 * PORT+1000, +2000 and +10001 (up to 26 000; pika-server.ts), everything else takes its port from
 * [LOW, HIGH). So a port a Pika node needs again at its restart is never handed to another server
 * while it is down.
 */
import net from 'node:net';

export const PIKA_PORT_LOW = 10_000;
export const PIKA_PORT_HIGH = 16_000;
const LOW = PIKA_PORT_HIGH + 10_001;
const HIGH = 32_768;

/** True when `port` can be bound on every interface now (a loopback listener counts as taken). */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '0.0.0.0', () => srv.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (await portFree(port)) return port;
  }
  throw new Error(`no free port in ${LOW}-${HIGH - 1} after 200 tries`);
}

/** Resolves when something accepts TCP connections on host:port, rejects after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs = 10_000, host = '127.0.0.1'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, host);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

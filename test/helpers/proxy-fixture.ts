/** An in-process proxy (real listener, real node connection) in front of a test node (redis-server or Pika). */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { silentLogger } from '../../src/logger';
import { ProxyHandle, startProxy } from '../../src/server/proxy';
import type { TestNode } from './nodes';

export interface TestProxy {
  port: number;
  syncPort: number;
  dataDir: string;
  handle: ProxyHandle;
  stop(): Promise<void>;
}

export async function startTestProxy(node: Pick<TestNode, 'address'>, flags: string[] = []): Promise<TestProxy> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'psp-proxy-'));
  const config = loadConfig(['--port', '0', '--sync-port', '0', '--backend', node.address, '--data-dir', dataDir, '--log-level', 'silent', ...flags], {});
  const handle = await startProxy(config, silentLogger());
  // Wait until the ordered connection is up so the first command does not race the connect.
  const { RespClient } = await import('./resp-client');
  const probe = await RespClient.connect(handle.port);
  const pass = flags.indexOf('--requirepass');
  if (pass >= 0) await probe.call('AUTH', flags[pass + 1]);
  const deadline = Date.now() + 5000;
  for (;;) {
    const info = await probe.text('INFO', 'proxy');
    if (info.includes('backend_link_status:up') || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  probe.close();
  return {
    port: handle.port,
    syncPort: handle.syncPort,
    dataDir,
    handle,
    stop: async () => {
      await handle.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A node and a proxy in front of it for the enclosing describe block: started in `before`,
 * stopped in `after`; read `node` and `proxy` inside the tests.
 */
export function nodeBehindProxy<N extends Pick<TestNode, 'address' | 'port' | 'stop'>>(start: () => Promise<N>, flags: string[] = []): { readonly node: N; readonly proxy: TestProxy } {
  const fixture = {} as { node: N; proxy: TestProxy };
  before(async () => {
    fixture.node = await start();
    fixture.proxy = await startTestProxy(fixture.node, flags);
  });
  after(async () => {
    await fixture.proxy?.stop();
    await fixture.node?.stop();
  });
  return fixture;
}

/** Configuration: one validation point, errors that name the flag, precedence of the sources. */
import { expect } from 'chai';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, parseHostPort, parseSize } from '../src/config';
import { SyncProxyError } from '../src/errors';

function configError(argv: string[], env: NodeJS.ProcessEnv = {}): SyncProxyError {
  try {
    loadConfig(argv, env);
  } catch (err) {
    return err as SyncProxyError;
  }
  throw new Error('expected a configuration error');
}

describe('config', () => {
  it('parses flags into a frozen config with defaults', () => {
    const c = loadConfig(['--port', '7000', '--backend', '10.0.0.1:9221', '--sync-throttle', '50mb', '--replica-serve-stale-data', 'no'], {});
    expect(c.port).to.equal(7000);
    expect(c.syncPort).to.equal(17000);
    expect(c.backend).to.deep.equal({ host: '10.0.0.1', port: 9221 });
    expect(c.sync.throttle).to.equal(50 * 1024 * 1024);
    expect(c.sync.serveStaleData).to.equal(false);
    expect(Object.isFrozen(c) && Object.isFrozen(c.sync)).to.equal(true);
  });

  it('names the flag in every error', () => {
    expect(configError(['--port', '70000']).message).to.equal('--port: must be at most 65535, got 70000');
    expect(configError(['--backend', 'nohost']).message).to.match(/^--backend: expected host:port/);
    expect(configError(['--sync-chunk-size', 'lots']).message).to.match(/^--sync-chunk-size: expected a size/);
    expect(configError(['--log-level', 'loud']).message).to.match(/^--log-level: must be one of/);
    expect(configError(['--port', '7000', '--sync-port', '7000']).message).to.equal('--sync-port: must differ from --port');
    expect(configError(['--tls-cert', '/x.pem']).message).to.match(/^--tls-key: --tls-cert and --tls-key go together/);
    expect(configError(['--no-such-flag', '1']).code).to.equal('CONFIG_INVALID');
  });

  it('reads a JSON config file and environment variables, flags winning', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-config-'));
    const file = path.join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ port: 7100, 'sync-workers': 2, backend: '127.0.0.1:1111' }));
    const c = loadConfig(['--config', file, '--backend', '127.0.0.1:3333'], { PSP_SYNC_WORKERS: '8', PSP_BACKEND: '127.0.0.1:2222' });
    expect(c.port).to.equal(7100);
    expect(c.sync.workers).to.equal(8);
    expect(c.backend.port).to.equal(3333);
    writeFileSync(file, JSON.stringify({ prot: 1 }));
    expect(configError(['--config', file]).message).to.match(/unknown setting 'prot'/);
  });

  it('--node-keepalive-ms: 0 (learn the node timeout) by default, else an interval of at least 100 ms', () => {
    expect(loadConfig([], {}).nodeKeepAliveMs).to.equal(0);
    expect(loadConfig(['--node-keepalive-ms', '15000'], {}).nodeKeepAliveMs).to.equal(15000);
    expect(loadConfig([], { PSP_NODE_KEEPALIVE_MS: '500' }).nodeKeepAliveMs).to.equal(500);
    expect(configError(['--node-keepalive-ms', '50']).message).to.equal("--node-keepalive-ms: must be 0 (learn the node's timeout) or at least 100, got 50");
    expect(configError(['--node-keepalive-ms=-1']).message).to.equal('--node-keepalive-ms: must be at least 0, got -1');
    expect(configError(['--node-keepalive-ms', 'often']).message).to.match(/^--node-keepalive-ms: expected an integer/);
  });

  it('--load-connections: auto (0, chosen by the node kind) by default, else 1-64', () => {
    expect(loadConfig([], {}).loadConnections).to.equal(0);
    expect(loadConfig(['--load-connections', 'auto'], {}).loadConnections).to.equal(0);
    expect(loadConfig(['--load-connections', '4'], {}).loadConnections).to.equal(4);
    expect(loadConfig([], { PSP_LOAD_CONNECTIONS: '1' }).loadConnections).to.equal(1);
    expect(configError(['--load-connections=-1']).message).to.equal("--load-connections: expected auto or a number of connections from 1 to 64, got '-1'");
    expect(configError(['--load-connections', '65']).message).to.match(/^--load-connections: expected auto/);
    expect(configError(['--load-connections', 'many']).message).to.match(/^--load-connections: expected auto/);
  });

  it('parses sizes and host:port strictly', () => {
    expect(parseSize('4mb')).to.equal(4 * 1024 * 1024);
    expect(parseSize('64KiB')).to.equal(65536);
    expect(parseSize('12 parsecs')).to.equal(undefined);
    expect(parseHostPort('[::1]:6379')).to.deep.equal({ host: '::1', port: 6379 });
    expect(parseHostPort('h:0')).to.equal(undefined);
  });
});

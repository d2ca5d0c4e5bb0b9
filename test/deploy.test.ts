/**
 * deploy/: the Prometheus alerting rules pass `promtool check rules` and their unit tests
 * (`promtool test rules`: series that fire each alert and series that must not), the systemd
 * template unit passes `systemd-analyze verify`, and the example config is a valid proxy config.
 *
 * promtool comes with Debian's prometheus package and systemd-analyze with systemd; .ci/run
 * installs whichever is missing, and without them these tests fail (never skip).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config';

/** dist/test/deploy.test.js -> the repository root */
const REPO_ROOT = path.resolve(__dirname, '../..');
const RULES = path.join(REPO_ROOT, 'deploy/prometheus/pika-sync-proxy.rules.yml');
const RULES_TEST = path.join(REPO_ROOT, 'deploy/prometheus/pika-sync-proxy.rules.test.yml');
const UNIT = path.join(REPO_ROOT, 'deploy/systemd/pika-sync-proxy@.service');
const EXAMPLE_CONFIG = path.join(REPO_ROOT, 'deploy/systemd/example.json');

const EXPECTED_ALERTS = [
  'PikaSyncProxyDown',
  'PikaSyncProxySyncFailed',
  'PikaSyncProxyReplicaNotConfirmed',
  'PikaSyncProxyReplicaLagSeconds',
  'PikaSyncProxyReplicaLagOffsets',
  'PikaSyncProxyNodeLinkDown',
  'PikaSyncProxyWriteLogNearBound',
];

function has(command: string): boolean {
  return spawnSync(command, ['--version'], { encoding: 'utf8' }).status === 0;
}

describe('deploy (Prometheus rules, systemd unit, example config)', function () {
  this.timeout(60_000);

  describe('prometheus rules', function () {
    before(function () {
      if (!has('promtool')) throw new Error('promtool not found (Debian package prometheus; .ci/run installs it)');
    });

    it(`promtool check rules: valid, ${EXPECTED_ALERTS.length} rules, every alert with severity, summary and description`, () => {
      const r = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
      expect(r.status, r.stdout + r.stderr).to.equal(0);
      expect(r.stdout).to.include(`SUCCESS: ${EXPECTED_ALERTS.length} rules found`);
      const text = readFileSync(RULES, 'utf8');
      const alerts = [...text.matchAll(/^\s+- alert: (\S+)$/gm)].map((m) => m[1]);
      expect(alerts).to.deep.equal(EXPECTED_ALERTS);
      for (const key of ['severity:', 'summary:', 'description:', 'expr:', 'for:']) {
        expect(text.split(key).length - 1, key).to.equal(EXPECTED_ALERTS.length);
      }
    });

    it('promtool test rules: each alert fires on its series and stays silent on the others', () => {
      const r = spawnSync('promtool', ['test', 'rules', RULES_TEST], { encoding: 'utf8', cwd: REPO_ROOT });
      expect(r.status, r.stdout + r.stderr).to.equal(0);
      expect(r.stdout).to.include('SUCCESS');
      // every alert has a case where it fires
      const tests = readFileSync(RULES_TEST, 'utf8');
      for (const alert of EXPECTED_ALERTS) expect(tests, alert).to.match(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`));
    });
  });

  it('systemd-analyze verify accepts the template unit (instance 7379)', function () {
    if (!has('systemd-analyze')) throw new Error('systemd-analyze not found (Debian package systemd; .ci/run installs it)');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-unit-'));
    try {
      // verify checks that ExecStart's program exists: point it at this build's CLI.
      const unit = readFileSync(UNIT, 'utf8');
      expect(unit).to.include('ExecStart=/usr/local/bin/pika-sync-proxy --config');
      const instance = path.join(dir, 'pika-sync-proxy@7379.service');
      writeFileSync(instance, unit.replace('/usr/local/bin/pika-sync-proxy', path.join(REPO_ROOT, 'dist/src/main.js')));
      const r = spawnSync('systemd-analyze', ['verify', instance], { encoding: 'utf8' });
      expect(r.status, r.stdout + r.stderr).to.equal(0);
      expect(r.stdout + r.stderr, 'warnings about the unit (unknown keys, bad values)').to.not.include(instance);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the template unit: graceful stop bounded above --shutdown-timeout-ms, hardening, state directory', () => {
    const unit = readFileSync(UNIT, 'utf8');
    const setting = (key: string): string | undefined => unit.match(new RegExp(`^${key}=(.*)$`, 'm'))?.[1];
    expect(setting('KillSignal')).to.equal('SIGTERM');
    const stopSec = Number(setting('TimeoutStopSec')?.replace(/s$/, ''));
    const config = loadConfig(['--backend', '127.0.0.1:1'], {});
    expect(stopSec * 1000).to.be.greaterThan(config.shutdownTimeoutMs);
    expect(setting('Restart')).to.equal('on-failure');
    expect(setting('StateDirectory')).to.equal('pika-sync-proxy/%i');
    for (const [key, value] of Object.entries({ NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes', DynamicUser: 'yes', RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX' })) {
      expect(setting(key), key).to.equal(value);
    }
    expect(Number(setting('LimitNOFILE'))).to.be.greaterThan(config.maxClients);
  });

  it('example.json is a valid config whose data-dir is the unit state directory of its port', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-example-'));
    try {
      const file = path.join(dir, '7379.json');
      copyFileSync(EXAMPLE_CONFIG, file);
      const config = loadConfig(['--config', file], {});
      expect(config.port).to.equal(7379);
      expect(config.dataDir).to.equal(`/var/lib/pika-sync-proxy/${config.port}`);
      expect(config.metrics.port).to.be.greaterThan(0);
      expect(config.requirepass, 'requirepass placeholder').to.be.a('string').and.not.equal('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

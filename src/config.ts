/**
 * Configuration, validated in one place. Sources, lowest precedence first: built-in defaults,
 * a JSON config file (--config), environment variables (PSP_<FLAG_NAME>, e.g. PSP_BACKEND),
 * command-line flags. The result is frozen; every error names the flag it is about.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MIN_INTERVAL_MS } from './backend/keep-alive';
import { SyncProxyError } from './errors';

export interface HostPort {
  host: string;
  port: number;
}

export interface Config {
  port: number;
  bind: string;
  backend: HostPort;
  /** gRPC sync listener; 0 picks a free port (tests), reported by SYNCPROXY HELLO. */
  syncPort: number;
  dataDir: string;
  requirepass?: string;
  backendPassword?: string;
  masterauth?: string;
  logLevel: string;
  maxClients: number;
  /** A client whose unsent replies exceed this many bytes is disconnected. */
  clientOutputLimit: number;
  /** PING interval on idle node connections; 0 = a third of the node's `timeout`, learnt at connect. */
  nodeKeepAliveMs: number;
  sync: {
    maxAttempts: number;
    retryBaseMs: number;
    retryMaxDelayMs: number;
    maxTotalMs: number;
    workers: number;
    chunkSize: number;
    /** Bytes per second for the file copy; 0 = unlimited. */
    throttle: number;
    rpcTimeoutMs: number;
    /** How long a replica waits for the master to finish building a snapshot. */
    snapshotWaitMs: number;
    progressIntervalMs: number;
    serveStaleData: boolean;
  };
  snapshot: {
    fileSize: number;
    maxAgeMs: number;
    /** Bound on keys written during one build (copy-on-write tracking); past it the build fails. */
    maxTrackedKeys: number;
  };
  writeLog: {
    maxBytes: number;
    segmentBytes: number;
  };
  /** How expiries reach this proxy's node: learned by probing (auto), or forced. */
  nodeExpiry: 'auto' | 'pexpireat' | 'pexpire';
  /** Lanes to the node (--node-connections); 0 = auto: chosen by the node's kind at start. */
  nodeConnections: number;
  /** Connections a replica loads a snapshot through (--load-connections); 0 = auto, by the node's kind. */
  loadConnections: number;
  /** A streaming replica verifies its node against the master this often; 0 = only on SYNCPROXY VERIFY. */
  verifyIntervalMs: number;
  tls: {
    cert?: string;
    key?: string;
    ca?: string;
  };
  /** HTTP listener for /metrics, /healthz, /readyz; port -1 = off, 0 = any free port (tests). */
  metrics: {
    port: number;
    bind: string;
  };
  /** Without a password, serve only loopback clients (RESP and sync ports), as Redis's protected mode. */
  protectedMode: boolean;
  /** Bound on a graceful stop (SIGTERM/SIGINT); past it the process exits non-zero. */
  shutdownTimeoutMs: number;
}

interface FlagSpec {
  name: string;
  kind: 'int' | 'size' | 'string' | 'hostport' | 'bool' | 'loglevel';
  apply: (c: MutableConfig, v: unknown) => void;
  min?: number;
  max?: number;
  help: string;
}

type MutableConfig = { -readonly [K in keyof Config]: Config[K] };

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const MIB = 1024 * 1024;

export function defaultConfig(): MutableConfig {
  return {
    port: 7379,
    bind: '127.0.0.1',
    backend: { host: '127.0.0.1', port: 6379 },
    syncPort: -1, // resolved below: port + 10000 unless given
    dataDir: './pika-sync-proxy-data',
    logLevel: 'info',
    maxClients: 10_000,
    clientOutputLimit: 64 * MIB,
    nodeKeepAliveMs: 0,
    sync: {
      maxAttempts: 5,
      retryBaseMs: 500,
      retryMaxDelayMs: 15_000,
      maxTotalMs: 30 * 60_000,
      workers: 4,
      chunkSize: 4 * MIB,
      throttle: 0,
      rpcTimeoutMs: 30_000,
      snapshotWaitMs: 30 * 60_000,
      progressIntervalMs: 2_000,
      serveStaleData: true,
    },
    snapshot: { fileSize: 16 * MIB, maxAgeMs: 10 * 60_000, maxTrackedKeys: 1_000_000 },
    writeLog: { maxBytes: 1024 * MIB, segmentBytes: 64 * MIB },
    nodeExpiry: 'auto',
    nodeConnections: 0,
    loadConnections: 0,
    verifyIntervalMs: 0,
    tls: {},
    metrics: { port: -1, bind: '127.0.0.1' },
    protectedMode: true,
    shutdownTimeoutMs: 5_000,
  };
}

export const FLAGS: readonly FlagSpec[] = [
  { name: 'port', kind: 'int', min: 0, max: 65535, help: 'RESP listen port (0 = any free port)', apply: (c, v) => (c.port = v as number) },
  { name: 'bind', kind: 'string', help: 'RESP and sync listen address', apply: (c, v) => (c.bind = v as string) },
  { name: 'backend', kind: 'hostport', help: 'the node behind the proxy, host:port', apply: (c, v) => (c.backend = v as HostPort) },
  { name: 'sync-port', kind: 'int', min: 0, max: 65535, help: 'gRPC sync listen port (default port+10000; 0 = any free port)', apply: (c, v) => (c.syncPort = v as number) },
  { name: 'data-dir', kind: 'string', help: 'snapshots, write log, replica staging and progress', apply: (c, v) => (c.dataDir = v as string) },
  { name: 'requirepass', kind: 'string', help: "the proxy's own password (clients AUTH with it; replicas use it as masterauth)", apply: (c, v) => (c.requirepass = v as string) },
  { name: 'backend-password', kind: 'string', help: "the node's password, used by the proxy only", apply: (c, v) => (c.backendPassword = v as string) },
  { name: 'masterauth', kind: 'string', help: "the master proxy's requirepass, used when replicating", apply: (c, v) => (c.masterauth = v as string) },
  { name: 'log-level', kind: 'loglevel', help: LOG_LEVELS.join('|'), apply: (c, v) => (c.logLevel = v as string) },
  { name: 'max-clients', kind: 'int', min: 1, max: 1_000_000, help: 'client connections accepted at once', apply: (c, v) => (c.maxClients = v as number) },
  { name: 'client-output-limit', kind: 'size', min: 64 * 1024, help: 'pending reply bytes before a client that does not read is disconnected', apply: (c, v) => (c.clientOutputLimit = v as number) },
  { name: 'node-keepalive-ms', kind: 'int', min: 0, max: 3_600_000, help: "PING interval of the proxy's idle node connections, so the node's idle `timeout` never ends them (0 = a third of the node's timeout, learnt with CONFIG GET timeout; 10000 when the node does not say)", apply: (c, v) => (c.nodeKeepAliveMs = v as number) },
  { name: 'sync-max-attempts', kind: 'int', min: 1, max: 1000, help: 'full-sync attempts before the state becomes failed', apply: (c, v) => (c.sync.maxAttempts = v as number) },
  { name: 'sync-retry-base-ms', kind: 'int', min: 1, max: 3_600_000, help: 'first backoff delay; doubles per attempt, with jitter', apply: (c, v) => (c.sync.retryBaseMs = v as number) },
  { name: 'sync-retry-max-ms', kind: 'int', min: 1, max: 3_600_000, help: 'largest backoff delay', apply: (c, v) => (c.sync.retryMaxDelayMs = v as number) },
  { name: 'sync-max-total-ms', kind: 'int', min: 1000, max: 7 * 24 * 3_600_000, help: 'total time budget of one full sync including retries', apply: (c, v) => (c.sync.maxTotalMs = v as number) },
  { name: 'sync-workers', kind: 'int', min: 1, max: 64, help: 'parallel file-copy workers', apply: (c, v) => (c.sync.workers = v as number) },
  { name: 'sync-chunk-size', kind: 'size', min: 4096, max: 64 * MIB, help: 'bytes per file chunk request', apply: (c, v) => (c.sync.chunkSize = v as number) },
  { name: 'sync-throttle', kind: 'size', min: 0, help: 'copy bandwidth limit in bytes/s (0 = unlimited)', apply: (c, v) => (c.sync.throttle = v as number) },
  { name: 'sync-rpc-timeout-ms', kind: 'int', min: 100, max: 3_600_000, help: 'deadline of one sync RPC', apply: (c, v) => (c.sync.rpcTimeoutMs = v as number) },
  { name: 'sync-snapshot-wait-ms', kind: 'int', min: 1000, max: 24 * 3_600_000, help: "how long one GetMeta waits for the master's snapshot build to make progress (its first file, each next file, or the end)", apply: (c, v) => (c.sync.snapshotWaitMs = v as number) },
  { name: 'sync-progress-interval-ms', kind: 'int', min: 100, max: 3_600_000, help: 'interval of the progress log line during a sync', apply: (c, v) => (c.sync.progressIntervalMs = v as number) },
  { name: 'replica-serve-stale-data', kind: 'bool', help: 'after a confirmed sync, serve reads while the master link is down (yes|no)', apply: (c, v) => (c.sync.serveStaleData = v as boolean) },
  { name: 'snapshot-file-size', kind: 'size', min: 64 * 1024, max: 4096 * MIB, help: 'upper bound of one snapshot file (a replica starts copying when the first one is finished)', apply: (c, v) => (c.snapshot.fileSize = v as number) },
  { name: 'snapshot-max-age-ms', kind: 'int', min: 0, max: 7 * 24 * 3_600_000, help: 'a snapshot older than this is rebuilt for a new replica', apply: (c, v) => (c.snapshot.maxAgeMs = v as number) },
  { name: 'snapshot-max-tracked-keys', kind: 'int', min: 1000, max: 100_000_000, help: 'keys written during one snapshot build before it fails', apply: (c, v) => (c.snapshot.maxTrackedKeys = v as number) },
  { name: 'write-log-max-bytes', kind: 'size', min: 1 * MIB, help: 'write log size kept on disk; older segments are removed', apply: (c, v) => (c.writeLog.maxBytes = v as number) },
  { name: 'write-log-segment-bytes', kind: 'size', min: 64 * 1024, help: 'size of one write log segment file', apply: (c, v) => (c.writeLog.segmentBytes = v as number) },
  {
    name: 'node-expiry', kind: 'string', help: "how expiries are applied to the node: auto (probed at link-up), pexpireat or pexpire (time remaining); forcing pexpireat on Pika 4.0.1 loses every key with a TTL, which the content proof then reports",
    apply: (c, v) => {
      if (v !== 'auto' && v !== 'pexpireat' && v !== 'pexpire') throw invalid('node-expiry', `expected auto, pexpireat or pexpire, got '${String(v)}'`);
      c.nodeExpiry = v;
    },
  },
  {
    name: 'node-connections', kind: 'string', help: 'connections ("lanes") from the data path to the node: auto (8 for Pika, whose worker threads run connections in parallel; 1 for single-threaded Redis and the rest; a node down at the start gets its lanes once it is up) or 1-64; one key always takes one lane, see README "Lanes"',
    apply: (c, v) => (c.nodeConnections = connectionCount('node-connections', v)),
  },
  {
    name: 'load-connections', kind: 'string', help: "connections a replica loads the snapshot through: auto (1: more were slower on Pika 4.0.1 and Redis in our measurements, README, load lanes) or 1-64; one key record always takes one connection, FLUSHALL and the counts wait for all of them",
    apply: (c, v) => (c.loadConnections = connectionCount('load-connections', v)),
  },
  { name: 'verify-interval-ms', kind: 'int', min: 0, max: 7 * 24 * 3_600_000, help: 'a streaming replica compares its node with the master this often (0 = only on SYNCPROXY VERIFY)', apply: (c, v) => (c.verifyIntervalMs = v as number) },
  { name: 'metrics-port', kind: 'int', min: -1, max: 65535, help: 'HTTP port for /metrics (Prometheus), /healthz and /readyz (-1 = off, the default; 0 = any free port)', apply: (c, v) => (c.metrics.port = v as number) },
  { name: 'metrics-bind', kind: 'string', help: 'listen address of the metrics port (default 127.0.0.1)', apply: (c, v) => (c.metrics.bind = v as string) },
  { name: 'protected-mode', kind: 'bool', help: 'without --requirepass, serve only loopback clients on the RESP and sync ports (yes|no, default yes)', apply: (c, v) => (c.protectedMode = v as boolean) },
  { name: 'shutdown-timeout-ms', kind: 'int', min: 100, max: 3_600_000, help: 'bound on a graceful stop after SIGTERM/SIGINT; past it the process exits with status 1 saying what was left (a second signal exits at once)', apply: (c, v) => (c.shutdownTimeoutMs = v as number) },
  { name: 'tls-cert', kind: 'string', help: 'PEM certificate for the sync service (enables TLS)', apply: (c, v) => (c.tls.cert = v as string) },
  { name: 'tls-key', kind: 'string', help: 'PEM private key for the sync service', apply: (c, v) => (c.tls.key = v as string) },
  { name: 'tls-ca', kind: 'string', help: 'PEM CA bundle: replicas verify the master with it; set on a master it requires client certificates', apply: (c, v) => (c.tls.ca = v as string) },
];

/** `auto` (0: chosen by the node's kind once probed) or a number of node connections, 1-64. */
function connectionCount(flag: string, v: unknown): number {
  const n = v === 'auto' ? 0 : /^[0-9]{1,2}$/.test(String(v)) ? Number(v) : NaN;
  if (!(n === 0 || (n >= 1 && n <= 64))) throw invalid(flag, `expected auto or a number of connections from 1 to 64, got '${String(v)}'`);
  return n;
}

function invalid(flag: string, message: string): SyncProxyError {
  return new SyncProxyError('CONFIG_INVALID', `--${flag}: ${message}`, { details: { flag } });
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: MIB, mb: MIB, mib: MIB, g: 1024 * MIB, gb: 1024 * MIB, gib: 1024 * MIB };

export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return undefined;
  const unit = SIZE_UNITS[m[2].toLowerCase()];
  return unit === undefined ? undefined : Math.floor(Number(m[1]) * unit);
}

export function parseHostPort(text: string): HostPort | undefined {
  const m = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(text.trim());
  if (!m || m[1] === '') return undefined;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? { host: m[1], port } : undefined;
}

function convert(spec: FlagSpec, raw: unknown): unknown {
  const text = typeof raw === 'string' ? raw : String(raw);
  switch (spec.kind) {
    case 'string':
      if (text === '') throw invalid(spec.name, 'must not be empty');
      return text;
    case 'loglevel':
      if (!LOG_LEVELS.includes(text)) throw invalid(spec.name, `must be one of ${LOG_LEVELS.join(', ')}`);
      return text;
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      if (/^(yes|true|1|on)$/i.test(text)) return true;
      if (/^(no|false|0|off)$/i.test(text)) return false;
      throw invalid(spec.name, `expected yes or no, got '${text}'`);
    case 'hostport': {
      const hp = parseHostPort(text);
      if (!hp) throw invalid(spec.name, `expected host:port with a port from 1 to 65535, got '${text}'`);
      return hp;
    }
    case 'int':
    case 'size': {
      const n = spec.kind === 'int' ? (/^-?\d+$/.test(text.trim()) ? Number(text) : undefined) : parseSize(text);
      if (n === undefined || !Number.isSafeInteger(n)) throw invalid(spec.name, `expected ${spec.kind === 'size' ? 'a size such as 4mb' : 'an integer'}, got '${text}'`);
      if (spec.min !== undefined && n < spec.min) throw invalid(spec.name, `must be at least ${spec.min}, got ${n}`);
      if (spec.max !== undefined && n > spec.max) throw invalid(spec.name, `must be at most ${spec.max}, got ${n}`);
      return n;
    }
  }
}

/** Builds the frozen config from argv (without node and script), the environment and --config. */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const options: Record<string, { type: 'string' | 'boolean' }> = { config: { type: 'string' }, help: { type: 'boolean' } };
  for (const f of FLAGS) options[f.name] = { type: 'string' };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new SyncProxyError('CONFIG_INVALID', (err as Error).message, { cause: err });
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const config = defaultConfig();

  const configFile = (values.config as string | undefined) ?? env.PSP_CONFIG;
  if (configFile) {
    let fileValues: Record<string, unknown>;
    try {
      fileValues = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new SyncProxyError('CONFIG_INVALID', `--config ${configFile}: ${(err as Error).message}`, { cause: err });
    }
    if (typeof fileValues !== 'object' || fileValues === null || Array.isArray(fileValues)) throw invalid('config', 'the file must hold a JSON object of flag names to values');
    for (const [key, raw] of Object.entries(fileValues)) {
      const spec = FLAGS.find((f) => f.name === key);
      if (!spec) throw invalid('config', `unknown setting '${key}' in ${configFile}`);
      spec.apply(config, convert(spec, raw));
    }
  }
  for (const spec of FLAGS) {
    const envName = `PSP_${spec.name.toUpperCase().replace(/-/g, '_')}`;
    if (env[envName] !== undefined && env[envName] !== '') spec.apply(config, convert(spec, env[envName]));
  }
  for (const spec of FLAGS) {
    const raw = values[spec.name];
    if (raw !== undefined) spec.apply(config, convert(spec, raw));
  }

  if (config.syncPort === -1) {
    if (config.port === 0) config.syncPort = 0;
    else if (config.port + 10000 <= 65535) config.syncPort = config.port + 10000;
    else throw invalid('sync-port', `required when --port ${config.port} + 10000 exceeds 65535`);
  }
  if (config.port !== 0 && config.port === config.syncPort) throw invalid('sync-port', 'must differ from --port');
  if (config.metrics.port > 0 && (config.metrics.port === config.port || config.metrics.port === config.syncPort)) throw invalid('metrics-port', 'must differ from --port and --sync-port');
  if ((config.tls.cert === undefined) !== (config.tls.key === undefined)) throw invalid(config.tls.cert ? 'tls-key' : 'tls-cert', '--tls-cert and --tls-key go together');
  if (config.sync.retryMaxDelayMs < config.sync.retryBaseMs) throw invalid('sync-retry-max-ms', 'must be at least --sync-retry-base-ms');
  if (config.nodeKeepAliveMs > 0 && config.nodeKeepAliveMs < MIN_INTERVAL_MS) throw invalid('node-keepalive-ms', `must be 0 (learn the node's timeout) or at least ${MIN_INTERVAL_MS}, got ${config.nodeKeepAliveMs}`);
  if (config.writeLog.maxBytes < config.writeLog.segmentBytes) throw invalid('write-log-max-bytes', 'must be at least --write-log-segment-bytes');
  config.dataDir = path.resolve(config.dataDir);
  return deepFreeze(config);
}

export function usage(): string {
  const lines = FLAGS.map((f) => `  --${f.name.padEnd(28)} ${f.help}`);
  return [
    'usage: pika-sync-proxy --port <p> --backend <host:port> [flags]',
    '',
    '  --config <file.json>           flags as a JSON object {"port": 7379, ...}; env PSP_<FLAG> also works',
    '  --version                      print the version and exit',
    ...lines,
  ].join('\n');
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value as Record<string, unknown>)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

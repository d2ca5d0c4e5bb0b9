/**
 * The one error catalogue. Every failure in the proxy is a SyncProxyError with a stable `code`,
 * a `retryable` flag taken from this table and an optional `cause` chain. Translation to RESP error
 * lines or gRPC statuses happens only at the edges (server/, sync/), never here.
 *
 * Why a table and not ad-hoc flags: the retry policy decides by code alone, so a code's
 * classification must be the same wherever the error is raised.
 */

export const ERROR_CATALOGUE = {
  // configuration and process
  CONFIG_INVALID: { retryable: false, summary: 'invalid configuration' },
  INTERNAL: { retryable: false, summary: 'internal error' },
  // client side of the proxy
  PROTOCOL_ERROR: { retryable: false, summary: 'malformed RESP from client' },
  // the proxy's own node
  BACKEND_UNAVAILABLE: { retryable: true, summary: 'backend node unavailable' },
  BACKEND_CONNECTION_LOST: { retryable: true, summary: 'backend connection lost' },
  BACKEND_ERROR_REPLY: { retryable: false, summary: 'backend node answered with an error' },
  BACKEND_TIMEOUT: { retryable: true, summary: 'backend node did not answer in time' },
  // talking to a master proxy
  MASTER_UNREACHABLE: { retryable: true, summary: 'master unreachable' },
  MASTER_TIMEOUT: { retryable: true, summary: 'master did not answer in time' },
  MASTER_CONNECTION_LOST: { retryable: true, summary: 'connection to master lost' },
  NOT_A_SYNC_PROXY: { retryable: false, summary: 'master is not a pika-sync-proxy' },
  AUTH_FAILED: { retryable: false, summary: 'authentication refused' },
  PROTECTED_MODE: { retryable: false, summary: 'refused by protected mode: the peer has no --requirepass and serves only loopback clients' },
  PROTOCOL_VERSION_MISMATCH: { retryable: false, summary: 'sync protocol version mismatch' },
  MALFORMED_RESPONSE: { retryable: true, summary: 'malformed response from master' },
  NOT_A_MASTER: { retryable: true, summary: 'the peer is not serving as a master' },
  SELF_REPLICATION: { retryable: false, summary: 'a proxy cannot replicate from itself' },
  // snapshots and files
  SNAPSHOT_BUILDING: { retryable: true, summary: 'master is still building the snapshot' },
  SNAPSHOT_BUILD_FAILED: { retryable: true, summary: 'snapshot build failed' },
  SNAPSHOT_CHANGED: { retryable: true, summary: 'snapshot changed during the copy' },
  SNAPSHOT_NOT_FOUND: { retryable: true, summary: 'snapshot not found' },
  FILE_NOT_IN_MANIFEST: { retryable: false, summary: 'file is not in the snapshot manifest' },
  HOSTILE_FILE_NAME: { retryable: false, summary: 'file name escapes the snapshot directory' },
  INVALID_REQUEST: { retryable: false, summary: 'invalid request' },
  CHECKSUM_MISMATCH: { retryable: true, summary: 'checksum mismatch' },
  SIZE_MISMATCH: { retryable: true, summary: 'file size differs from the manifest' },
  DISK_FULL: { retryable: false, summary: 'no space left on the staging disk' },
  IO_ERROR: { retryable: true, summary: 'file system error' },
  // load, verification and the write log
  LOAD_FAILED: { retryable: true, summary: 'loading the snapshot into the node failed' },
  COUNT_MISMATCH: { retryable: true, summary: 'key counts differ from the manifest' },
  LOG_OFFSET_GONE: { retryable: true, summary: 'offset no longer held in the master write log' },
  LOG_CORRUPT: { retryable: true, summary: 'write log entry failed its checksum' },
  APPLY_FAILED: { retryable: true, summary: 'applying a write-log entry failed' },
  VERIFY_MISMATCH: { retryable: true, summary: "the replica node's content differs from the master's" },
  UNSUPPORTED_DATA: { retryable: false, summary: 'the node holds data this proxy cannot copy exactly' },
  // outcome of the retry policy and of operator actions
  RETRIES_EXHAUSTED: { retryable: false, summary: 'attempts exhausted' },
  SYNC_ABORTED: { retryable: false, summary: 'sync aborted by the operator' },
  UNSUPPORTED_COMMAND: { retryable: false, summary: 'command not supported through the proxy' },
} as const;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export interface ErrorOptions {
  cause?: unknown;
  /** Overrides the catalogue's classification, e.g. a disk error that is known to be transient. */
  retryable?: boolean;
  details?: Record<string, unknown>;
}

export class SyncProxyError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;
  override readonly cause?: unknown;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message);
    this.name = 'SyncProxyError';
    this.code = code;
    this.retryable = options.retryable ?? ERROR_CATALOGUE[code].retryable;
    this.details = options.details ?? {};
    if (options.cause !== undefined) this.cause = options.cause;
  }

  /** `CODE: message` followed by the cause chain, one level per `<-`. */
  describe(): string {
    return describeError(this);
  }
}

export function isSyncProxyError(err: unknown): err is SyncProxyError {
  return err instanceof SyncProxyError;
}

/** Wraps any thrown value into a catalogue error, keeping the original as cause. */
export function toSyncProxyError(err: unknown, fallback: ErrorCode = 'INTERNAL', context?: string): SyncProxyError {
  if (err instanceof SyncProxyError) return err;
  const code = classifySystemError(err) ?? fallback;
  const text = err instanceof Error ? err.message : String(err);
  return new SyncProxyError(code, context ? `${context}: ${text}` : text, { cause: err });
}

/** Maps Node.js system error codes to catalogue codes; undefined when there is no clear mapping. */
export function classifySystemError(err: unknown): ErrorCode | undefined {
  const sys = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (sys) {
    case 'ENOSPC':
    case 'EDQUOT':
      return 'DISK_FULL';
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'MASTER_UNREACHABLE';
    case 'ETIMEDOUT':
      return 'MASTER_TIMEOUT';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'MASTER_CONNECTION_LOST';
    case 'EIO':
    case 'EACCES':
    case 'EMFILE':
    case 'ENFILE':
      return 'IO_ERROR';
    default:
      return undefined;
  }
}

/** Human-readable chain: `CODE: message <- cause message <- ...` (bounded depth). */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; current !== undefined && current !== null && depth < 6; depth++) {
    if (current instanceof SyncProxyError) parts.push(`${current.code}: ${current.message}`);
    else if (current instanceof Error) parts.push(current.message);
    else parts.push(String(current));
    current = current instanceof Error ? (current as { cause?: unknown }).cause : undefined;
  }
  // A wrapper often repeats its cause's text; drop exact repeats so the chain stays readable.
  return parts.filter((p, i) => i === 0 || !parts[i - 1].includes(p)).join(' <- ');
}

/** One line, safe for a RESP simple error: no CR/LF. */
export function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}

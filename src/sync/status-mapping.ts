/**
 * The gRPC edge of the error catalogue, both directions.
 *
 * Server side: a SyncProxyError becomes a status whose code tells generic gRPC tooling what kind of
 * failure it is, whose details read `CODE: message`, and whose trailing metadata carries the exact
 * catalogue code ("psp-error-code") and retryability ("psp-retryable").
 *
 * Client side: a ServiceError becomes a SyncProxyError with the grpc error as `cause`. A status that
 * carries a known psp-error-code came from a sync proxy and keeps that code; a status without one
 * was raised by the transport (or by a server that is not a sync proxy) and is classified by its
 * gRPC code.
 *
 * AUTH_FAILED: a missing password answers UNAUTHENTICATED, a wrong one PERMISSION_DENIED (the
 * caller did authenticate, with credentials that grant nothing). The raising code marks which with
 * `details.auth = 'missing' | 'wrong'`; without the mark UNAUTHENTICATED is used.
 */
import * as grpc from '@grpc/grpc-js';
import { ERROR_CATALOGUE, ErrorCode, SyncProxyError, oneLine, toSyncProxyError } from '../errors';
import { ERROR_CODE_METADATA_KEY, RETRYABLE_METADATA_KEY } from './proto';

const Status = grpc.status;

/** gRPC code for each catalogue code that has a specific one; everything else is INTERNAL. */
const STATUS_BY_CODE: Partial<Record<ErrorCode, grpc.status>> = {
  AUTH_FAILED: Status.UNAUTHENTICATED,
  PROTECTED_MODE: Status.PERMISSION_DENIED,
  SNAPSHOT_NOT_FOUND: Status.NOT_FOUND,
  FILE_NOT_IN_MANIFEST: Status.NOT_FOUND,
  INVALID_REQUEST: Status.INVALID_ARGUMENT,
  HOSTILE_FILE_NAME: Status.INVALID_ARGUMENT,
  SNAPSHOT_BUILDING: Status.UNAVAILABLE,
  NOT_A_MASTER: Status.UNAVAILABLE,
  LOG_OFFSET_GONE: Status.FAILED_PRECONDITION,
  PROTOCOL_VERSION_MISMATCH: Status.FAILED_PRECONDITION,
};

/** Bound on the details text (it travels as an HTTP/2 trailer). */
const MAX_DETAILS_LENGTH = 4096;

export function grpcStatusFor(err: SyncProxyError): grpc.status {
  if (err.code === 'AUTH_FAILED' && err.details.auth === 'wrong') return Status.PERMISSION_DENIED;
  return STATUS_BY_CODE[err.code] ?? Status.INTERNAL;
}

/** Any thrown value as the status object a grpc-js handler passes to its callback or emits. */
export function toGrpcStatus(error: unknown): grpc.StatusObject & grpc.ServiceError {
  const err = toSyncProxyError(error);
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, err.code);
  metadata.set(RETRYABLE_METADATA_KEY, err.retryable ? 'true' : 'false');
  const details = oneLine(`${err.code}: ${err.message}`).slice(0, MAX_DETAILS_LENGTH);
  const status = Object.assign(new Error(details), { code: grpcStatusFor(err), details, metadata });
  return status;
}

function isKnownCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CATALOGUE, value);
}

function firstString(metadata: grpc.Metadata | undefined, key: string): string | undefined {
  const value = metadata?.get(key)[0];
  return typeof value === 'string' ? value : value?.toString('utf8');
}

const CONNECTION_RESET = /ECONNRESET|EPIPE|Connection dropped|connection reset|socket hang up|GOAWAY|RST_STREAM/i;
const DECODE_FAILURE = /pars(e|ing)|deserializ|decod|invalid wire type|index out of range|larger than max/i;

/** The catalogue code for a status that carries no psp-error-code (transport or foreign server). */
export function classifyTransportStatus(code: grpc.status | undefined, details: string): ErrorCode {
  switch (code) {
    case Status.UNAVAILABLE:
      return CONNECTION_RESET.test(details) && !/ECONNREFUSED|No connection established/i.test(details) ? 'MASTER_CONNECTION_LOST' : 'MASTER_UNREACHABLE';
    case Status.DEADLINE_EXCEEDED:
      return 'MASTER_TIMEOUT';
    case Status.CANCELLED:
      return 'MASTER_CONNECTION_LOST';
    case Status.UNAUTHENTICATED:
    case Status.PERMISSION_DENIED:
      return 'AUTH_FAILED';
    case Status.UNIMPLEMENTED:
      return 'NOT_A_SYNC_PROXY';
    case Status.INTERNAL:
    case Status.UNKNOWN:
    case Status.RESOURCE_EXHAUSTED:
      if (DECODE_FAILURE.test(details)) return 'MALFORMED_RESPONSE';
      if (CONNECTION_RESET.test(details)) return 'MASTER_CONNECTION_LOST';
      return code === Status.INTERNAL ? 'INTERNAL' : 'MALFORMED_RESPONSE';
    default:
      return 'INTERNAL';
  }
}

/**
 * A grpc-js client error as a SyncProxyError (cause = the grpc error). `what` names the call for
 * the message, e.g. "GetMeta from 10.0.0.1:17379".
 */
export function fromGrpcError(error: unknown, what: string): SyncProxyError {
  if (error instanceof SyncProxyError) return error;
  const svc = error as Partial<grpc.ServiceError> | undefined;
  if (!svc || typeof svc !== 'object' || typeof svc.code !== 'number') return toSyncProxyError(error, 'INTERNAL', what);
  const details = typeof svc.details === 'string' ? svc.details : String(svc.message ?? '');
  const wireCode = firstString(svc.metadata, ERROR_CODE_METADATA_KEY);
  if (isKnownCode(wireCode)) {
    const wireRetryable = firstString(svc.metadata, RETRYABLE_METADATA_KEY);
    const retryable = wireRetryable === 'true' ? true : wireRetryable === 'false' ? false : undefined;
    // details is "CODE: message": keep the master's message without repeating the code.
    const message = details.startsWith(`${wireCode}: `) ? details.slice(wireCode.length + 2) : details;
    return new SyncProxyError(wireCode, `${what}: ${message}`, {
      cause: error,
      retryable,
      details: { grpcCode: svc.code, ...(wireCode === 'AUTH_FAILED' ? { auth: svc.code === Status.PERMISSION_DENIED ? 'wrong' : 'missing' } : {}) },
    });
  }
  const code = classifyTransportStatus(svc.code, details);
  const name = Status[svc.code] ?? String(svc.code);
  return new SyncProxyError(code, `${what}: ${name}: ${details}`, { cause: error, details: { grpcCode: svc.code } });
}

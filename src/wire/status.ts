/**
 * Mapping between gcache errors and gRPC statuses. The stable gcache code
 * travels in trailing metadata so a client can tell, say, an unknown group
 * from a missing key although both are NOT_FOUND.
 */
import { Metadata, status, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { GCacheError, type ErrorCode } from "../errors.ts";

export const ERROR_CODE_METADATA = "gcache-code";

const TO_STATUS: Record<ErrorCode, status> = {
  ERR_INVALID_OPTION: status.INVALID_ARGUMENT,
  ERR_INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  ERR_NOT_FOUND: status.NOT_FOUND,
  ERR_UNKNOWN_GROUP: status.NOT_FOUND,
  ERR_VALUE_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  ERR_LOAD_FAILED: status.UNKNOWN,
  ERR_CONFLICT: status.ALREADY_EXISTS,
  ERR_UNAUTHENTICATED: status.UNAUTHENTICATED,
  ERR_UNAVAILABLE: status.UNAVAILABLE,
  ERR_DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
  ERR_CANCELLED: status.CANCELLED,
  ERR_CLOSED: status.UNAVAILABLE,
  ERR_INTERNAL: status.INTERNAL,
};

const FROM_STATUS: Partial<Record<status, ErrorCode>> = {
  [status.INVALID_ARGUMENT]: "ERR_INVALID_ARGUMENT",
  [status.NOT_FOUND]: "ERR_NOT_FOUND",
  [status.RESOURCE_EXHAUSTED]: "ERR_VALUE_TOO_LARGE",
  [status.UNAVAILABLE]: "ERR_UNAVAILABLE",
  [status.DEADLINE_EXCEEDED]: "ERR_DEADLINE_EXCEEDED",
  [status.CANCELLED]: "ERR_CANCELLED",
  [status.UNAUTHENTICATED]: "ERR_UNAUTHENTICATED",
};

const KNOWN_CODES = new Set<string>(Object.keys(TO_STATUS));

/** The status a server answers with for any thrown value. Unexpected errors become INTERNAL. */
export function toStatus(error: unknown): Partial<StatusObject> {
  const known = error instanceof GCacheError ? error : null;
  const code: ErrorCode = known?.code ?? "ERR_INTERNAL";
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_METADATA, code);
  const details = known?.message ?? `internal error: ${error instanceof Error ? error.message : String(error)}`;
  return { code: TO_STATUS[code], details, metadata };
}

/** The gcache error for a failed call, keeping the server's code when it sent one. */
export function fromServiceError(error: ServiceError, what: string): GCacheError {
  const sent = error.metadata?.get(ERROR_CODE_METADATA)[0];
  const code: ErrorCode =
    typeof sent === "string" && KNOWN_CODES.has(sent)
      ? (sent as ErrorCode)
      : (FROM_STATUS[error.code] ?? (error.code === status.UNKNOWN ? "ERR_UNAVAILABLE" : "ERR_INTERNAL"));
  const details = error.details || status[error.code] || "call failed";
  return new GCacheError(code, `${what}: ${details}`, { cause: error });
}

/** Errors that a remote node decided (as opposed to transport failures on the way). */
const verdicts = new WeakSet<GCacheError>();

/** The error a remote node reported for one item of a batch. */
export function remoteVerdict(code: string, message: string, what: string): GCacheError {
  const error = new GCacheError(KNOWN_CODES.has(code) ? (code as ErrorCode) : "ERR_INTERNAL", `${what}: ${message}`);
  verdicts.add(error);
  return error;
}

/** Whether the server itself produced this error (as opposed to the transport). */
export function isServerVerdict(error: GCacheError): boolean {
  if (verdicts.has(error)) return true;
  const cause = error.cause as ServiceError | undefined;
  return cause?.metadata?.get(ERROR_CODE_METADATA)[0] !== undefined;
}

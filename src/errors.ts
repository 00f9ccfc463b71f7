/**
 * Every error gcache raises on purpose is a `GCacheError` with a stable `code`
 * (safe to switch on; messages may change) and a `retryable` marker telling the
 * caller whether the same call may succeed later.
 */

export type ErrorCode =
  /** Options given to a constructor or factory are invalid. */
  | "ERR_INVALID_OPTION"
  /** An argument to a call is invalid (bad key, bad TTL, …). */
  | "ERR_INVALID_ARGUMENT"
  /** The key does not exist: the loader said so, or nobody set it. */
  | "ERR_NOT_FOUND"
  /** No group of that name on the node. */
  | "ERR_UNKNOWN_GROUP"
  /** A value is larger than the configured maximum. */
  | "ERR_VALUE_TOO_LARGE"
  /** The loader failed (the error is the cause). Not cached; a later call loads again. */
  | "ERR_LOAD_FAILED"
  /** The call lacks valid credentials (auth token). */
  | "ERR_UNAUTHENTICATED"
  /** The operation conflicts with existing state (e.g. a node name already registered). */
  | "ERR_CONFLICT"
  /** A node could not be reached or is shutting down. */
  | "ERR_UNAVAILABLE"
  /** The caller's deadline passed. */
  | "ERR_DEADLINE_EXCEEDED"
  /** The caller cancelled. */
  | "ERR_CANCELLED"
  /** The object was closed and the call cannot proceed. */
  | "ERR_CLOSED"
  /** A bug or an unexpected failure; the message says what. */
  | "ERR_INTERNAL";

const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "ERR_LOAD_FAILED",
  "ERR_UNAVAILABLE",
  "ERR_DEADLINE_EXCEEDED",
]);

export class GCacheError extends Error {
  override readonly name = "GCacheError";
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? RETRYABLE.has(code);
  }
}

/**
 * What a loader throws when the key does not exist at the source. The caller
 * gets `ERR_NOT_FOUND` (gRPC NOT_FOUND, HTTP 404) and no other node retries it.
 */
export class NotFoundError extends GCacheError {
  constructor(message = "not found") {
    super("ERR_NOT_FOUND", message);
  }
}

export function isGCacheError(error: unknown, code?: ErrorCode): error is GCacheError {
  return error instanceof GCacheError && (code === undefined || error.code === code);
}

export function invalidOption(message: string): GCacheError {
  return new GCacheError("ERR_INVALID_OPTION", message);
}

export function invalidArgument(message: string): GCacheError {
  return new GCacheError("ERR_INVALID_ARGUMENT", message);
}

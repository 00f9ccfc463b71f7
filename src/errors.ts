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
  /** The object was closed and the call cannot proceed. */
  | "ERR_CLOSED";

export class GCacheError extends Error {
  override readonly name = "GCacheError";
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

export function invalidOption(message: string): GCacheError {
  return new GCacheError("ERR_INVALID_OPTION", message);
}

export function invalidArgument(message: string): GCacheError {
  return new GCacheError("ERR_INVALID_ARGUMENT", message);
}

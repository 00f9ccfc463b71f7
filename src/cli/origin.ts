/**
 * The `--origin` loader: a miss becomes an HTTP GET of a URL template. 404 means
 * the key does not exist; any other failure is a load error (never cached).
 * `Cache-Control: max-age` on the answer sets the value's TTL. An answer
 * larger than the group's largest value fails the load once that many bytes
 * have arrived (by the decoded size: a small compressed body may decode to
 * gigabytes), so a wrong or endless answer cannot fill the node's memory.
 */
import { _timerDelay } from "../call.ts";
import { GCacheError, NotFoundError } from "../errors.ts";
import type { _LoadContext, Loader, LoadContext, LoadedValue } from "../group.ts";
import { _ByteSink } from "../server/http-request.ts";

/** Why a request was cut at --origin-timeout, told apart from a caller's reason. */
const TIMED_OUT = Symbol("origin timeout");

export function originLoader(template: string, timeoutMs: number): Loader {
  const requests = new _RequestSignals();
  return async (key, context) => {
    const { group, maxValueBytes } = context;
    const url = template.replaceAll("{group}", encodeURIComponent(group)).replaceAll("{key}", encodeURIComponent(key));
    const request = requests.take();
    // One timer of its own, cleared once the body is in. AbortSignal.timeout
    // would leave every load's timer to fire `timeoutMs` later for nothing:
    // under a load of misses, thousands a second, each a wake-up of the
    // event loop that serves hits (docs/benchmarks.md, "Timers left behind
    // by origin loads").
    const timer = setTimeout(() => request.abort(TIMED_OUT), _timerDelay(timeoutMs));
    const onCancel = (reason: unknown) => request.abort(reason);
    const stopListening = listenForCancel(context, onCancel);
    try {
      return await load(url, request.signal, key, group, maxValueBytes);
    } catch (error) {
      const reason: unknown = request.signal.reason;
      if (request.signal.aborted && reason !== TIMED_OUT) throw reason;
      if (reason === TIMED_OUT) {
        throw new GCacheError("ERR_LOAD_FAILED", `origin request for ${group}/${key} took longer than ${timeoutMs} ms (--origin-timeout)`, {
          cause: error,
        });
      }
      throw error;
    } finally {
      clearTimeout(timer);
      stopListening();
      requests.giveBack(request);
    }
  };
}

/**
 * Listens for the load's cancellation: through the group's own hook when the
 * context has one, so the load's signal is never made, else on its signal.
 */
function listenForCancel(context: LoadContext, onCancel: (reason: unknown) => void): () => void {
  const token = (context as Partial<_LoadContext>)._cancel;
  if (token !== undefined) {
    token.onCancel(onCancel);
    return () => token.offCancel(onCancel);
  }
  const signal = context.signal;
  const onAbort = () => onCancel(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}

/**
 * AbortControllers for origin requests, used again once a request is done
 * and its controller never aborted. fetch needs a signal to be cut, and one
 * made for each request outlives young collections under a burst of loads
 * and costs every later one until a full collection (docs/benchmarks.md,
 * "Young collections after a burst of loads"); fetch lets go of the signal
 * when its request is done, so one can serve the next.
 */
class _RequestSignals {
  /** Enough for the requests a node runs at once; more are made and dropped. */
  private static readonly KEPT = 256;
  private readonly idle: AbortController[] = [];

  take(): AbortController {
    return this.idle.pop() ?? new AbortController();
  }

  giveBack(controller: AbortController): void {
    if (!controller.signal.aborted && this.idle.length < _RequestSignals.KEPT) this.idle.push(controller);
  }
}

async function load(url: string, signal: AbortSignal, key: string, group: string, maxValueBytes: number): Promise<Uint8Array | LoadedValue> {
  let response: Response;
  try {
    response = await fetch(url, { signal, redirect: "follow" });
  } catch (error) {
    if (signal.aborted) throw error;
    throw new GCacheError("ERR_LOAD_FAILED", `origin request failed: ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  }
  if (response.status === 404) {
    await response.body?.cancel();
    throw new NotFoundError(`origin has no ${group}/${key}`);
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new GCacheError("ERR_LOAD_FAILED", `origin answered ${response.status} ${response.statusText} for ${group}/${key}`);
  }
  const value = await bodyUpTo(response, maxValueBytes);
  if (value === null) {
    throw new GCacheError("ERR_VALUE_TOO_LARGE", `origin answered more than ${maxValueBytes} bytes for ${group}/${key}, the group's maximum value size`);
  }
  const maxAge = /(?:^|,)\s*max-age=(\d+)/i.exec(response.headers.get("cache-control") ?? "");
  return maxAge === null ? value : { value, ttlMs: Math.max(1, Number(maxAge[1]) * 1000) };
}

/**
 * The answer's body, or null (and the rest left unread) once it runs over
 * `limit` bytes. Returned as one array that owns exactly its bytes: the cache
 * keeps it, and a view into a larger buffer would keep that alive too.
 */
async function bodyUpTo(response: Response, limit: number): Promise<Uint8Array | null> {
  const lengthHeader = response.headers.get("content-length");
  // Announced and not re-encoded, the size is known before a byte is read, and bounds what is read.
  if (lengthHeader !== null && response.headers.get("content-encoding") === null) {
    if (Number(lengthHeader) > limit) {
      await response.body?.cancel();
      return null;
    }
    // bytes(), not a view over arrayBuffer(): no ArrayBuffer object beside each cached value for the collector to trace.
    return response.bytes();
  }
  if (response.body === null) return new Uint8Array(0);
  const reader = response.body.getReader();
  const body = new _ByteSink(limit);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return body.bytes();
    if (body.length + value.byteLength > limit) {
      await reader.cancel();
      return null;
    }
    body.append(value);
  }
}

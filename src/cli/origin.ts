/**
 * The `--origin` loader: a miss becomes an HTTP GET of a URL template. 404 means
 * the key does not exist; any other failure is a load error (never cached).
 * `Cache-Control: max-age` on the answer sets the value's TTL. An answer
 * larger than the group's largest value fails the load once that many bytes
 * have arrived (by the decoded size: a small compressed body may decode to
 * gigabytes), so a wrong or endless answer cannot fill the node's memory.
 */
import { _startCall } from "../call.ts";
import { GCacheError, NotFoundError } from "../errors.ts";
import type { Loader, LoadedValue } from "../group.ts";
import { _ByteSink } from "../server/http-request.ts";

export function originLoader(template: string, timeoutMs: number): Loader {
  return async (key, { signal, group, maxValueBytes }) => {
    const url = template.replaceAll("{group}", encodeURIComponent(group)).replaceAll("{key}", encodeURIComponent(key));
    // A call with its own timer, stopped once the body is in. AbortSignal.timeout
    // would leave every load's timer to fire `timeoutMs` later for nothing:
    // under a load of misses, thousands a second, each a wake-up of the
    // event loop that serves hits (docs/benchmarks.md, "Timers left behind
    // by origin loads").
    const call = _startCall({ signal }, timeoutMs);
    try {
      return await load(url, call.signal, key, group, maxValueBytes);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      if (call.signal.aborted) {
        throw new GCacheError("ERR_LOAD_FAILED", `origin request for ${group}/${key} took longer than ${timeoutMs} ms (--origin-timeout)`, {
          cause: error,
        });
      }
      throw error;
    } finally {
      call.dispose();
    }
  };
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

/**
 * The `--origin` loader: a miss becomes an HTTP GET of a URL template. 404 means
 * the key does not exist; any other failure is a load error (never cached).
 * `Cache-Control: max-age` on the answer sets the value's TTL.
 */
import { GCacheError, NotFoundError } from "../errors.ts";
import type { Loader } from "../group.ts";

export function originLoader(template: string, timeoutMs: number): Loader {
  return async (key, { signal, group }) => {
    const url = template.replaceAll("{group}", encodeURIComponent(group)).replaceAll("{key}", encodeURIComponent(key));
    let response: Response;
    try {
      response = await fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]), redirect: "follow" });
    } catch (error) {
      if (signal.aborted) throw signal.reason;
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
    // bytes(), not a view over arrayBuffer(): the cache keeps this array, and
    // without an ArrayBuffer object beside it, each entry is one object fewer
    // for the collector to trace.
    const value = await response.bytes();
    const maxAge = /(?:^|,)\s*max-age=(\d+)/i.exec(response.headers.get("cache-control") ?? "");
    return maxAge === null ? value : { value, ttlMs: Math.max(1, Number(maxAge[1]) * 1000) };
  };
}

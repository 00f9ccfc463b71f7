/** Small helpers of the cluster benchmark: statistics, formatting, free ports, timing. */

/** A whole-number flag: `fallback` when absent or empty; throws naming the flag when not a whole number >= `min`. */
export function wholeNumber(text: string | undefined, fallback: number, min: number, flag: string): number {
  if (text === undefined || text === "") return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) throw new Error(`--${flag}: expected a whole number of at least ${min}, got ${text}`);
  return value;
}

/**
 * Keys a benchmark reads its hits from at one value size: about 10 MiB of
 * values, in hundreds, from 100 up to `max` (10,000 by default), so that the
 * values fit every node's default cache at any size.
 */
export function hitKeyCount(valueBytes: number, max = 10_000): number {
  return Math.max(100, Math.min(max, Math.floor((10 * 1024 * 1024) / (valueBytes + 16) / 100) * 100));
}

export function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return NaN;
  const sorted = [...finite].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** (max - min) / median of a series, NaN when empty. */
export function spread(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return NaN;
  return (Math.max(...finite) - Math.min(...finite)) / median(finite);
}

/** Least-squares slope of y over x (units of y per unit of x). */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = Math.min(xs.length, ys.length);
  if (n < 2) return NaN;
  let sx = 0;
  let sy = 0;
  for (let i = 0; i < n; i++) {
    sx += xs[i]!;
    sy += ys[i]!;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

export function fmtInt(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "-";
}

export function fmtMs(ms: number, digits = 2): string {
  return Number.isFinite(ms) ? ms.toFixed(digits) : "-";
}

export function fmtRatio(r: number): string {
  return Number.isFinite(r) ? r.toFixed(3) : "-";
}

export function pct(share: number): string {
  return Number.isFinite(share) ? `${(share * 100).toFixed(0)}%` : "-";
}

export function mb(bytes: number): string {
  return Number.isFinite(bytes) && bytes > 0 ? `${(bytes / (1024 * 1024)).toFixed(0)} MB` : "-";
}

export function sizeLabel(bytes: number): string {
  return bytes % 1024 === 0 && bytes >= 1024 ? `${bytes / 1024} KB` : `${bytes} B`;
}

/** Right-aligned table rows; the first column is left-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * `count` distinct free TCP ports on 127.0.0.1: all are held open until every
 * one is chosen, so the same port is never handed out twice.
 */
export function freePorts(count: number): number[] {
  const listeners = Array.from({ length: count }, () =>
    Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }),
  );
  const ports = listeners.map((l) => l.port);
  for (const l of listeners) l.stop(true);
  return ports;
}

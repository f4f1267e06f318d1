// When to re-resolve a qube's dsthost names: when the shortest TTL among them runs out, within
// bounds (a TTL of 0 must not make us spin; a week-long TTL must not keep stale addresses), and
// soon after a failure, since names often fail only until the uplink or the upstream DNS
// comes back: a failed name is retried with back-off (1 s, 2 s, 4 s, … up to retryMs), so a DNS
// outage costs about as long as it lasted, not a whole retry interval.
import type { HostResolution } from './compile.js';

export interface RefreshBounds {
  minMs: number;
  maxMs: number;
  /** The longest retry delay after a name did not resolve (the back-off's cap). */
  retryMs: number;
  /** The first retry delay after a name did not resolve; doubles per consecutive failure. */
  firstRetryMs?: number;
}

export const DEFAULT_FIRST_RETRY_MS = 1_000;
export const DEFAULT_REFRESH: RefreshBounds = { minMs: 10_000, maxMs: 3_600_000, retryMs: 30_000, firstRetryMs: DEFAULT_FIRST_RETRY_MS };

/**
 * Delay before the next lookup of a name that failed `failures` times in a row (1 = the first
 * failure): firstRetryMs, doubling, capped at retryMs. A success resets the count (the caller).
 */
export function failedRetryDelayMs(failures: number, bounds: RefreshBounds = DEFAULT_REFRESH): number {
  const first = Math.max(1, Math.min(bounds.firstRetryMs ?? DEFAULT_FIRST_RETRY_MS, bounds.retryMs));
  const doublings = Math.min(Math.max(0, Math.floor(failures) - 1), 30);
  return Math.min(bounds.retryMs, first * 2 ** doublings);
}

/** Delay until the next refresh, or undefined when the qube uses no names. */
export function refreshDelayMs(resolutions: Iterable<HostResolution>, bounds: RefreshBounds = DEFAULT_REFRESH): number | undefined {
  let delay: number | undefined;
  for (const r of resolutions) {
    // TTLs are bounded by minMs/maxMs; a failure's back-off delay is bounded by retryMs only
    // (its first steps are meant to be shorter than minMs).
    const d = r.ok
      ? Math.min(bounds.maxMs, Math.max(bounds.minMs, r.ttlSeconds * 1000))
      : Math.min(bounds.retryMs, Math.max(1, r.retryInMs ?? bounds.retryMs));
    delay = delay === undefined ? d : Math.min(delay, d);
  }
  return delay;
}

// When to re-resolve a qube's dsthost names: when the shortest TTL among them runs out, within
// bounds (a TTL of 0 must not make us spin; a week-long TTL must not keep stale addresses), and
// soon after a failure, since names often fail only until the uplink comes up.
import type { HostResolution } from './compile.js';

export interface RefreshBounds {
  minMs: number;
  maxMs: number;
  /** Retry delay after a name did not resolve. */
  retryMs: number;
}

export const DEFAULT_REFRESH: RefreshBounds = { minMs: 10_000, maxMs: 3_600_000, retryMs: 30_000 };

/** Delay until the next refresh, or undefined when the qube uses no names. */
export function refreshDelayMs(resolutions: Iterable<HostResolution>, bounds: RefreshBounds = DEFAULT_REFRESH): number | undefined {
  let delay: number | undefined;
  for (const r of resolutions) {
    const d = r.ok ? r.ttlSeconds * 1000 : bounds.retryMs;
    delay = delay === undefined ? d : Math.min(delay, d);
  }
  if (delay === undefined) return undefined;
  return Math.min(bounds.maxMs, Math.max(bounds.minMs, delay));
}

// Remembers resolved names until their TTL runs out, so 1,000 qubes naming the same host cost
// one query, and concurrent requests for one name share a single lookup. A name that fails is
// retried with back-off: each failed answer carries `retryInMs` (1 s, 2 s, 4 s, … capped at the
// retry interval), which the engine's refresh timer uses; a success resets the count.
import type { HostResolution } from './model/compile.js';
import type { Family } from './model/skeleton.js';
import { failedRetryDelayMs, type RefreshBounds } from './model/refresh.js';

export type ResolveFn = (host: string, family: Family) => Promise<HostResolution>;

interface Entry {
  result: Promise<HostResolution>;
  startedAt: number;
  expiresAt: number;
  settled: boolean;
  failed: boolean;
}

/** A failed answer is served from the cache this long at most, so a qube's next event retries it. */
const FAILED_CACHE_MS = 1_000;
/**
 * A probe shares a lookup in flight only if it began less than this ago (several qubes naming
 * one host retry it at about the same time); a lookup that began while
 * the DNS path was dead may hang until its deadline (its retransmissions keep the old path).
 */
const PROBE_SHARE_MS = 200;

export class NameCache {
  private readonly entries = new Map<string, Entry>();
  /** Consecutive failed lookups per name (`family host`); absent = the last one succeeded. */
  private readonly failures = new Map<string, number>();
  /** Bumped by clear(): a lookup started before it does not touch the new state. */
  private epoch = 0;

  constructor(
    private readonly resolve: ResolveFn,
    private readonly bounds: RefreshBounds,
    private readonly now: () => number = Date.now,
  ) {}

  get(host: string, family: Family): Promise<HostResolution> {
    const key = `${family} ${host}`;
    const hit = this.entries.get(key);
    if (hit && hit.expiresAt > this.now()) return hit.result;
    return this.start(key, host, family);
  }

  /**
   * A retry of a failing name: a fresh lookup, unless a good answer is cached or a lookup began
   * under PROBE_SHARE_MS ago. Its answer serves later get()s.
   */
  probe(host: string, family: Family): Promise<HostResolution> {
    const key = `${family} ${host}`;
    const hit = this.entries.get(key);
    const now = this.now();
    if (hit && ((hit.settled && !hit.failed && hit.expiresAt > now) || (!hit.settled && now - hit.startedAt < PROBE_SHARE_MS))) return hit.result;
    return this.start(key, host, family);
  }

  private start(key: string, host: string, family: Family): Promise<HostResolution> {
    const entry: Entry = { result: Promise.resolve({ ok: false, error: 'pending' }), startedAt: this.now(), expiresAt: Infinity, settled: false, failed: false };
    // In the map before the lookup runs: a resolver that fails synchronously still counts.
    this.entries.set(key, entry);
    entry.result = this.lookup(key, host, family, entry);
    return entry.result;
  }

  private async lookup(key: string, host: string, family: Family, entry: Entry): Promise<HostResolution> {
    const epoch = this.epoch;
    let r: HostResolution;
    try {
      r = await this.resolve(host, family);
    } catch (e) {
      r = { ok: false, error: String((e as Error)?.message ?? e) };
    }
    entry.settled = true;
    // A lookup overtaken by a newer one (a probe) or by clear() does not count as a failure.
    const current = epoch === this.epoch && this.entries.get(key) === entry;
    if (r.ok) {
      if (epoch === this.epoch) this.failures.delete(key);
      entry.expiresAt = this.now() + Math.min(this.bounds.maxMs, Math.max(this.bounds.minMs, r.ttlSeconds * 1000));
      return r;
    }
    const count = (current ? (this.failures.get(key) ?? 0) : 0) + 1;
    if (current) this.failures.set(key, count);
    const retryInMs = failedRetryDelayMs(count, this.bounds);
    entry.failed = true;
    entry.expiresAt = this.now() + Math.min(retryInMs, FAILED_CACHE_MS);
    return { ...r, retryInMs };
  }

  /** How many times in a row `host` failed (0: never, or its last lookup succeeded). */
  failuresOf(host: string, family: Family): number {
    return this.failures.get(`${family} ${host}`) ?? 0;
  }

  /**
   * Drops cached failures, so the next request looks those names up at once (the uplink or the
   * DNS path may have come back). The back-off counts stay: a name still failing backs off further.
   */
  forgetFailures(): void {
    for (const [key, e] of this.entries) if (e.failed) this.entries.delete(key);
  }

  /** Forget everything, back-off included (upstream DNS changed, or a reload). */
  clear(): void {
    this.entries.clear();
    this.failures.clear();
    this.epoch++;
  }
}

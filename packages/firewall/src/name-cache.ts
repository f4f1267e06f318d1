// Remembers resolved names until their TTL runs out, so 1,000 qubes naming the same host cost
// one query, and concurrent requests for one name share a single lookup.
import type { HostResolution } from './model/compile.js';
import type { Family } from './model/skeleton.js';
import type { RefreshBounds } from './model/refresh.js';

export type ResolveFn = (host: string, family: Family) => Promise<HostResolution>;

interface Entry {
  result: Promise<HostResolution>;
  expiresAt: number;
}

export class NameCache {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly resolve: ResolveFn,
    private readonly bounds: RefreshBounds,
    private readonly now: () => number = Date.now,
  ) {}

  get(host: string, family: Family): Promise<HostResolution> {
    const key = `${family} ${host}`;
    const hit = this.entries.get(key);
    if (hit && hit.expiresAt > this.now()) return hit.result;
    const entry: Entry = { result: this.resolve(host, family), expiresAt: Infinity };
    this.entries.set(key, entry);
    void entry.result.then((r) => {
      const life = r.ok ? Math.min(this.bounds.maxMs, Math.max(this.bounds.minMs, r.ttlSeconds * 1000)) : this.bounds.retryMs;
      // A failed lookup is kept only briefly, so a qube's next event retries it.
      entry.expiresAt = this.now() + (r.ok ? life : Math.min(life, 1_000));
    });
    return entry.result;
  }

  /** Forget everything (upstream DNS changed, or a reload). */
  clear(): void {
    this.entries.clear();
  }
}

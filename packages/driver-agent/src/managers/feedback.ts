// Feedback in QubesDB: /qubes-vif/<vif>/… per vif and /qubes-dns-upstream. Written after the
// kernel accepted a turn, never read back as input. A write that fails stays pending and is
// retried on a later turn; a restarted QubesDB daemon (it starts empty) gets everything again.
import type { Logger } from '@qubes-net/common';
import type { QubesDB } from '@qubes-net/qubesdb';
import { recordEntries, VIF_PREFIX, DNS_UPSTREAM_KEY, vifKey } from '../model/feedback.js';
import type { VifRecord } from '../model/planner.js';

export class FeedbackManager {
  /** vif → record to write (undefined: remove the vif's entries). */
  private readonly records = new Map<string, VifRecord | undefined>();
  private upstream: string | undefined;

  constructor(private readonly deps: { qdb: QubesDB; log: Logger }) {}

  record(vif: string, rec: VifRecord | undefined): void {
    this.records.set(vif, rec);
  }

  dnsUpstream(servers: readonly string[]): void {
    this.upstream = servers.join(' ');
  }

  get pending(): boolean {
    return this.records.size > 0 || this.upstream !== undefined;
  }

  /** True when QubesDB lost our feedback (a restarted daemon): the caller re-records everything. */
  async lost(): Promise<boolean> {
    return (await this.deps.qdb.read(DNS_UPSTREAM_KEY).catch(() => '')) === undefined;
  }

  /** Writes what is pending; failures stay pending. Returns whether all went through. */
  async flush(): Promise<boolean> {
    const work = [...this.records];
    this.records.clear();
    let ok = true;
    await Promise.all(work.map(async ([vif, rec]) => {
      try {
        if (rec) for (const [k, v] of recordEntries(rec)) await this.deps.qdb.write(k, v);
        else await this.deps.qdb.rm(`${VIF_PREFIX}${vif}/`);
      } catch (err) {
        ok = false;
        if (!this.records.has(vif)) this.records.set(vif, rec);
        this.deps.log.error({ vif, key: vifKey(vif, '*'), err: String(err) }, rec ? 'qubesdb write failed' : 'qubesdb rm failed');
      }
    }));
    if (this.upstream !== undefined) {
      const value = this.upstream;
      this.upstream = undefined;
      try {
        await this.deps.qdb.write(DNS_UPSTREAM_KEY, value);
      } catch (err) {
        ok = false;
        this.upstream ??= value;
        this.deps.log.error({ key: DNS_UPSTREAM_KEY, err: String(err) }, 'qubesdb write failed');
      }
    }
    return ok;
  }
}

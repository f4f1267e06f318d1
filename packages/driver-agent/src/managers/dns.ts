// DNS: which real servers the virtual DNS addresses are DNATed to. Re-learned when
// resolv.conf (or resolved's file) changes, the uplink changes, the provider's virtual DNS
// addresses change or a sync is asked for; the dnat-dns chain is replaced only when the
// mapping differs. After a change the DNATed flows are purged (they would keep going to the
// old server), the upstream list is fed back and the firewall is told.
import type { Logger } from '@qubes-net/common';
import { computeDnsMapping, addDnsChain, describeDnsRules, sameMapping, type DnsMapping } from '../model/dns.js';
import type { ProviderConfig } from '../model/provider-config.js';
import { DnsSource } from '../kernel/dns-source.js';
import type { HostAccess } from '../kernel/host.js';
import { purgeDnsFlows } from '../kernel/conntrack.js';
import { notifyFirewall } from '../kernel/firewall-notify.js';
import type { Turn } from './turn.js';

export interface DnsState {
  mapping: DnsMapping;
  source: string;
  servers4: string[];
  rejected: Array<{ server: string; reason: string }>;
}

export class DnsManager {
  /** Committed: the mapping the dnat-dns chain holds. */
  state: DnsState | undefined;
  dirty = false;
  readonly source: DnsSource;
  /** Set by the loop: called after a committed change (feedback of the upstream list). */
  onChanged: (s: DnsState) => void = () => undefined;

  constructor(private readonly deps: { log: Logger; resolvConf: string; resolved: 'auto' | 'off'; resolvedRunDir?: string; firewallPidFile: string; host: Pick<HostAccess, 'ownAddresses'>; tellFirewall?: (s: DnsState) => void }) {
    this.source = new DnsSource({ resolvConf: deps.resolvConf, resolved: deps.resolved, ...(deps.resolvedRunDir ? { resolvedRunDir: deps.resolvedRunDir } : {}) });
  }

  async compute(provider: ProviderConfig, own: Set<string> | undefined, reason: string): Promise<DnsState> {
    const src = await this.source.read();
    for (const e of src.errors) this.deps.log.error({ ...e.logFields() }, 'invalid DNS source');
    const addrs = own ?? (await this.deps.host.ownAddresses());
    if (provider.gateway) addrs.add(provider.gateway);
    const { mapping, rejected } = computeDnsMapping({ virtualDns: provider.virtualDns, servers4: src.servers4, ownAddresses: addrs, behindQubesProvider: provider.behindQubesProvider });
    for (const r of rejected) this.deps.log.warn({ server: r.server, reason: r.reason, source: src.source }, 'DNS server not used');
    if (!this.state || !sameMapping(this.state.mapping, mapping)) this.deps.log.info({ reason, mode: mapping.mode, upstream: mapping.upstream, source: src.source }, 'dns mapping computed');
    return { mapping, source: src.source, servers4: src.servers4, rejected };
  }

  /**
   * Plans this turn's DNS part. `full`: the base transaction already carries the chain for
   * `full.state`. Otherwise, when dirty, the chain is replaced if the mapping changed.
   */
  async plan(turn: Turn, provider: ProviderConfig, opts: { full?: DnsState; inputsChanged: boolean; reason: string }): Promise<void> {
    const before = this.state;
    let next = opts.full;
    const wasDirty = this.dirty;
    if (!next && (this.dirty || opts.inputsChanged)) {
      next = await this.compute(provider, undefined, opts.reason);
      if (before && sameMapping(before.mapping, next.mapping)) {
        // The same chain: nothing for the kernel, but the source and rejections are news.
        const same = next;
        turn.onCommit(() => (this.state = same));
        next = undefined;
      } else {
        addDnsChain(turn.tx, next.mapping);
      }
    }
    this.dirty = false;
    turn.onReject(() => {
      if (wasDirty || opts.inputsChanged) this.dirty = true;
    });
    if (!next) return;
    const committed = next;
    const changed = !before || !sameMapping(before.mapping, committed.mapping);
    turn.onCommit(() => (this.state = committed));
    turn.after(async () => {
      if (!changed) return;
      if (before) this.deps.log.info({ reason: opts.reason, mode: committed.mapping.mode, upstream: committed.mapping.upstream, rules: describeDnsRules(committed.mapping) }, 'dns mapping applied');
      this.onChanged(committed);
      if (!before) return;
      const purge = await purgeDnsFlows(committed.mapping.pairs.map((p) => p.virtual));
      for (const e of purge.errors) this.deps.log.error({ err: e }, 'conntrack purge of DNS flows failed');
      if (this.deps.tellFirewall) {
        // Hosted in one process with the firewall: a call, no signal.
        this.deps.tellFirewall(committed);
        return;
      }
      const fw = await notifyFirewall(this.deps.firewallPidFile);
      this.deps.log.info({ result: fw, pidFile: this.deps.firewallPidFile }, 'firewall notified of DNS change');
    });
  }

  close(): void {
    this.source.close();
  }
}

// DNS: which real servers the virtual DNS addresses are DNATed to. Re-learned when
// resolv.conf (or resolved's file) changes, the uplink changes, the provider's virtual DNS
// addresses change or a sync is asked for; the dnat-dns chain is replaced only when the
// mapping differs. After a change the DNATed flows are purged (they would keep going to the
// old server), the upstream list is fed back and the firewall is told.
import type { Logger } from '@qubes-net/common';
import { readdirSync } from 'node:fs';
import { computeDnsMapping, addDnsChain, describeDnsRules, describeDnsRules6, sameMapping, allUpstream, type DnsMapping } from '../model/dns.js';
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
  servers6: string[];
  rejected: Array<{ server: string; reason: string }>;
}

export class DnsManager {
  /** Committed: the mapping the dnat-dns chain holds. */
  state: DnsState | undefined;
  dirty = false;
  readonly source: DnsSource;
  /** Set by the loop: called after a committed change (feedback of the upstream list). */
  onChanged: (s: DnsState) => void = () => undefined;

  constructor(private readonly deps: { log: Logger; resolvConf: string; resolved: 'auto' | 'off'; resolvedRunDir?: string; firewallPidFile: string; host: Pick<HostAccess, 'ownAddresses' | 'readSysctl'> & Partial<Pick<HostAccess, 'ipv6'>>; listVifs?: () => string[]; tellFirewall?: (s: DnsState) => void }) {
    this.source = new DnsSource({ resolvConf: deps.resolvConf, resolved: deps.resolved, ...(deps.resolvedRunDir ? { resolvedRunDir: deps.resolvedRunDir } : {}) });
  }

  async compute(provider: ProviderConfig, own: Set<string> | undefined, reason: string): Promise<DnsState> {
    const src = await this.source.read();
    for (const e of src.errors) this.deps.log.error({ ...e.logFields() }, 'invalid DNS source');
    const addrs = own ?? (await this.deps.host.ownAddresses());
    if (provider.gateway) addrs.add(provider.gateway);
    // The IPv6 part exists whenever the kernel has IPv6 (its chain is then in the base), so
    // keys that go away flush it; without IPv6 in the kernel there is no ip6 table to touch.
    const ipv6 = this.deps.host.ipv6?.() ?? true;
    const { mapping, rejected } = computeDnsMapping({
      virtualDns: provider.virtualDns, servers4: src.servers4, ownAddresses: addrs, behindQubesProvider: provider.behindQubesProvider,
      ...(ipv6 ? { virtualDns6: provider.virtualDns6 ?? [], servers6: src.servers6 } : {}),
    });
    for (const r of rejected) this.deps.log.warn({ server: r.server, reason: r.reason, source: src.source }, 'DNS server not used');
    if (!this.state || !sameMapping(this.state.mapping, mapping)) this.deps.log.info({ reason, mode: mapping.mode, mode6: mapping.ipv6?.mode, upstream: allUpstream(mapping), source: src.source }, 'dns mapping computed');
    return { mapping, source: src.source, servers4: src.servers4, servers6: src.servers6, rejected };
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
    this.planLocalnet(turn, next ?? this.state);
    turn.onReject(() => {
      if (wasDirty || opts.inputsChanged) this.dirty = true;
    });
    if (!next) return;
    const committed = next;
    const changed = !before || !sameMapping(before.mapping, committed.mapping);
    turn.onCommit(() => (this.state = committed));
    turn.after(async () => {
      if (!changed) return;
      if (before) this.deps.log.info({ reason: opts.reason, mode: committed.mapping.mode, mode6: committed.mapping.ipv6?.mode, upstream: allUpstream(committed.mapping), rules: [...describeDnsRules(committed.mapping), ...(describeDnsRules6(committed.mapping) ?? [])] }, 'dns mapping applied');
      this.onChanged(committed);
      if (!before) return;
      const purge = await purgeDnsFlows([...committed.mapping.pairs, ...(committed.mapping.ipv6?.pairs ?? [])].map((p) => p.virtual));
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

  /**
   * A resolver on 127.0.0.0/8 as target (issue 16.1): the kernel routes a DNATed packet from a
   * vif to a loopback address only with route_localnet on that vif (in) and sends the reply
   * from it out of the vif only with it too. Set on the vifs only, never on `all`/`default`
   * (other interfaces keep treating 127/8 as martian); vifs that appear later are caught here
   * on their own turn, as every turn passes through. Off again when no longer needed.
   */
  private planLocalnet(turn: Turn, s: DnsState | undefined): void {
    const want = s?.mapping.localnet ? '1' : '0';
    if (want === '0' && !this.localnetSet) return;
    for (const vif of (this.deps.listVifs ?? listVifInterfaces)()) {
      const path = `net/ipv4/conf/${vif}/route_localnet`;
      if (this.deps.host.readSysctl(path) !== want) turn.sysctls.push({ path, value: want, vif, tolerant: true });
    }
    this.localnetSet = want === '1';
  }

  private localnetSet = false;

  close(): void {
    this.source.close();
  }
}

/** vif* interfaces of this namespace, from /proc/sys (cheap, no process). */
function listVifInterfaces(): string[] {
  try {
    return readdirSync('/proc/sys/net/ipv4/conf').filter((n) => /^vif\d/.test(n));
  } catch {
    return [];
  }
}

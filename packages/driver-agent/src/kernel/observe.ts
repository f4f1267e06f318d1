// Reads what the kernel holds for the driver: vif* links, their host routes, addresses and
// permanent neighbours (`ip -j`), and the driver's tables (`nft -j`). Used only for full
// reconciliation and status, never per event.
import { parseIPv6 } from '@qubes-net/common';
import { createNftWriter } from '@qubes-net/common/kernel';
import { ipJsonFast as ipJson } from './process.js';
import type { ObservedKernel } from '../model/reconcile.js';
import type { Family } from '../model/ruleset.js';
import { readSysctl } from './procfs.js';

export interface ObservedTables {
  /** Chain name → number of rules, per family; undefined when the table is missing. */
  chains: Record<Family, Map<string, number> | undefined>;
  /** The `dnat-dns` chain as nft JSON, for describeDnsChainJson. */
  dnatDns: { nftables: Record<string, any>[] } | undefined;
  /** Counter of the anti-spoofing drop rule per family (packets). */
  antispoofDrops: Record<Family, number>;
  /** The firewall's skeleton is in the kernel (its IPv4 forward chain with policy drop). */
  firewallSkeleton: boolean;
}

// Listing through common's writer: libnftables in process where it is there (no nft process).
const lister = createNftWriter({ timeoutMs: 10_000 });
const nftListJson = (what: readonly string[]) => lister.list(what);

export interface Observation {
  kernel: ObservedKernel;
  tables: ObservedTables;
  /** Every address on any interface of this namespace (for "never DNAT to an own address"). */
  ownAddresses: Set<string>;
}

const isVif = (name: string) => /^vif\d/.test(name);

function canonical(addr: string): string {
  return addr.includes(':') ? parseIPv6(addr) ?? addr : addr;
}

export function parseTable(doc: { nftables: Record<string, any>[] } | undefined, family: Family, kernel: ObservedKernel, tables: ObservedTables): void {
  if (!doc) {
    tables.chains[family] = undefined;
    return;
  }
  const chains = new Map<string, number>();
  const dnat: Record<string, any>[] = [];
  for (const item of doc.nftables) {
    if (item.chain) chains.set(item.chain.name, chains.get(item.chain.name) ?? 0);
    if (item.rule) {
      chains.set(item.rule.chain, (chains.get(item.rule.chain) ?? 0) + 1);
      if (item.rule.chain === 'dnat-dns') dnat.push(item);
      if (item.rule.chain === 'antispoof') {
        const expr = item.rule.expr as any[] | undefined;
        if (expr?.length === 2 && expr[0]?.counter && 'drop' in expr[1]) tables.antispoofDrops[family] += Number(expr[0].counter.packets) || 0;
      }
    }
    if (item.set && (item.set.name === 'allowed' || item.set.name === 'downstream')) {
      for (const e of item.set.elem ?? []) {
        if (item.set.name === 'allowed' && Array.isArray(e?.concat)) kernel.allowed[family].add(`${e.concat[0]} ${canonical(String(e.concat[1]))}`);
        else if (item.set.name === 'downstream' && typeof e === 'string') kernel.downstream[family].add(canonical(e));
      }
    }
  }
  tables.chains[family] = chains;
  if (family === 'ip') tables.dnatDns = { nftables: dnat };
}

export async function observe(opts: { ipv6: boolean }): Promise<Observation> {
  const [addrs, routes4, routes6, neigh, t4, t6] = await Promise.all([
    ipJson<any[]>(['addr', 'show']),
    ipJson<any[]>(['-4', 'route', 'show', 'table', 'main']),
    opts.ipv6 ? ipJson<any[]>(['-6', 'route', 'show', 'table', 'main']) : Promise.resolve([]),
    ipJson<any[]>(['neigh', 'show', 'nud', 'permanent']),
    nftListJson(['table', 'ip', 'qubes']),
    opts.ipv6 ? nftListJson(['table', 'ip6', 'qubes']) : Promise.resolve(undefined),
  ]);
  const fw = await nftListJson(['chain', 'ip', 'qubes-firewall', 'forward']).catch(() => undefined);
  const kernel: ObservedKernel = {
    vifLinks: new Map(),
    allowed: { ip: new Set(), ip6: new Set() },
    downstream: { ip: new Set(), ip6: new Set() },
    routes: new Map(),
    addrs: new Map(),
    neigh: new Map(),
    sysctl: readSysctl,
  };
  const ownAddresses = new Set<string>();
  for (const link of addrs) {
    const name = String(link.ifname);
    for (const a of link.addr_info ?? []) if (a.local) ownAddresses.add(canonical(String(a.local)));
    if (!isVif(name)) continue;
    kernel.vifLinks.set(name, { group: String(link.group ?? 'default'), up: Array.isArray(link.flags) && link.flags.includes('UP') });
    const set = new Set<string>();
    for (const a of link.addr_info ?? []) {
      if (a.family === 'inet6' && a.scope === 'link') continue;
      set.add(`${canonical(String(a.local))}/${a.prefixlen}`);
    }
    kernel.addrs.set(name, set);
  }
  for (const r of [...routes4, ...routes6]) {
    const dev = String(r.dev ?? '');
    const dst = String(r.dst ?? '');
    if (!isVif(dev) || r.protocol === 'kernel' || dst.includes('/') || dst === 'default' || r.gateway) continue;
    let s = kernel.routes.get(dev);
    if (!s) kernel.routes.set(dev, (s = new Set()));
    s.add(`${canonical(dst)} ${r.metric ?? 0}`);
  }
  for (const n of neigh) {
    const dev = String(n.dev ?? '');
    if (!isVif(dev) || !n.lladdr) continue;
    let m = kernel.neigh.get(dev);
    if (!m) kernel.neigh.set(dev, (m = new Map()));
    m.set(canonical(String(n.dst)), String(n.lladdr));
  }
  const tables: ObservedTables = {
    chains: { ip: undefined, ip6: undefined },
    dnatDns: undefined,
    antispoofDrops: { ip: 0, ip6: 0 },
    firewallSkeleton: !!fw?.nftables.some((i) => i.chain?.name === 'forward' && i.chain?.policy === 'drop'),
  };
  parseTable(t4, 'ip', kernel, tables);
  if (opts.ipv6) parseTable(t6, 'ip6', kernel, tables);
  return { kernel, tables, ownAddresses };
}

/** Addresses of this namespace only (cheaper than observe(), for DNS re-learning). */
export async function ownAddresses(): Promise<Set<string>> {
  const addrs = await ipJson<any[]>(['addr', 'show']);
  const out = new Set<string>();
  for (const link of addrs) for (const a of link.addr_info ?? []) if (a.local) out.add(canonical(String(a.local)));
  return out;
}

// Reads what the kernel holds for the driver: vif* links, their host routes, addresses and
// permanent neighbours (`ip -j`), and the driver's tables (`nft -j`). Used only for full
// reconciliation and status, never per event.
//
// Few processes, all at once: each spawn costs the agent's main thread ~8 ms, and the first
// full turn is on the path of the first vif after idle. The three ip reads are ONE
// `ip -j -batch -` (a route dump of every table, filtered to main here, gives both families
// in one command). The nft reads stay one `nft list` per table: nft 1.0.6 cannot list
// several objects in one `-f` (its cache is filtered by the first list command, so the next
// ones find nothing), `list ruleset` would also dump the firewall's tables (1.2 MB and
// ~200 ms with 1,000 qubes' rules), and listing in process crashes libnftables 1.1.3.
import { parseIPv6 } from '@qubes-net/common';
import { createNftWriter } from '@qubes-net/common/kernel';
import { ipJsonFast as ipJson, runProcess } from './process.js';
import type { ObservedKernel } from '../model/reconcile.js';
import type { Family } from '../model/ruleset.js';
import { readSysctl } from './procfs.js';

export interface ObservedTables {
  /** Chain name → number of rules, per family; undefined when the table is missing. */
  chains: Record<Family, Map<string, number> | undefined>;
  /** The `dnat-dns` chain as nft JSON, for describeDnsChainJson. */
  dnatDns: { nftables: Record<string, any>[] } | undefined;
  /** The same for `ip6 qubes`. */
  dnatDns6?: { nftables: Record<string, any>[] } | undefined;
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
  else tables.dnatDns6 = { nftables: dnat };
}

/**
 * Splits the output of several JSON printers in a row (`ip -j -batch` prints one document per
 * command) into its documents. Throws on anything that is not a sequence of whole documents.
 */
export function parseJsonSequence(text: string): unknown[] {
  const out: unknown[] = [];
  let depth = 0;
  let inString = false;
  let start = -1;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (depth++ === 0) start = i;
    } else if (c === 0x5d || c === 0x7d) {
      if (--depth < 0) throw new Error('unbalanced JSON in tool output');
      if (depth === 0) out.push(JSON.parse(text.slice(start, i + 1)));
    } else if (depth === 0 && c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
      throw new Error(`unexpected text between JSON documents in tool output at ${i}`);
    }
  }
  if (depth !== 0 || inString) throw new Error('truncated JSON in tool output');
  return out;
}

/** The ip reads of one observation, in this order, as one batch. */
export const IP_READS = ['addr show', 'route show table all', 'neigh show nud permanent'] as const;

export interface IpReads {
  addrs: any[];
  /** Routes of the main table, IPv4 then IPv6 as `ip -4/-6 route show table main` list them. */
  routes4: any[];
  routes6: any[];
  neigh: any[];
}

/** Parses the output of `ip -j -batch -` run with IP_READS. */
export function parseIpReads(stdout: string, ipv6: boolean): IpReads {
  const docs = parseJsonSequence(stdout);
  if (docs.length !== IP_READS.length || !docs.every(Array.isArray)) throw new Error(`ip batch printed ${docs.length} lists, expected ${IP_READS.length}`);
  const [addrs, routes, neigh] = docs as any[][];
  const routes4: any[] = [];
  const routes6: any[] = [];
  for (const r of routes!) {
    // The main table is the one ip prints without a `table` field (newer ip may name it).
    if (r?.table !== undefined && r.table !== 'main') continue;
    if (String(r.dst ?? '').includes(':')) {
      if (ipv6) routes6.push(r);
    } else routes4.push(r);
  }
  return { addrs: addrs!, routes4, routes6, neigh: neigh! };
}

async function readIp(ipv6: boolean): Promise<IpReads> {
  const { stdout } = await runProcess('ip', ['-j', '-batch', '-'], { input: IP_READS.join('\n') + '\n' });
  return parseIpReads(stdout, ipv6);
}

/**
 * `firewall: false` leaves out the firewall's forward chain (`firewallSkeleton` is then false):
 * only status reports it, a full turn never reads it.
 */
export async function observe(opts: { ipv6: boolean; firewall?: boolean }): Promise<Observation> {
  const [{ addrs, routes4, routes6, neigh }, t4, t6, fw] = await Promise.all([
    readIp(opts.ipv6),
    nftListJson(['table', 'ip', 'qubes']),
    opts.ipv6 ? nftListJson(['table', 'ip6', 'qubes']) : Promise.resolve(undefined),
    opts.firewall === false ? Promise.resolve(undefined) : nftListJson(['chain', 'ip', 'qubes-firewall', 'forward']).catch(() => undefined),
  ]);
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

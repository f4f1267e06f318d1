// nft text of the driver's tables `ip qubes` / `ip6 qubes` (upstream's names, sets and user
// chains) and of set-element changes. Pure: the kernel writer only pipes it to `nft -f`.
//
// Idempotence: the base script only `add`s tables, sets and chains (a no-op when they exist)
// and then flushes and refills the chains that belong to the driver, all in one transaction:
// loading it twice leaves one copy of every rule, and the packet path never sees a gap. The
// user chains custom-input/custom-forward are added if missing and never flushed. The sets
// allowed/downstream are never flushed here: their elements are reconciled one by one.
import { nftQuote } from '@qubes-net/common';
import { dnsChainStatements, type DnsMapping } from './dns.js';

export type Family = 'ip' | 'ip6';

/** Base chain priorities (docs/contracts.md): distinct per hook so the order is defined. */
export const PRIORITY = {
  prerouting: 'raw',
  dnatDns: 'dstnat',
  input: 'filter',
  forward: 'filter',
  egressGuard: 'filter + 50',
  postrouting: 'srcnat',
} as const;

/** Chains the driver owns and rewrites on every base load. */
export const OWN_CHAINS: Record<Family, string[]> = {
  ip: ['prerouting', 'antispoof', 'input', 'forward', 'egress-guard', 'postrouting'],
  ip6: ['prerouting', 'antispoof', '_icmpv6', 'input', 'forward', 'egress-guard', 'postrouting'],
};

export const USER_CHAINS = ['custom-input', 'custom-forward'] as const;

export interface BaseRulesetOptions {
  /** Load `ip6 qubes` too (the kernel has IPv6). */
  ipv6: boolean;
  connected4: readonly string[];
  connected6: readonly string[];
  /** Content of the dnat-dns chain, loaded in the same transaction. */
  dns: DnsMapping;
  /** The firewall's idempotent skeleton, when the qubes-firewall service is on. */
  firewallSkeleton?: string;
  /** Extra statements (the flowtable) appended to the transaction. */
  extra?: readonly string[];
}

const ADDR_TYPE: Record<Family, string> = { ip: 'ipv4_addr', ip6: 'ipv6_addr' };

function declarations(f: Family): string[] {
  const t = `${f} qubes`;
  const out = [
    `add table ${t}`,
    `add set ${t} downstream { type ${ADDR_TYPE[f]}; }`,
    `add set ${t} allowed { type ifname . ${ADDR_TYPE[f]}; }`,
    `add set ${t} connected { type ${ADDR_TYPE[f]}; }`,
    `add chain ${t} custom-input`,
    `add chain ${t} custom-forward`,
    `add chain ${t} antispoof`,
    `add chain ${t} prerouting { type filter hook prerouting priority ${PRIORITY.prerouting}; policy accept; }`,
    `add chain ${t} input { type filter hook input priority ${PRIORITY.input}; policy drop; }`,
    `add chain ${t} forward { type filter hook forward priority ${PRIORITY.forward}; policy accept; }`,
    `add chain ${t} egress-guard { type filter hook postrouting priority ${PRIORITY.egressGuard}; policy accept; }`,
    `add chain ${t} postrouting { type nat hook postrouting priority ${PRIORITY.postrouting}; policy accept; }`,
  ];
  if (f === 'ip') out.push(`add chain ${t} dnat-dns { type nat hook prerouting priority ${PRIORITY.dnatDns}; policy accept; }`);
  else out.push(`add chain ${t} _icmpv6`);
  return out;
}

function rules(f: Family): string[] {
  const t = `${f} qubes`;
  const a = f === 'ip' ? 'ip' : 'ip6';
  const r = (chain: string, rule: string) => `add rule ${t} ${chain} ${rule}`;
  const out = [
    // Anti-spoofing before anything else (raw priority, before conntrack): a vif may only
    // send from its own addresses. Vifs not configured yet (no group 2) are vifs all the same
    // and have no element in @allowed, so they send nothing.
    r('prerouting', 'iifgroup 2 goto antispoof'),
    r('prerouting', 'iifname "vif*" goto antispoof'),
    r('prerouting', `${a} saddr @downstream counter drop`),
    r('prerouting', `${a} saddr @connected counter drop`),
    r('antispoof', `iifname . ${a} saddr @allowed accept`),
    r('antispoof', 'counter drop'),
    // Nothing addressed to a downstream qube leaves through a non-vif interface.
    r('egress-guard', 'oifgroup 2 accept'),
    r('egress-guard', 'oifname "vif*" accept'),
    r('egress-guard', `${a} daddr @downstream counter drop`),
    r('egress-guard', `${a} daddr @connected counter drop`),
    // NAT on every hop except towards downstream and loopback.
    r('postrouting', 'oifgroup 2 accept'),
    r('postrouting', 'oif "lo" accept'),
    r('postrouting', 'masquerade'),
    // Forward: downstream qubes reach out, nothing new reaches in, not even from each other.
    r('forward', 'jump custom-forward'),
    r('forward', 'ct state invalid counter drop'),
    r('forward', 'ct state established,related accept'),
    r('forward', 'oifgroup 2 counter drop'),
    r('forward', 'oifname "vif*" counter drop'),
    r('input', 'jump custom-input'),
    r('input', 'ct state invalid counter drop'),
  ];
  if (f === 'ip') {
    out.push(
      r('input', 'iifgroup 2 udp dport 68 counter drop'),
      r('input', 'ct state established,related accept'),
      r('input', 'iifgroup 2 meta l4proto icmp accept'),
      r('input', 'iif "lo" accept'),
      r('input', 'iifgroup 2 counter reject with icmp type host-prohibited'),
      r('input', 'counter'),
    );
  } else {
    out.push(
      r('input', 'ct state established,related accept'),
      r('input', 'iifgroup 2 goto _icmpv6'),
      r('input', 'iif "lo" accept'),
      r('input', 'ip6 saddr fe80::/64 ip6 daddr fe80::/64 udp dport 546 accept'),
      r('input', 'meta l4proto ipv6-icmp accept'),
      r('input', 'counter'),
      r('_icmpv6', 'meta l4proto != ipv6-icmp counter reject with icmpv6 type admin-prohibited'),
      r('_icmpv6', 'icmpv6 type { nd-router-advert, nd-redirect } counter drop'),
      r('_icmpv6', 'accept'),
    );
  }
  return out;
}

export function connectedStatements(f: Family, addrs: readonly string[]): string[] {
  const out = [`flush set ${f} qubes connected`];
  if (addrs.length) out.push(`add element ${f} qubes connected { ${addrs.join(', ')} }`);
  return out;
}

/**
 * The whole base transaction: the only place the base ruleset is built (the loop's start,
 * the `base-ruleset` command and the files rendered for boot all call it).
 */
export function renderBaseRuleset(opts: BaseRulesetOptions): string {
  const families: Family[] = opts.ipv6 ? ['ip', 'ip6'] : ['ip'];
  const lines: string[] = [];
  for (const f of families) lines.push(...declarations(f));
  for (const f of families) for (const c of OWN_CHAINS[f]) lines.push(`flush chain ${f} qubes ${c}`);
  for (const f of families) lines.push(...rules(f));
  lines.push(...connectedStatements('ip', opts.connected4));
  if (opts.ipv6) lines.push(...connectedStatements('ip6', opts.connected6));
  lines.push(...dnsChainStatements(opts.dns));
  if (opts.firewallSkeleton) lines.push(opts.firewallSkeleton.trimEnd());
  if (opts.extra) lines.push(...opts.extra);
  return lines.join('\n') + '\n';
}

/** @deprecated the old name of renderBaseRuleset. */
export const baseRulesetScript = renderBaseRuleset;

/** A set element of `allowed`: the vif name and one of its addresses. */
export function allowedElement(vif: string, addr: string): string {
  return `${nftQuote(vif)} . ${addr}`;
}

export interface SetChange {
  family: Family;
  set: 'allowed' | 'downstream';
  add: string[];
  remove: string[];
}

/**
 * Statements for element changes. A removal is written as add-then-delete in the same
 * transaction: nft 1.0.6 has no `destroy`, and deleting a missing element would abort the
 * whole transaction (the kernel may have lost it, e.g. by hand).
 */
export function elementStatements(changes: readonly SetChange[]): string[] {
  const out: string[] = [];
  for (const c of changes) {
    const target = `${c.family} qubes ${c.set}`;
    if (c.remove.length) {
      const list = c.remove.join(', ');
      out.push(`add element ${target} { ${list} }`, `delete element ${target} { ${list} }`);
    }
  }
  for (const c of changes) {
    if (c.add.length) out.push(`add element ${c.family} qubes ${c.set} { ${c.add.join(', ')} }`);
  }
  return out;
}

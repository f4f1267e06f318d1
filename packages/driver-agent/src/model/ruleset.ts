// The driver's tables `ip qubes` / `ip6 qubes` (upstream's names, sets and user chains) and
// set-element changes, as typed operations on an NftTransaction (common's kernel layer: each
// name, address and rule checked when added). Pure. The text forms (for the files loaded at
// boot, for tests) are the transaction's one rendering.
//
// Idempotence: the base script only `add`s tables, sets and chains (a no-op when they exist)
// and then flushes and refills the chains that belong to the driver, all in one transaction:
// loading it twice leaves one copy of every rule, and the packet path never sees a gap. The
// user chains custom-input/custom-forward are added if missing and never flushed. The sets
// allowed/downstream are never flushed here: their elements are reconciled one by one.
import type { NftTransaction, NftElement, NftTableRef } from '@qubes-net/common/kernel';
import { renderLines } from './nft-text.js';

export { renderLines };
import { addDnsChain, type DnsMapping } from './dns.js';

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

const ADDR_TYPE = { ip: 'ipv4_addr', ip6: 'ipv6_addr' } as const;

export function qubesTable(f: Family): NftTableRef {
  return { family: f, name: 'qubes' };
}

function declarations(tx: NftTransaction, f: Family): void {
  const t = qubesTable(f);
  tx.addTable(t)
    .addSet(t, 'downstream', { type: ADDR_TYPE[f] })
    .addSet(t, 'allowed', { type: ['ifname', ADDR_TYPE[f]] })
    .addSet(t, 'connected', { type: ADDR_TYPE[f] })
    .addChain(t, 'custom-input')
    .addChain(t, 'custom-forward')
    .addChain(t, 'antispoof')
    .addChain(t, 'prerouting', { type: 'filter', hook: 'prerouting', priority: PRIORITY.prerouting, policy: 'accept' })
    .addChain(t, 'input', { type: 'filter', hook: 'input', priority: PRIORITY.input, policy: 'drop' })
    .addChain(t, 'forward', { type: 'filter', hook: 'forward', priority: PRIORITY.forward, policy: 'accept' })
    .addChain(t, 'egress-guard', { type: 'filter', hook: 'postrouting', priority: PRIORITY.egressGuard, policy: 'accept' })
    .addChain(t, 'postrouting', { type: 'nat', hook: 'postrouting', priority: PRIORITY.postrouting, policy: 'accept' });
  if (f === 'ip') tx.addChain(t, 'dnat-dns', { type: 'nat', hook: 'prerouting', priority: PRIORITY.dnatDns, policy: 'accept' });
  else tx.addChain(t, '_icmpv6');
}

function rules(tx: NftTransaction, f: Family): void {
  const t = qubesTable(f);
  const a = f === 'ip' ? 'ip' : 'ip6';
  const r = (chain: string, rule: string): [string, string] => [chain, rule];
  const out: Array<[string, string]> = [
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
  for (const [chain, rule] of out) tx.addRule(t, chain, rule);
}

/** Replaces the `connected` set's elements. */
export function addConnected(tx: NftTransaction, f: Family, addrs: readonly string[]): void {
  tx.flushSet(qubesTable(f), 'connected');
  if (addrs.length) tx.addElements(qubesTable(f), 'connected', addrs);
}

export function connectedStatements(f: Family, addrs: readonly string[]): string[] {
  return renderLines((tx) => addConnected(tx, f, addrs));
}

/** The base tables (no firewall skeleton: that is another package's text). */
export function addBase(tx: NftTransaction, opts: BaseRulesetOptions): void {
  const families: Family[] = opts.ipv6 ? ['ip', 'ip6'] : ['ip'];
  for (const f of families) declarations(tx, f);
  for (const f of families) for (const c of OWN_CHAINS[f]) tx.flushChain(qubesTable(f), c);
  for (const f of families) rules(tx, f);
  addConnected(tx, 'ip', opts.connected4);
  if (opts.ipv6) addConnected(tx, 'ip6', opts.connected6);
  addDnsChain(tx, opts.dns);
}

/**
 * The whole base transaction as text: the only place the base ruleset is built (the loop's
 * start, the `base-ruleset` command and the files rendered for boot all come here).
 */
export function renderBaseRuleset(opts: BaseRulesetOptions): string {
  const lines = renderLines((tx) => addBase(tx, opts));
  if (opts.firewallSkeleton) lines.push(opts.firewallSkeleton.trimEnd());
  if (opts.extra) lines.push(...opts.extra);
  return lines.join('\n') + '\n';
}

/** @deprecated the old name of renderBaseRuleset. */
export const baseRulesetScript = renderBaseRuleset;

/** A set element of `allowed`: the vif name and one of its addresses. */
export function allowedElement(vif: string, addr: string): readonly [string, string] {
  return [vif, addr];
}

export interface SetChange {
  family: Family;
  set: 'allowed' | 'downstream';
  add: NftElement[];
  remove: NftElement[];
}

/**
 * Element changes. A removal is add-then-delete in the same transaction (destroyElements):
 * nft 1.0.6 has no `destroy`, and deleting a missing element would abort the whole
 * transaction (the kernel may have lost it, e.g. by hand).
 */
export function addElementChanges(tx: NftTransaction, changes: readonly SetChange[]): void {
  for (const c of changes) if (c.remove.length) tx.destroyElements(qubesTable(c.family), c.set, c.remove);
  for (const c of changes) if (c.add.length) tx.addElements(qubesTable(c.family), c.set, c.add);
}

export function elementStatements(changes: readonly SetChange[]): string[] {
  return renderLines((tx) => addElementChanges(tx, changes));
}

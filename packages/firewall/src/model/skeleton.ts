// The firewall's tables, laid out as upstream's users know them, in two parts.
//
// 1. `addFirewallSkeleton` / `firewallSkeleton()`: objects only, loadable any number of times
//    (the driver loads it in every base transaction, before it enables forwarding; the build-time
//    base files include it). Only `add` commands: nothing existing is flushed or deleted, so
//    neither our per-qube chains, dispatch elements and dns-addr, nor anything a user's script
//    added to any chain of these tables, is touched. The base chain `forward` has policy drop
//    from its creation: until its rules exist, nothing is forwarded at all (fail closed).
//
// 2. `addForwardRules`: the rules of `forward` itself, which upstream builds once at start,
//    before the user's hooks run. Adding rules is not idempotent (upstream appended duplicates
//    at every restart), so they are added only when the kernel shows none of ours in that
//    chain (`forwardRulesPresent`, recognised by their comment), and inserted at the top, so
//    that whatever a user appended stays after them as upstream's order has it. After that our
//    rebuilds never touch `forward` again: per-qube changes go to `qbs-*` chains and to the
//    dispatch map.
//
// Chains, as upstream names them: `forward` (base, policy drop) jumps to `qubes-forward` (empty:
// the user's; upstream kept a jump per qube there) and then looks the source address up in the
// verdict map `dispatch` (one hash lookup per packet instead of upstream's one rule per qube);
// `prerouting` and `postrouting` (base, policy accept) are empty: upstream put anti-spoofing of
// connected addresses there, which the driver's `qubes` table does here.

import { NftTransaction, type NftJson, type NftTableRef } from '@qubes-net/common/kernel';

export const FIREWALL_TABLE = 'qubes-firewall';
export const DISPATCH_MAP = 'dispatch';
export const DNS_SET = 'dns-addr';
export const FORWARD_CHAIN = 'forward';
/** Upstream's chain for per-qube jumps; here empty and left to users' scripts. */
export const USER_FORWARD_CHAIN = 'qubes-forward';
export const PREROUTING_CHAIN = 'prerouting';
export const POSTROUTING_CHAIN = 'postrouting';
/** Distinct from the driver's `qubes forward` (filter) and the accelerator (filter + 20). */
export const FORWARD_PRIORITY = 'filter + 10';
/**
 * Upstream used -300 on both hooks. Ours: before conntrack (-200) like upstream, and distinct
 * from the driver's `qubes prerouting` (raw), so the order of evaluation is defined.
 */
export const EDGE_PRIORITY = 'raw + 10';
/** The comment on the rules we put in `forward`: how a later start recognises them. */
export const FORWARD_RULE_COMMENT = 'qubes-net';

export type Family = 4 | 6;

/** nft's family keyword for our table of this IP family. */
export function nftFamily(family: Family): 'ip' | 'ip6' {
  return family === 4 ? 'ip' : 'ip6';
}

/** The address type of the sets and map keys of this family. */
export function nftAddrType(family: Family): 'ipv4_addr' | 'ipv6_addr' {
  return family === 4 ? 'ipv4_addr' : 'ipv6_addr';
}

/** Upstream's chain name for a source address: '.' and ':' become '-' (qbs-10-137-0-7). */
export function qubeChainName(addr: string): string {
  return 'qbs-' + addr.replace(/[.:]/g, '-');
}

/** Our table of this IP family. */
export function firewallTable(family: Family): NftTableRef {
  return { family: nftFamily(family), name: FIREWALL_TABLE };
}

/** Adds one family's objects (no rule, no flush) to `tx`. */
export function addFamilySkeleton(tx: NftTransaction, family: Family): NftTransaction {
  const t = firewallTable(family);
  const type = nftAddrType(family);
  return tx
    .addTable(t)
    .addSet(t, DNS_SET, { type })
    .addMap(t, DISPATCH_MAP, { type, value: 'verdict' })
    .addChain(t, USER_FORWARD_CHAIN)
    .addChain(t, FORWARD_CHAIN, { type: 'filter', hook: 'forward', priority: FORWARD_PRIORITY, policy: 'drop' })
    .addChain(t, PREROUTING_CHAIN, { type: 'filter', hook: 'prerouting', priority: EDGE_PRIORITY, policy: 'accept' })
    .addChain(t, POSTROUTING_CHAIN, { type: 'filter', hook: 'postrouting', priority: EDGE_PRIORITY, policy: 'accept' });
}

/** The rules of `forward`, in order. */
export function forwardRuleExprs(family: Family): string[] {
  return [
    'ct state established,related accept',
    // Only traffic from downstream qubes is ours to filter; everything else is the driver's.
    'iifname != "vif*" accept',
    // The user's chain first, as upstream's order had it (user rules before per-qube chains).
    `jump ${USER_FORWARD_CHAIN}`,
    // One hash lookup per packet however many qubes there are; no element: on to the rules a
    // user appended, then the policy drop.
    `${nftFamily(family)} saddr vmap @${DISPATCH_MAP}`,
  ];
}

/**
 * Adds `forward`'s rules at the top of that chain (each insert goes first, so in reverse).
 * Only for a chain that has none of them yet (see forwardRulesPresent).
 */
export function addForwardRules(tx: NftTransaction, family: Family): NftTransaction {
  const t = firewallTable(family);
  for (const expr of forwardRuleExprs(family).reverse()) tx.addRule(t, FORWARD_CHAIN, expr, { insert: true, comment: FORWARD_RULE_COMMENT });
  return tx;
}

/** Whether a listing of our `forward` chain (nft -j) holds any of our rules. */
export function forwardRulesPresent(json: NftJson | undefined): boolean {
  return !!json?.nftables.some((item) => item.rule?.chain === FORWARD_CHAIN && item.rule.comment === FORWARD_RULE_COMMENT);
}

/** Adds both families' objects to `tx`. */
export function addFirewallSkeleton(tx: NftTransaction): NftTransaction {
  return addFamilySkeleton(addFamilySkeleton(tx, 4), 6);
}

/**
 * The idempotent nft script creating `ip qubes-firewall` and `ip6 qubes-firewall`: set
 * `dns-addr`, verdict map `dispatch`, chains `qubes-forward`, `forward` (hook forward, priority
 * filter + 10, policy drop), `prerouting` and `postrouting` (policy accept). Text for the
 * driver's base ruleset and the build-time base files. Holds no rule: the firewall adds
 * `forward`'s once (ensureFirewallTables).
 */
export function firewallSkeleton(): string {
  return addFirewallSkeleton(new NftTransaction()).render();
}

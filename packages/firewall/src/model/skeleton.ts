// The firewall's tables, as an nft script that may be loaded any number of times.
//
// The driver loads this inside its own base transaction before it enables forwarding, and the
// firewall daemon loads it again at start: so the forward chain's drop policy exists before a
// single packet is forwarded, whichever of the two starts first.
//
// Only `add` commands create objects, so nothing the daemon owns (per-qube chains, dispatch
// elements, dns-addr) and nothing a user added (their own chains) is touched. The one exception
// is the base chain `forward` itself: its three rules are the skeleton's own, and re-adding them
// on every load would append duplicates (upstream's bug), so that chain alone is flushed and
// refilled, inside the same atomic transaction: no packet ever sees it empty.

import { NftTransaction, type NftTableRef } from '@qubes-net/common/kernel';

export const FIREWALL_TABLE = 'qubes-firewall';
export const DISPATCH_MAP = 'dispatch';
export const DNS_SET = 'dns-addr';
export const FORWARD_CHAIN = 'forward';
/** Distinct from the driver's `qubes forward` (filter) and the accelerator (filter + 20). */
export const FORWARD_PRIORITY = 'filter + 10';

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

/** Adds one family's skeleton to `tx`. */
export function addFamilySkeleton(tx: NftTransaction, family: Family): NftTransaction {
  const t = firewallTable(family);
  const type = nftAddrType(family);
  return tx
    .addTable(t)
    .addSet(t, DNS_SET, { type })
    .addMap(t, DISPATCH_MAP, { type, value: 'verdict' })
    .addChain(t, FORWARD_CHAIN, { type: 'filter', hook: 'forward', priority: FORWARD_PRIORITY, policy: 'drop' })
    .flushChain(t, FORWARD_CHAIN)
    .addRule(t, FORWARD_CHAIN, 'ct state established,related accept')
    // Only traffic from downstream qubes is ours to filter; everything else is the driver's.
    .addRule(t, FORWARD_CHAIN, 'iifname != "vif*" accept')
    // One hash lookup per packet however many qubes there are; no element → policy drop.
    .addRule(t, FORWARD_CHAIN, `${family === 4 ? 'ip' : 'ip6'} saddr vmap @${DISPATCH_MAP}`);
}

/** Adds both families' skeletons to `tx`. */
export function addFirewallSkeleton(tx: NftTransaction): NftTransaction {
  return addFamilySkeleton(addFamilySkeleton(tx, 4), 6);
}

/**
 * The idempotent nft script creating `ip qubes-firewall` and `ip6 qubes-firewall`: set
 * `dns-addr`, verdict map `dispatch` (source address → jump to the qube's chain) and the base
 * chain `forward` (hook forward, priority filter + 10, policy drop). Text for the driver's
 * base ruleset and the build-time base files.
 */
export function firewallSkeleton(): string {
  return addFirewallSkeleton(new NftTransaction()).render();
}

// Whether the loaded base ruleset is the one the driver would load (pure): every own chain
// present with the number of rules the base leaves in it (so duplicates show), and the dnat-dns chain holding the
// DNS mapping in force. Part of `status` and of on-demand reconciliation.
import { FakeKernel, NftTransaction } from '@qubes-net/common/kernel';
import { addBase, OWN_CHAINS, qubesTable, type Family } from './ruleset.js';
import { describeDnsRules, describeDnsChainJson, type DnsMapping } from './dns.js';

const cache = new Map<boolean, Record<Family, Map<string, number>>>();

/**
 * Rules per own chain of the base, as the kernel holds them after the base transaction: the
 * typed base is applied to the in-memory FakeKernel and its chains are read back (no counting
 * of our own text).
 */
export function expectedRuleCounts(ipv6: boolean): Record<Family, Map<string, number>> {
  const hit = cache.get(ipv6);
  if (hit) return hit;
  const tx = new NftTransaction();
  addBase(tx, { ipv6, connected4: [], connected6: [], dns: { mode: 'none', pairs: [], upstream: [] } });
  const fk = new FakeKernel();
  const r = fk.applySync(tx);
  if (!r.ok) throw new Error(`the base ruleset does not apply to the fake kernel: ${r.error}`);
  const out: Record<Family, Map<string, number>> = { ip: new Map(), ip6: new Map() };
  for (const f of ipv6 ? (['ip', 'ip6'] as const) : (['ip'] as const)) {
    for (const c of OWN_CHAINS[f]) out[f].set(c, fk.rules(qubesTable(f), c)?.length ?? 0);
  }
  cache.set(ipv6, out);
  return out;
}

export interface LoadedTables {
  /** Chain name → number of rules, per family; undefined when the table is missing. */
  chains: Record<Family, Map<string, number> | undefined>;
  /** `nft -j list` of the dnat-dns chain's rules. */
  dnatDns: { nftables: Record<string, any>[] } | undefined;
}

export function baseDifferences(tables: LoadedTables, ipv6: boolean, dns: DnsMapping | undefined): string[] {
  const diffs: string[] = [];
  const expected = expectedRuleCounts(ipv6);
  for (const f of ipv6 ? (['ip', 'ip6'] as const) : (['ip'] as const)) {
    const have = tables.chains[f];
    if (!have) {
      diffs.push(`table ${f} qubes missing`);
      continue;
    }
    for (const [chain, n] of expected[f]) {
      if (!have.has(chain)) diffs.push(`${f} qubes: chain ${chain} missing`);
      else if (have.get(chain) !== n) diffs.push(`${f} qubes: chain ${chain} has ${have.get(chain)} rules, want ${n}`);
    }
  }
  if (dns) {
    const want = describeDnsRules(dns).join('\n');
    const have = describeDnsChainJson(tables.dnatDns)?.join('\n');
    if (want !== have) diffs.push('ip qubes: dnat-dns chain differs from the DNS mapping');
  }
  return diffs;
}

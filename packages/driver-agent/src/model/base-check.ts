// Whether the loaded base ruleset is the one the driver would load (pure): every own chain
// present with its number of rules (so duplicates show), and the dnat-dns chain holding the
// DNS mapping in force. Part of `status` and of on-demand reconciliation.
import { baseRulesetScript, OWN_CHAINS, type Family } from './ruleset.js';
import { describeDnsRules, describeDnsChainJson, type DnsMapping } from './dns.js';

/** Rules per own chain in the base script. */
export function expectedRuleCounts(ipv6: boolean): Record<Family, Map<string, number>> {
  const script = baseRulesetScript({ ipv6, connected4: [], connected6: [], dns: { mode: 'none', pairs: [], upstream: [] } });
  const out: Record<Family, Map<string, number>> = { ip: new Map(), ip6: new Map() };
  for (const f of ['ip', 'ip6'] as const) for (const c of OWN_CHAINS[f]) out[f].set(c, 0);
  for (const line of script.split('\n')) {
    const m = /^add rule (ip6?) qubes (\S+) /.exec(line);
    if (m) out[m[1] as Family].set(m[2]!, (out[m[1] as Family].get(m[2]!) ?? 0) + 1);
  }
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

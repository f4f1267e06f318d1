// Our tables made whole before any qube's rules: the skeleton's objects (idempotent) and, for a
// family whose `forward` chain holds none of our rules yet, those rules, inserted at its top.
// Run at the start of the daemon (before the user's hooks, as upstream's init), at the engine's
// start (the network agent's path) and when our table vanished: never twice into one chain,
// and never over what a user added.
import { NftTransaction, type NftApplyResult, type NftJson } from '@qubes-net/common/kernel';
import { addFirewallSkeleton, addForwardRules, forwardRulesPresent, nftFamily, FIREWALL_TABLE, type Family } from '../model/skeleton.js';

export interface TablesPort {
  apply(tx: NftTransaction): Promise<NftApplyResult>;
  list(what: readonly string[]): Promise<NftJson | undefined>;
}

/** The transaction that completes our tables as the kernel shows them now. */
export async function firewallTablesTransaction(nft: TablesPort): Promise<{ tx: NftTransaction; built: Family[] }> {
  const tx = addFirewallSkeleton(new NftTransaction());
  const built: Family[] = [];
  for (const family of [4, 6] as const) {
    if (forwardRulesPresent(await nft.list(['table', nftFamily(family), FIREWALL_TABLE]))) continue;
    addForwardRules(tx, family);
    built.push(family);
  }
  return { tx, built };
}

/** Completes our tables (see firewallTablesTransaction) in one transaction. */
export async function ensureFirewallTables(nft: TablesPort): Promise<NftApplyResult & { built: Family[] }> {
  const { tx, built } = await firewallTablesTransaction(nft);
  return { ...(await nft.apply(tx)), built };
}

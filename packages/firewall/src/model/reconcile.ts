// What of our own state in the kernel no longer corresponds to any qube in QubesDB (rules of
// qubes whose entries were removed while we were not running, or a dispatch element pointing
// at the wrong chain). Only objects we own are considered: `qbs-*` chains and dispatch
// elements; user chains in our tables are never touched.
import { NftTransaction } from '@qubes-net/common/kernel';
import { DISPATCH_MAP, firewallTable, qubeChainName, type Family } from './skeleton.js';

export interface KernelView {
  /** Source address → chain its dispatch element jumps to. */
  dispatch: ReadonlyMap<string, string>;
  chains: Iterable<string>;
}

/** Adds the removal of our stale objects of `family` (known present: just listed) to `tx`. */
export function addStaleRemoval(tx: NftTransaction, family: Family, kernel: KernelView, wanted: ReadonlySet<string>): NftTransaction {
  const t = firewallTable(family);
  const keptChains = new Set<string>();
  for (const [addr, chain] of kernel.dispatch) {
    if (wanted.has(addr) && chain === qubeChainName(addr)) keptChains.add(chain);
    else tx.deleteElements(t, DISPATCH_MAP, [addr]);
  }
  const wantedChains = new Set([...wanted].map(qubeChainName));
  for (const chain of kernel.chains) {
    if (!chain.startsWith('qbs-') || wantedChains.has(chain)) continue;
    tx.flushChain(t, chain).deleteChain(t, chain);
  }
  return tx;
}

/** nft commands removing our stale objects of `family`; empty when there are none. */
export function staleObjectsScript(family: Family, kernel: KernelView, wanted: ReadonlySet<string>): string {
  return addStaleRemoval(new NftTransaction(), family, kernel, wanted).render();
}

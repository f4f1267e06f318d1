// What of our own state in the kernel no longer corresponds to any qube in QubesDB (rules of
// qubes whose entries were removed while we were not running, or a dispatch element pointing
// at the wrong chain). Only objects we own are considered: `qbs-*` chains and dispatch
// elements; user chains in our tables are never touched.
import { DISPATCH_MAP, FIREWALL_TABLE, nftFamily, qubeChainName, type Family } from './skeleton.js';

export interface KernelView {
  /** Source address → chain its dispatch element jumps to. */
  dispatch: ReadonlyMap<string, string>;
  chains: Iterable<string>;
}

/** nft commands removing our stale objects of `family`; empty when there are none. */
export function staleObjectsScript(family: Family, kernel: KernelView, wanted: ReadonlySet<string>): string {
  const t = `${nftFamily(family)} ${FIREWALL_TABLE}`;
  const lines: string[] = [];
  const keptChains = new Set<string>();
  for (const [addr, chain] of kernel.dispatch) {
    if (wanted.has(addr) && chain === qubeChainName(addr)) keptChains.add(chain);
    else lines.push(`delete element ${t} ${DISPATCH_MAP} { ${addr} }`);
  }
  const wantedChains = new Set([...wanted].map(qubeChainName));
  for (const chain of kernel.chains) {
    if (!chain.startsWith('qbs-') || wantedChains.has(chain)) continue;
    lines.push(`flush chain ${t} ${chain}`, `delete chain ${t} ${chain}`);
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

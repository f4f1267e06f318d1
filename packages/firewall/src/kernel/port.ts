// The real kernel behind the engine's KernelPort: nft transactions (libnftables in-process
// when available, else the nft binary) and conntrack-tools.
import type { NftOptions } from '@qubes-net/common';
import type { KernelPort } from '../engine.js';
import { applyScript, readFamilyState } from './nft.js';
import { libNftables } from './libnftables.js';
import { deleteConnection, listConnections } from './conntrack.js';

export interface RealKernelOptions extends NftOptions {
  /** Always spawn `nft -f` (also implied by `netns`: the library acts in our own namespace). */
  nftBinary?: boolean;
}

export function realKernel(opts: RealKernelOptions = {}): KernelPort & { applier: 'libnftables' | 'nft' } {
  const nftOpts: NftOptions = opts.netns ? { netns: opts.netns } : {};
  const lib = opts.nftBinary || opts.netns ? undefined : libNftables();
  return {
    applier: lib ? 'libnftables' : 'nft',
    apply: (script) => (lib ? lib.apply(script) : applyScript(script, nftOpts)),
    async readState(family) {
      const s = await readFamilyState(family, nftOpts);
      return { present: s.present, dispatch: s.dispatch, chains: s.chains.keys() };
    },
    listConnections: (family, src) => listConnections(family, src, nftOpts),
    deleteConnection: (conn) => deleteConnection(conn, nftOpts),
  };
}

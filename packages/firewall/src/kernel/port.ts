// The real kernel behind the engine's KernelPort: the one nft writer (libnftables in process
// when available, else the nft binary) and conntrack-tools.
import { nftWriterUsesLibrary } from '@qubes-net/common/kernel';
import type { KernelPort } from '../engine.js';
import { firewallNftWriter } from './nft.js';
import { deleteConnection, listConnections } from './conntrack.js';

export interface RealKernelOptions {
  netns?: string;
  /** Always spawn `nft -f` (also implied by `netns`: the library acts in our own namespace). */
  nftBinary?: boolean;
  /** Timeout for each conntrack run. */
  toolTimeoutMs?: number;
}

export function realKernel(opts: RealKernelOptions = {}): KernelPort & { applier: 'libnftables' | 'nft' } {
  const nsOpts = opts.netns ? { netns: opts.netns } : {};
  const nft = firewallNftWriter({ ...nsOpts, ...(opts.nftBinary ? { noLibrary: true } : {}) });
  const ct = { ...nsOpts, ...(opts.toolTimeoutMs ? { timeoutMs: opts.toolTimeoutMs } : {}) };
  return {
    applier: !opts.nftBinary && !opts.netns && nftWriterUsesLibrary() ? 'libnftables' : 'nft',
    apply: (tx) => nft.apply(tx),
    list: (what) => nft.list(what),
    listConnections: (family, src) => listConnections(family, src, ct),
    deleteConnection: (conn) => deleteConnection(conn, ct),
  };
}

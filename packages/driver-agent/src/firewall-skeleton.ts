// The firewall package's skeleton (its tables with the forward drop policy), loaded in the
// driver's base transaction so that forwarding never starts before that policy exists.
// Imported only when the qubes-firewall service is on, and only the skeleton module (no
// imports beyond the kernel layer), not the firewall package's whole entry point.
import type { NftTransaction } from '@qubes-net/common/kernel';

export type SkeletonAdder = (tx: NftTransaction) => void;

export async function loadFirewallSkeleton(): Promise<{ ok: true; add: SkeletonAdder; script: string } | { ok: false; error: string }> {
  try {
    const m = await import('@qubes-net/firewall/skeleton');
    const script = m.firewallSkeleton();
    if (typeof script !== 'string' || !script.trim()) return { ok: false, error: 'firewallSkeleton() returned no script' };
    return { ok: true, add: (tx) => void m.addFirewallSkeleton(tx), script };
  } catch (err) {
    return { ok: false, error: `firewall skeleton failed: ${String(err)}` };
  }
}

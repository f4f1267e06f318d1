// The firewall package's skeleton (its tables with the forward drop policy), loaded in the
// driver's base transaction so that forwarding never starts before that policy exists.
// Imported only when the qubes-firewall service is on, and only the skeleton module (a pure
// function with no imports), not the firewall package's whole entry point.
export async function loadFirewallSkeleton(): Promise<{ ok: true; script: string } | { ok: false; error: string }> {
  try {
    const { firewallSkeleton } = await import('@qubes-net/firewall/skeleton');
    const script = firewallSkeleton();
    if (typeof script !== 'string' || !script.trim()) return { ok: false, error: 'firewallSkeleton() returned no script' };
    return { ok: true, script };
  } catch (err) {
    return { ok: false, error: `firewallSkeleton() failed: ${String(err)}` };
  }
}

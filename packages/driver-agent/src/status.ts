// `qubes-net-driver status`: from the daemon when it runs, else computed read-only from
// QubesDB and the kernel. Text for people, --json for scripts.
import type { StatusReport } from './loop.js';

export function formatStatus(s: StatusReport): string {
  const lines: string[] = [];
  lines.push(`generation ${s.generation}; forwarding ipv4 ${s.forwarding.ipv4 ? 'on' : 'off'}, ipv6 ${s.forwarding.ipv6 ? 'on' : 'off'}; flowtables ${s.flowtables ? 'yes' : 'no (kernel has none)'}; firewall skeleton ${s.firewall ? 'loaded' : 'not loaded'}`);
  if (s.dns) {
    const pairs = s.dns.pairs.map((p) => (s.dns!.mode === 'dnat' ? `${p.virtual} → ${p.target}` : s.dns!.mode === 'forward' ? `${p.virtual} → forwarded upstream` : `${p.virtual} → dropped`));
    lines.push(`dns (${s.dns.mode}, from ${s.dns.source}): ${pairs.join(', ') || 'no virtual DNS configured'}`);
    for (const r of s.dns.rejected) lines.push(`  not used: ${r.server} (${r.reason})`);
  }
  lines.push(`anti-spoofing drops: ipv4 ${s.antispoofDrops.ip}, ipv6 ${s.antispoofDrops.ip6}`);
  const rows = s.vifs.map((v) => [v.vif, String(v.domid), v.state, String(v.generation), v.ips.join(' ') || '-', v.detail]);
  const header = ['VIF', 'DOMID', 'STATE', 'GEN', 'ADDRESSES', 'DETAIL'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  lines.push(fmt(header));
  for (const r of rows) lines.push(fmt(r));
  if (s.kernel.inSync) lines.push('kernel: matches the desired state');
  else {
    lines.push(`kernel: ${s.kernel.differences.length} difference(s) from the desired state:`);
    for (const d of s.kernel.differences) lines.push(`  - ${d}`);
  }
  return lines.join('\n') + '\n';
}

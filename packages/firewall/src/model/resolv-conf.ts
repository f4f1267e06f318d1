// This VM's own DNS servers from resolv.conf (untrusted text: only well-formed nameserver lines
// count). They fill the dns-addr sets (specialtarget=dns) and answer our dsthost lookups.
import { parseIPv4, parseIPv6 } from '@qubes-net/common';

export interface DnsServers {
  v4: string[];
  v6: string[];
}

/** At most this many servers are read, like the C resolver's MAXNS (3) with some slack. */
const MAX_SERVERS = 8;

export function parseResolvConf(text: string): DnsServers {
  const out: DnsServers = { v4: [], v6: [] };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const m = /^nameserver\s+(\S+)$/.exec(line);
    if (!m) continue;
    const v4 = parseIPv4(m[1]!);
    const v6 = v4 ? undefined : parseIPv6(m[1]!);
    if (v4 && !out.v4.includes(v4) && out.v4.length + out.v6.length < MAX_SERVERS) out.v4.push(v4);
    if (v6 && !out.v6.includes(v6) && out.v4.length + out.v6.length < MAX_SERVERS) out.v6.push(v6);
  }
  return out;
}

export function sameServers(a: DnsServers, b: DnsServers): boolean {
  return a.v4.join(' ') === b.v4.join(' ') && a.v6.join(' ') === b.v6.join(' ');
}

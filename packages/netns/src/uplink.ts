// What DHCP / NetworkManager would do in a real sys-net: address the uplink, add default
// routes, write resolv.conf with the fake internet's DNS servers.
import { writeFile } from 'node:fs/promises';
import { ipBatch, parseIPv4, parseIPv6, parseNetmask4, parsePrefix6 } from '@qubes-net/common';
import { assertIfName } from './names.js';
import { INTERNET } from './internet-plan.js';
import type { Qube } from './qube.js';

export interface UplinkConfig {
  /** default 192.0.2.2/24; false: an IPv6-only uplink (no IPv4 address or route) */
  ipv4?: string | false;
  /** default 192.0.2.1 */
  gateway?: string;
  /** e.g. 2001:db8:0:1::2/64 (INTERNET.netvm6); no IPv6 unless given */
  ipv6?: string;
  /** default 2001:db8:0:1::1 when ipv6 is given */
  gateway6?: string;
  /** nameservers for resolv.conf (default 198.51.100.53, 198.51.100.54); [] leaves resolv.conf alone */
  dns?: string[];
}

function cidr4(v: string): string {
  const [a, p] = v.split('/');
  if (!a || !parseIPv4(a) || p === undefined || parseNetmask4(p) === undefined) throw new Error(`invalid IPv4 address/prefix ${JSON.stringify(v)}`);
  return `${a}/${parseNetmask4(p)}`;
}

function cidr6(v: string): string {
  const [a, p] = v.split('/');
  if (!a || !parseIPv6(a) || p === undefined || parsePrefix6(p) === undefined) throw new Error(`invalid IPv6 address/prefix ${JSON.stringify(v)}`);
  return `${parseIPv6(a)}/${p}`;
}

export async function configureUplink(netvm: Qube, ifname: string, cfg: UplinkConfig = {}): Promise<void> {
  assertIfName(ifname);
  const lines = [`link set dev ${ifname} up`];
  if (cfg.ipv4 !== false) {
    const ipv4 = cidr4(cfg.ipv4 ?? INTERNET.netvm4);
    const gateway = cfg.gateway ?? INTERNET.gateway4;
    if (!parseIPv4(gateway)) throw new Error(`invalid gateway ${JSON.stringify(gateway)}`);
    lines.push(`addr replace ${ipv4} dev ${ifname}`, `route replace default via ${gateway} dev ${ifname}`);
  }
  if (cfg.ipv6) {
    const gateway6 = cfg.gateway6 ?? INTERNET.gateway6;
    if (!parseIPv6(gateway6)) throw new Error(`invalid IPv6 gateway ${JSON.stringify(gateway6)}`);
    lines.push(`addr replace ${cidr6(cfg.ipv6)} dev ${ifname} nodad`, `route replace default via ${gateway6} dev ${ifname}`);
  }
  const dns = cfg.dns ?? [...INTERNET.dns4];
  for (const d of dns) if (!parseIPv4(d) && !parseIPv6(d)) throw new Error(`invalid nameserver ${JSON.stringify(d)}`);
  const res = await ipBatch(lines, { netns: netvm.netns });
  if (!res.ok) throw new Error(`configureUplink ${netvm.name}/${ifname}: ${res.stderr.trim()}`);
  // In place (not by rename): the qube sees the bind-mounted inode.
  if (dns.length > 0) await writeFile(netvm.hostPath('/etc/resolv.conf'), dns.map((d) => `nameserver ${d}\n`).join(''));
}

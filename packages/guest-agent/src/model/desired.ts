// What the kernel should hold for the uplink, as a pure function of the validated config
// (reference §3.3, Appendix A). Routes are described in the notation `ip -j` prints, so the
// planner can compare them with the kernel's state directly.
import * as addr from '@qubes-net/common/addr';
import type { Family } from './kernel-state.js';
import type { ConfigOutcome, UplinkConfig } from './read-config.js';

export interface DesiredAddress {
  family: Family;
  local: string;
  prefixlen: number;
}

export interface DesiredNeighbour {
  family: Family;
  dst: string;
  lladdr: string;
}

export interface DesiredRoute {
  family: Family;
  /** "default", a bare address (host route) or "net/len", as `ip -j` prints it. */
  dst: string;
  gateway?: string;
  onlink: boolean;
  /** scope link (only compared for IPv4: ip does not print it for IPv6). */
  scopeLink: boolean;
}

export type ResolvConfIntent =
  | { action: 'write'; content: string }
  | { action: 'leave'; reason: string };

export interface DesiredUplink {
  ifname: string;
  /**
   * 'up' = group 1 and up. 'down' when there is no valid configuration: fail closed, the
   * uplink carries nothing (not even IPv6 link-local traffic) until QubesDB is valid again.
   */
  link: 'up' | 'down';
  addresses: DesiredAddress[];
  neighbours: DesiredNeighbour[];
  routes: DesiredRoute[];
  resolvConf: ResolvConfIntent;
  /** The MTU to set (from `/vm-config/net-mtu`); absent = the link's MTU is left alone. */
  mtu?: number;
}

export interface DesiredOptions {
  /** Whether IPv6 works on this interface (module loaded, not disabled by sysctl). */
  ipv6: boolean;
}

/** resolv.conf under the disable-dns-server service: emptied, as upstream does (`echo >`). */
export const DISABLED_DNS_RESOLV_CONF = '\n';

/**
 * The upstream resolv.conf: one `nameserver` line per server, none for an empty entry. The
 * IPv6 virtual servers (when IPv6 is on) come after the IPv4 ones: resolvers ask in file order,
 * so a network whose DNS is IPv4 sees no change; when a family has no real server its virtual
 * addresses answer with an ICMP error at once, so the next line is tried without a timeout.
 * (glibc reads only the first three: IPv4 primary, secondary, IPv6 primary.)
 */
export function resolvConfContent(dns: readonly string[], dns6: readonly string[] = []): string {
  return [...dns, ...dns6].map((s) => `nameserver ${s}\n`).join('');
}

/** The network address of `ip/prefix` in canonical form (host bits cleared). */
export function ipv6Network(ip: string, prefix: number): string {
  const groups = addr.ipv6Groups(ip).map((g, i) => {
    const bits = Math.max(0, Math.min(16, prefix - i * 16));
    return bits === 0 ? 0 : g & ((0xffff << (16 - bits)) & 0xffff);
  });
  return addr.canonicalIPv6(groups.map((g) => g.toString(16)).join(':'));
}

/** The route destination for `ip/prefix` as `ip -j` prints it (no /128 for a host). */
function ipv6RouteDst(ip: string, prefix: number): string {
  return prefix === 128 ? ip : `${ipv6Network(ip, prefix)}/${prefix}`;
}

function configured(ifname: string, c: UplinkConfig, opts: DesiredOptions): DesiredUplink {
  const ip6 = opts.ipv6 ? c.ip6 : undefined;
  const gateway6 = ip6 !== undefined ? c.gateway6 : undefined;
  const addresses: DesiredAddress[] = [{ family: 4, local: c.ip, prefixlen: c.prefix }];
  if (ip6 !== undefined) addresses.push({ family: 6, local: ip6, prefixlen: c.prefix6 });

  const neighbours: DesiredNeighbour[] = [];
  if (!c.custom) {
    if (c.gateway !== undefined) neighbours.push({ family: 4, dst: c.gateway, lladdr: addr.GATEWAY_MAC });
    if (gateway6 !== undefined) neighbours.push({ family: 6, dst: gateway6, lladdr: addr.GATEWAY_MAC });
  }

  const routes: DesiredRoute[] = [];
  if (c.gateway !== undefined) {
    routes.push({ family: 4, dst: c.gateway, onlink: false, scopeLink: true });
    // A link-local gateway is reachable on the link anyway; a /0 "host route" would collide
    // with the default route below (same kernel key), so both are skipped.
    if (gateway6 !== undefined && !gateway6.startsWith('fe80:') && c.prefix6 > 0) {
      routes.push({ family: 6, dst: ipv6RouteDst(gateway6, c.prefix6), onlink: false, scopeLink: true });
    }
    if (!c.disableDefaultRoute) {
      routes.push({ family: 4, dst: 'default', gateway: c.gateway, onlink: true, scopeLink: false });
      if (gateway6 !== undefined) routes.push({ family: 6, dst: 'default', gateway: gateway6, onlink: true, scopeLink: false });
    }
  }

  // disable-dns-server: upstream empties the file (one empty line) rather than leaving it.
  const resolvConf: ResolvConfIntent = c.disableDnsServer
    ? { action: 'write', content: DISABLED_DNS_RESOLV_CONF }
    : { action: 'write', content: resolvConfContent(c.dns, ip6 !== undefined ? c.dns6 : []) };
  const desired: DesiredUplink = { ifname, link: 'up', addresses, neighbours, routes, resolvConf };
  if (c.mtu !== undefined) desired.mtu = c.mtu;
  return desired;
}

/** The desired uplink for any outcome: configured, or nothing of ours and the link down. */
export function desiredUplink(ifname: string, outcome: ConfigOutcome, opts: DesiredOptions): DesiredUplink {
  if (outcome.kind === 'ok') return configured(ifname, outcome.config, opts);
  return {
    ifname,
    link: 'down',
    addresses: [],
    neighbours: [],
    routes: [],
    resolvConf: { action: 'leave', reason: outcome.kind === 'invalid' ? 'QubesDB values are invalid' : 'no address assigned' },
  };
}

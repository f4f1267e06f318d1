// Classification of already-parsed (canonical) addresses: which ones may belong to a client,
// which ones may be a DNS upstream. Pure; callers parse with @qubes-net/common first.
import { ipv6Groups } from '@qubes-net/common';

function octets(ip: string): number[] {
  return ip.split('.').map(Number);
}

export function ipv4ToInt(ip: string): number {
  const o = octets(ip);
  return ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0;
}

export function inCidr4(ip: string, net: string, prefix: number): boolean {
  if (prefix === 0) return true;
  const mask = prefix === 32 ? 0xffffffff : (~((1 << (32 - prefix)) - 1)) >>> 0;
  return ((ipv4ToInt(ip) & mask) >>> 0) === ((ipv4ToInt(net) & mask) >>> 0);
}

export function isLoopback4(ip: string): boolean {
  return inCidr4(ip, '127.0.0.0', 8);
}

/** In 10.139.0.0/16, the range Qubes takes its virtual DNS addresses from (10.139.1.1, .2). */
export function isVirtualDns4(ip: string): boolean {
  return inCidr4(ip, '10.139.0.0', 16);
}

/** Why an IPv4 address cannot be a unicast host address, or undefined when it can. */
export function nonUnicastReason4(ip: string): string | undefined {
  if (inCidr4(ip, '0.0.0.0', 8)) return 'unspecified/"this network" address';
  if (isLoopback4(ip)) return 'loopback address';
  if (inCidr4(ip, '224.0.0.0', 4)) return 'multicast address';
  if (inCidr4(ip, '240.0.0.0', 4)) return 'reserved or broadcast address';
  return undefined;
}

/** Why an IPv6 address cannot be a unicast host address, or undefined when it can. */
export function nonUnicastReason6(ip: string): string | undefined {
  const g = ipv6Groups(ip);
  if (g.every((x) => x === 0)) return 'unspecified address';
  if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return 'loopback address';
  if ((g[0]! & 0xff00) === 0xff00) return 'multicast address';
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return 'IPv4-mapped address';
  return undefined;
}

export function isLinkLocal6(ip: string): boolean {
  return (ipv6Groups(ip)[0]! & 0xffc0) === 0xfe80;
}

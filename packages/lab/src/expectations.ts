// What the network should do with a packet, computed from the model alone: which qubes'
// rules it meets on its way out and what they decide. The connectivity checks compare what
// really happens with this, so the demo and the e2e suite assert behaviour, not rule text.
import { isIPv6 } from 'node:net';
import { ipv6Groups } from '@qubes-net/common';
import type { FirewallRule } from './dom0/firewall-rules.js';
import { netvmChain } from './dom0/addresses.js';
import type { LabModel } from './topology/model.js';

export interface Probe {
  proto: 'tcp' | 'udp' | 'icmp';
  dst: string;
  port?: number;
  icmpType?: number;
  /** The packet goes to a virtual DNS address (10.139.1.x, fd09:24ef:4179::a8b:x) or a real resolver: specialtarget=dns. */
  dns?: boolean;
}

function toBits(addr: string): bigint {
  if (isIPv6(addr)) return ipv6Groups(addr).reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
  return addr.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
}

export function cidrContains(cidr: string, addr: string): boolean {
  const [net, lenText] = cidr.split('/') as [string, string];
  const v6 = net.includes(':');
  if (v6 !== isIPv6(addr)) return false;
  const width = v6 ? 128n : 32n;
  const len = BigInt(Number(lenText));
  const mask = len === 0n ? 0n : ((1n << width) - 1n) ^ ((1n << (width - len)) - 1n);
  return (toBits(net) & mask) === (toBits(addr) & mask);
}

/** The first matching rule decides; none matching → the policy, drop. */
export function ruleVerdict(rules: readonly FirewallRule[], p: Probe, resolve: (host: string) => readonly string[], now = Math.floor(Date.now() / 1000)): 'accept' | 'drop' {
  const v6 = isIPv6(p.dst);
  for (const r of rules) {
    if (r.expire !== undefined && r.expire <= now) continue;
    if (r.proto && r.proto !== p.proto) continue;
    if (r.dst) {
      if (r.dst.kind === 'dst4' && (v6 || !cidrContains(r.dst.value, p.dst))) continue;
      if (r.dst.kind === 'dst6' && (!v6 || !cidrContains(r.dst.value, p.dst))) continue;
      if (r.dst.kind === 'dsthost' && !resolve(r.dst.value).includes(p.dst)) continue;
    }
    if (r.specialtarget === 'dns') {
      // Only port 53 to a resolver: the IPv4 virtual DNS, or the IPv6 one (issue 14) when the
      // probe says so (the firewall's dns-addr holds resolv.conf's servers of both families).
      if (!p.dns || p.port !== 53 || (p.proto !== 'tcp' && p.proto !== 'udp')) continue;
      if (r.dstports && r.dstports !== '53-53') continue;
    }
    if (r.dstports) {
      if (p.proto === 'icmp' || p.port === undefined) continue;
      const [lo, hi] = r.dstports.split('-').map(Number) as [number, number];
      if (p.port < lo || p.port > hi) continue;
    }
    if (r.icmptype !== undefined && (p.proto !== 'icmp' || p.icmpType !== r.icmptype)) continue;
    return r.action;
  }
  return 'drop';
}

/**
 * Whether traffic from `qube` to the outside gets through every firewall on the way: its own
 * rules in its netvm, then (masqueraded) its netvm's rules in the next one, up to the qube
 * with the uplink, which no one filters.
 */
export function chainVerdict(model: LabModel, qube: string, p: Probe, resolve: (host: string) => readonly string[]): { verdict: 'accept' | 'drop'; decidedBy?: string } {
  const hops = [qube, ...netvmChain(model, qube)];
  for (const name of hops.slice(0, -1)) {
    if (ruleVerdict(model.qubes.get(name)!.firewall, p, resolve) === 'drop') return { verdict: 'drop', decidedBy: name };
  }
  return { verdict: 'accept' };
}

/** The qube with the uplink at the top of `qube`'s chain, if the chain reaches one. */
export function uplinkOf(model: LabModel, qube: string): string | undefined {
  const top = [qube, ...netvmChain(model, qube)].at(-1)!;
  return model.qubes.get(top)!.uplink ? top : undefined;
}

// What the kernel must hold for one online vif, as data (pure): the sysctls, the set
// elements, the neighbour entries, the host routes and the gateway addresses. The planner
// turns the difference between two of these into ip-batch lines and nft statements.
import type { VifSpec } from './vif-event.js';
import { gateway6OnVifs, type ProviderConfig } from './provider-config.js';
import type { FakeIp } from './fake-ip.js';

/** What the driver knows about a vif in the kernel before planning (cheap /proc reads). */
export interface VifFacts {
  /** The interface exists in this namespace. */
  exists: boolean;
  /** IPv6 is enabled on it (the kernel has IPv6 and disable_ipv6 is 0). */
  ipv6: boolean;
}

export interface Sysctl {
  /** Path below /proc/sys, e.g. net/ipv4/conf/vif5.0/proxy_arp. */
  path: string;
  value: string;
}

export interface VifKernelState {
  vif: string;
  /** 32752 − domid: interfaces of later domains win (upstream's metric). */
  metric: number;
  sysctls: Sysctl[];
  allowed4: string[];
  allowed6: string[];
  /** Permanent neighbour entries: the client's addresses → its MAC. */
  neighbours: { addr: string; mac: string }[];
  /** Host routes (/32, /128) to the client's addresses over this vif. */
  routes: string[];
  /** The provider's gateway addresses on this vif, with prefix (a.b.c.d/32, x::y/128). */
  gatewayAddrs: string[];
  /** IPv6 addresses that only got anti-spoofing elements because IPv6 is off on the vif. */
  skipped6: string[];
  /** The fake-IP translation on this vif (model/fake-ip.ts); no IPv6 at all then. */
  fakeIp?: FakeIp;
}

export const METRIC_BASE = 32752;

const HARDEN4: Array<[string, string]> = [
  ['accept_source_route', '0'], ['accept_redirects', '0'], ['secure_redirects', '0'], ['send_redirects', '0'], ['drop_unicast_in_l2_multicast', '1'],
];
const HARDEN6: Array<[string, string]> = [
  ['accept_source_route', '-1'], ['accept_redirects', '0'], ['accept_ra', '0'], ['accept_dad', '0'], ['autoconf', '0'], ['drop_unicast_in_l2_multicast', '1'],
];

export function vifKernelState(spec: VifSpec, provider: ProviderConfig, facts: VifFacts, fakeIp?: FakeIp): VifKernelState {
  const v = spec.vif;
  const sysctls: Sysctl[] = [{ path: `net/ipv4/conf/${v}/proxy_arp`, value: '1' }];
  // A fake-IP vif carries no IPv6 (dropped both ways on the vif, like upstream): none of its
  // IPv6 addresses is configured or allowed.
  const ipv6 = facts.ipv6 && !fakeIp;
  const gw6 = ipv6 && gateway6OnVifs(provider);
  if (gw6) sysctls.push({ path: `net/ipv6/conf/${v}/proxy_ndp`, value: '1' });
  if (provider.hardenInterfaces) {
    // conf/all too, as upstream's sysctl prefixes do: the kernel ORs `all` with the
    // interface's value for send_redirects, secure_redirects and others, so the per-vif value
    // alone would not switch them off.
    for (const dev of [v, 'all']) {
      for (const [k, val] of HARDEN4) sysctls.push({ path: `net/ipv4/conf/${dev}/${k}`, value: val });
      if (ipv6) for (const [k, val] of HARDEN6) sysctls.push({ path: `net/ipv6/conf/${dev}/${k}`, value: val });
    }
  }
  const mac = spec.mac;
  const usable6 = ipv6 ? spec.ipv6 : [];
  const neighbours = mac ? [...spec.ipv4, ...usable6].map((addr) => ({ addr, mac })) : [];
  const gatewayAddrs: string[] = [];
  if (provider.gateway) gatewayAddrs.push(`${provider.gateway}/32`);
  if (gw6) gatewayAddrs.push(`${provider.gateway6}/128`);
  return {
    vif: v,
    metric: METRIC_BASE - spec.domid,
    sysctls,
    allowed4: [...spec.ipv4],
    allowed6: fakeIp ? [] : [...spec.ipv6],
    neighbours,
    routes: [...spec.ipv4, ...usable6],
    gatewayAddrs,
    skipped6: ipv6 || fakeIp ? [] : [...spec.ipv6],
    ...(fakeIp ? { fakeIp } : {}),
  };
}

/** ip-batch lines that bring `next` in place (idempotent `replace`s), after removing what `prev` had and `next` lacks. */
export function transitionIpLines(prev: VifKernelState | undefined, next: VifKernelState): { remove: string[]; apply: string[] } {
  const v = next.vif;
  const remove: string[] = [];
  // Routes and neighbours before addresses: removing a vif's last IPv4 address makes the
  // kernel flush its IPv4 routes and neighbours, and a later `neigh del` of a flushed entry
  // would fail.
  if (prev) {
    for (const r of prev.routes) if (!next.routes.includes(r) || prev.metric !== next.metric) remove.push(`route del ${r} dev ${v} metric ${prev.metric}`);
    for (const n of prev.neighbours) if (!next.neighbours.some((x) => x.addr === n.addr)) remove.push(`neigh del ${n.addr} dev ${v}`);
    for (const a of prev.gatewayAddrs) if (!next.gatewayAddrs.includes(a)) remove.push(`address del ${a} dev ${v}`);
  }
  // The link goes up first: IPv4 routes over a down link are refused.
  const apply = [`link set dev ${v} group 2 up`];
  for (const a of next.gatewayAddrs) apply.push(a.includes(':') ? `address replace ${a} dev ${v} nodad` : `address replace ${a} dev ${v}`);
  for (const n of next.neighbours) apply.push(`neigh replace ${n.addr} dev ${v} lladdr ${n.mac} nud permanent`);
  for (const r of next.routes) apply.push(`route replace ${r} dev ${v} metric ${next.metric}`);
  return { remove, apply };
}

/** ip-batch lines that undo `prev` on a vif that still exists (failures are tolerated). */
export function removalIpLines(prev: VifKernelState): string[] {
  const v = prev.vif;
  return [
    ...prev.routes.map((r) => `route del ${r} dev ${v} metric ${prev.metric}`),
    ...prev.neighbours.map((n) => `neigh del ${n.addr} dev ${v}`),
    ...prev.gatewayAddrs.map((a) => `address del ${a} dev ${v}`),
    `link set dev ${v} down group default`,
  ];
}

/** Sysctls that undo `prev` on a vif that still exists. */
export function removalSysctls(prev: VifKernelState): Sysctl[] {
  return prev.sysctls.filter((s) => /\/(proxy_arp|proxy_ndp)$/.test(s.path)).map((s) => ({ path: s.path, value: '0' }));
}

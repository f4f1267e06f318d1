// dom0's address allocation (what qubes-core-admin's net mixin computes), as pure functions of
// the topology model: IPv4 from the qid (10.137) or the dispid (10.138), IPv6 from the same
// number, the ipv6 feature walked up the netvm chain, gateways, fake IP/gateway/netmask, DNS.
import type { LabModel, QubeSpec } from '../topology/model.js';

export const IPV6_PREFIX = 'fd09:24ef:4179::';
export const VIRTUAL_DNS = ['10.139.1.1', '10.139.1.2'] as const;
/** The proposed IPv6 virtual DNS (qubes-issues 10038): the a8b block beside a89/a8a. */
export const VIRTUAL_DNS6 = ['fd09:24ef:4179::a8b:1', 'fd09:24ef:4179::a8b:2'] as const;
export const DEFAULT_MAC = '00:16:3e:5e:6c:00';
export const NETMASK = '255.255.255.255';

/**
 * `prefix.0.vmid` below 255; above, v = vmid - 1 gives `prefix.(v / 254).(v % 254 + 1)`, so
 * the last octet is never 0 or 255.
 */
export function vmidToIPv4(prefix: string, vmid: number): string {
  if (!Number.isInteger(vmid) || vmid < 0) throw new RangeError(`invalid vmid ${vmid}`);
  if (vmid < 255) return `${prefix}.0.${vmid}`;
  const v = vmid - 1;
  const third = Math.floor(v / 254);
  if (third > 255) throw new RangeError(`vmid ${vmid} does not fit in ${prefix}.0.0/16`);
  return `${prefix}.${third}.${(v % 254) + 1}`;
}

function qube(model: LabModel, name: string): QubeSpec {
  const q = model.qubes.get(name);
  if (!q) throw new Error(`unknown qube ${JSON.stringify(name)}`);
  return q;
}

function netvmOf(model: LabModel, q: QubeSpec): QubeSpec | undefined {
  return q.netvm === null ? undefined : qube(model, q.netvm);
}

export function isDisposable(q: QubeSpec): boolean {
  return q.klass === 'DispVM';
}

/** A qube is networked when it has a netvm or provides network itself. */
export function isNetworked(model: LabModel, name: string): boolean {
  const q = qube(model, name);
  return q.providesNetwork || q.netvm !== null;
}

/**
 * `features.check_with_netvm(name, default)`: the first qube up the netvm chain that has the
 * feature set at all decides (its value as given); none → undefined.
 */
export function featureWithNetvm(model: LabModel, name: string, feature: string): string | undefined {
  const seen = new Set<string>();
  for (let q: QubeSpec | undefined = qube(model, name); q; q = netvmOf(model, q)) {
    if (seen.has(q.name)) throw new Error(`netvm loop through ${q.name}`);
    seen.add(q.name);
    if (Object.prototype.hasOwnProperty.call(q.features, feature)) return q.features[feature];
  }
  return undefined;
}

/** The ipv6 rule: the first qube in the chain with the feature decides; "" disables; default off. */
export function ipv6Enabled(model: LabModel, name: string): boolean {
  const v = featureWithNetvm(model, name, 'ipv6');
  return v !== undefined && v !== '';
}

/** The real IPv4 (custom `ip`, else from qid / dispid); undefined for an unnetworked qube. */
export function realIPv4(model: LabModel, name: string): string | undefined {
  const q = qube(model, name);
  if (!isNetworked(model, name)) return undefined;
  if (q.ip) return q.ip;
  return isDisposable(q) ? vmidToIPv4('10.138', q.dispid!) : vmidToIPv4('10.137', q.qid);
}

/** The real IPv6, only when networked and the ipv6 rule is true. */
export function realIPv6(model: LabModel, name: string): string | undefined {
  const q = qube(model, name);
  if (!isNetworked(model, name) || !ipv6Enabled(model, name)) return undefined;
  const [group, id] = isDisposable(q) ? ['a8a', q.dispid!] : ['a89', q.qid];
  return `${IPV6_PREFIX}${group}:${id.toString(16)}`;
}

export function visibleIPv4(model: LabModel, name: string): string | undefined {
  const ip = realIPv4(model, name);
  if (ip === undefined) return undefined;
  return qube(model, name).features['net.fake-ip'] || ip;
}

export function visibleIPv6(model: LabModel, name: string): string | undefined {
  return realIPv6(model, name);
}

/** A provider's gateway is its own visible IP. */
export function gatewayOf(model: LabModel, name: string): string | undefined {
  return qube(model, name).providesNetwork ? visibleIPv4(model, name) : undefined;
}

/** A provider's gateway6: its visible IPv6, only when its own ipv6 rule is true. */
export function gateway6Of(model: LabModel, name: string): string | undefined {
  return qube(model, name).providesNetwork ? visibleIPv6(model, name) : undefined;
}

export function visibleGateway(model: LabModel, name: string): string | undefined {
  const q = qube(model, name);
  const fake = q.features['net.fake-gateway'];
  if (fake) return fake;
  return q.netvm === null ? undefined : gatewayOf(model, q.netvm);
}

/** netvm.gateway6, but only when this qube's own ipv6 rule is true. */
export function visibleGateway6(model: LabModel, name: string): string | undefined {
  const q = qube(model, name);
  if (q.netvm === null || !ipv6Enabled(model, name)) return undefined;
  return gateway6Of(model, q.netvm);
}

export function visibleNetmask(model: LabModel, name: string): string | undefined {
  const q = qube(model, name);
  const fake = q.features['net.fake-netmask'];
  if (fake) return /^\d+$/.test(fake) ? prefixToMask(Number(fake)) : fake;
  return isNetworked(model, name) ? NETMASK : undefined;
}

export function prefixToMask(prefix: number): string {
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 255).join('.');
}

/** The virtual DNS pair, for qubes with a netvm or providing network. */
export function dnsOf(model: LabModel, name: string): readonly string[] | undefined {
  return isNetworked(model, name) ? VIRTUAL_DNS : undefined;
}

/** Qubes whose netvm is `provider`, halted ones included, by qid. */
export function connectedQubes(model: LabModel, provider: string): QubeSpec[] {
  return [...model.qubes.values()].filter((q) => q.netvm === provider).sort((a, b) => a.qid - b.qid);
}

/** The netvm chain above `name`, nearest first. */
export function netvmChain(model: LabModel, name: string): string[] {
  const out: string[] = [];
  for (let q = netvmOf(model, qube(model, name)); q; q = netvmOf(model, q)) {
    if (out.includes(q.name)) throw new Error(`netvm loop through ${q.name}`);
    out.push(q.name);
  }
  return out;
}

/** Every qube below `name` in the netvm tree (clients, their clients…), parents first. */
export function descendants(model: LabModel, name: string): string[] {
  const out: string[] = [];
  const queue = [name];
  while (queue.length) {
    const cur = queue.shift()!;
    for (const c of connectedQubes(model, cur)) {
      if (out.includes(c.name) || c.name === name) continue;
      out.push(c.name);
      queue.push(c.name);
    }
  }
  return out;
}

/** dom0's `vm-config.net-mtu` feature (issue 14): the uplink MTU a qube's QubesDB gets. */
export const NET_MTU_FEATURE = 'vm-config.net-mtu';

/**
 * The MTU for a networked qube: the first qube up its netvm chain with the feature decides,
 * as the upstream proposal propagates it; "" or unset = none.
 */
export function netMtuOf(model: LabModel, name: string): string | undefined {
  if (!isNetworked(model, name)) return undefined;
  const v = featureWithNetvm(model, name, NET_MTU_FEATURE);
  return v === undefined || v === '' ? undefined : v;
}

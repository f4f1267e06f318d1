// What dom0 writes into each qube's QubesDB, as ordered operations (write / rm). Pure: the
// runtime applies the operations through the qube's own QubesDB daemon, in this order.
//
// Where upstream leaves stale keys behind (a netvm change to a netvm without IPv6 keeps
// /qubes-ip6; a disconnected client's firewall rules stay in the old provider) we remove them:
// a stale address or rule set is a risk when IPs are reused, and nothing depends on it.
import {
  connectedQubes, dnsOf, gateway6Of, gatewayOf, netMtuOf, realIPv4, realIPv6, visibleGateway,
  visibleGateway6, visibleIPv4, visibleIPv6, visibleNetmask,
} from './addresses.js';
import { VIRTUAL_DNS6 } from './addresses.js';
import { firewallEntries } from './firewall-rules.js';
import type { LabModel, QubeSpec } from '../topology/model.js';

export type QdbOp = { op: 'write'; path: string; value: string } | { op: 'rm'; path: string };

const write = (path: string, value: string): QdbOp => ({ op: 'write', path, value });
const rm = (path: string): QdbOp => ({ op: 'rm', path });

function qube(model: LabModel, name: string): QubeSpec {
  const q = model.qubes.get(name);
  if (!q) throw new Error(`unknown qube ${JSON.stringify(name)}`);
  return q;
}

/** `/qubes-vm-type` as the R3 compatibility extension derives it. */
export function vmType(q: QubeSpec): 'AppVM' | 'ProxyVM' | 'NetVM' {
  if (q.providesNetwork) return q.netvm === null ? 'NetVM' : 'ProxyVM';
  return 'AppVM';
}

/** Keys of a qube's own database that dom0 manages for networking (stale ones are removed). */
export const CLIENT_NETWORK_KEYS = [
  '/qubes-mac', '/qubes-ip', '/qubes-netmask', '/qubes-gateway', '/qubes-primary-dns',
  '/qubes-secondary-dns', '/qubes-ip6', '/qubes-gateway6', '/qubes-primary-dns6', '/qubes-secondary-dns6',
] as const;
/** `vm-config.*` features dom0 writes under /vm-config/ (only the network MTU here). */
export const VM_CONFIG_KEYS = ['/vm-config/net-mtu'] as const;
export const PROVIDER_NETWORK_KEYS = [
  '/qubes-netvm-network', '/qubes-netvm-gateway', '/qubes-netvm-gateway6', '/qubes-netvm-netmask',
  '/qubes-netvm-primary-dns', '/qubes-netvm-secondary-dns', '/connected-ips', '/connected-ips6',
  '/qubes-netvm-primary-dns6', '/qubes-netvm-secondary-dns6',
] as const;

/**
 * The qube's own entries (create_qdb_entries): identity, services, and the client and
 * provider network keys that apply. Insertion order is dom0's write order.
 */
export function ownEntries(model: LabModel, name: string): Map<string, string> {
  const q = qube(model, name);
  const e = new Map<string, string>();
  e.set('/name', q.name);
  e.set('/type', q.klass);
  e.set('/default-user', q.defaultUser);
  e.set('/qubes-vm-type', vmType(q));
  e.set('/qubes-vm-updateable', 'False');
  // meminfo-writer is always written; service.* features (below) may override it.
  e.set('/qubes-service/meminfo-writer', '1');
  for (const [feature, value] of Object.entries(q.features)) {
    if (!feature.startsWith('service.')) continue;
    const svc = feature.slice('service.'.length);
    if (svc.length > 48) continue;
    e.set(`/qubes-service/${svc}`, value ? '1' : '0');
  }
  if (q.netvm !== null) {
    const dns = dnsOf(model, name)!;
    e.set('/qubes-mac', q.mac);
    e.set('/qubes-ip', visibleIPv4(model, name)!);
    e.set('/qubes-netmask', visibleNetmask(model, name)!);
    e.set('/qubes-gateway', visibleGateway(model, name)!);
    e.set('/qubes-primary-dns', dns[0]!);
    e.set('/qubes-secondary-dns', dns[1]!);
    const ip6 = visibleIPv6(model, name);
    if (ip6) e.set('/qubes-ip6', ip6);
    const gw6 = visibleGateway6(model, name);
    if (gw6) e.set('/qubes-gateway6', gw6);
    // The proposed IPv6 virtual DNS (core-admin PR 558): for qubes with IPv6.
    if (ip6) {
      e.set('/qubes-primary-dns6', VIRTUAL_DNS6[0]);
      e.set('/qubes-secondary-dns6', VIRTUAL_DNS6[1]);
    }
  }
  if (q.providesNetwork) {
    const gw = gatewayOf(model, name)!;
    const dns = dnsOf(model, name)!;
    e.set('/qubes-netvm-network', gw);
    e.set('/qubes-netvm-gateway', gw);
    const gw6 = gateway6Of(model, name);
    if (gw6) e.set('/qubes-netvm-gateway6', gw6);
    e.set('/qubes-netvm-netmask', '255.255.255.255');
    e.set('/qubes-netvm-primary-dns', dns[0]!);
    e.set('/qubes-netvm-secondary-dns', dns[1]!);
    if (gw6) {
      e.set('/qubes-netvm-primary-dns6', VIRTUAL_DNS6[0]);
      e.set('/qubes-netvm-secondary-dns6', VIRTUAL_DNS6[1]);
    }
    for (const [k, v] of connectedIps(model, name)) e.set(k, v);
  }
  const mtu = netMtuOf(model, name);
  if (mtu !== undefined) e.set('/vm-config/net-mtu', mtu);
  return e;
}

/**
 * Operations that bring a qube's database from `current` (what it holds now; empty for a new
 * qube) to its own entries: writes of what differs, removal of managed keys no longer wanted.
 */
export function ownEntriesOps(model: LabModel, name: string, current: ReadonlyMap<string, string> = new Map()): QdbOp[] {
  const want = ownEntries(model, name);
  const ops: QdbOp[] = [];
  const managed = new Set<string>([...CLIENT_NETWORK_KEYS, ...PROVIDER_NETWORK_KEYS, ...VM_CONFIG_KEYS]);
  for (const key of current.keys()) {
    if ((managed.has(key) || key.startsWith('/qubes-service/')) && !want.has(key)) ops.push(rm(key));
  }
  for (const [k, v] of want) if (current.get(k) !== v) ops.push(write(k, v));
  return ops;
}

/** `/connected-ips` and `/connected-ips6`: every client's visible address, halted ones too. */
export function connectedIps(model: LabModel, provider: string): Array<[string, string]> {
  const clients = connectedQubes(model, provider);
  const v4 = clients.map((c) => visibleIPv4(model, c.name)).filter((x): x is string => !!x);
  const v6 = clients.map((c) => visibleIPv6(model, c.name)).filter((x): x is string => !!x);
  return [['/connected-ips', v4.join(' ')], ['/connected-ips6', v6.join(' ')]];
}

export function connectedIpsOps(model: LabModel, provider: string): QdbOp[] {
  return connectedIps(model, provider).map(([k, v]) => write(k, v));
}

/** `/mapped-ip/<real ip>/…`: what the client sees as its IP and gateway (fake ones, if set). */
export function mappedIpOps(model: LabModel, client: string): QdbOp[] {
  const ip = realIPv4(model, client);
  if (!ip) return [];
  const base = `/mapped-ip/${ip}`;
  const ops: QdbOp[] = [];
  for (const [key, value] of [['visible-ip', visibleIPv4(model, client)], ['visible-gateway', visibleGateway(model, client)]] as const) {
    ops.push(value ? write(`${base}/${key}`, value) : rm(`${base}/${key}`));
  }
  return ops;
}

/**
 * The client's firewall in the provider's database, per family with a real address: remove
 * the old rules (the marker itself is outside the prefix and stays), write policy and rules,
 * then the marker `/qubes-firewall/<ip>` = "" which is what the firewall agent acts on.
 */
export function firewallOps(model: LabModel, client: string, now = Math.floor(Date.now() / 1000)): QdbOp[] {
  const q = qube(model, client);
  const ops: QdbOp[] = [];
  for (const [family, ip] of [[4, realIPv4(model, client)], [6, realIPv6(model, client)]] as const) {
    if (!ip) continue;
    const base = `/qubes-firewall/${ip}`;
    ops.push(rm(`${base}/`));
    for (const [k, v] of firewallEntries(q.firewall, family, now)) ops.push(write(`${base}/${k}`, v));
    ops.push(write(base, ''));
  }
  return ops;
}

/**
 * What a provider forgets when a client leaves (netvm change, client shut down) or loses an
 * address (ipv6 turned off): its rules and marker (so the firewall drops the chain and the
 * address falls to the forward policy: drop) and its mapped-ip entries.
 */
export function forgetAddressOps(ip: string): QdbOp[] {
  return [rm(`/qubes-firewall/${ip}/`), rm(`/qubes-firewall/${ip}`), ...(ip.includes(':') ? [] : [rm(`/mapped-ip/${ip}/`)])];
}

/** The real addresses a client has (IPv4 first), as in the vif's backend `ip` entry. */
export function realAddresses(model: LabModel, client: string): string[] {
  return [realIPv4(model, client), realIPv6(model, client)].filter((x): x is string => !!x);
}

/** The Xen toolstack's backend entries for the client's vif, in the netvm's xenstore. */
export function vifBackendEntries(model: LabModel, client: string, backendDomid: number, frontendDomid: number): { path: string; entries: Array<[string, string]> } {
  const q = qube(model, client);
  const entries: Array<[string, string]> = [['ip', realAddresses(model, client).join(' ')], ['mac', q.mac], ['type', 'vif'], ['frontend-id', String(frontendDomid)], ['handle', '0']];
  // The client's MTU, which Xen's vif scripts (and our driver) put on the vif.
  const mtu = netMtuOf(model, client);
  if (mtu !== undefined) entries.push(['mtu', mtu]);
  return { path: `/local/domain/${backendDomid}/backend/vif/${frontendDomid}/0`, entries };
}

/**
 * Everything the provider needs before the client's vif appears (domain-pre-spawn):
 * connected IPs, mapped IP info, then the firewall with its commit marker last.
 */
export function providerPreAttachOps(model: LabModel, client: string, now?: number): QdbOp[] {
  const provider = qube(model, client).netvm;
  if (provider === null) return [];
  return [...connectedIpsOps(model, provider), ...mappedIpOps(model, client), ...firewallOps(model, client, now)];
}

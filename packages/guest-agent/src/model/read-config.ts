// QubesDB → a validated uplink configuration, or typed reasons why there is none.
// `readUplinkKeys` is the only part that talks to QubesDB (through the interface, so unit tests
// use MemoryQubesDB); `parseUplinkConfig` is a pure function of the values read. Every value is
// untrusted: it is accepted only in its strict canonical form, never repaired.
import type { QubesDB } from '@qubes-net/qubesdb';
import * as addr from '@qubes-net/common/addr';
import { EXACT_KEYS, KEY, NET_CONFIG_PREFIX } from './keys.js';

/** A snapshot of the keys the agent cares about: path → value; a missing key is absent. */
export type UplinkKeys = ReadonlyMap<string, string>;

export interface UplinkConfig {
  /** Which layout the addresses came from (reference §3.2 step 4). */
  layout: 'qubes' | 'net-config';
  /** `/net-config/<MAC>/custom` exists: no permanent neighbours for the gateways. */
  custom: boolean;
  ip: string;
  prefix: number;
  /** Absent only in the custom net-config layout. */
  gateway?: string;
  ip6?: string;
  prefix6: number;
  gateway6?: string;
  /** Primary (defaulting to the gateway) then secondary; no empty entries. */
  dns: string[];
  /** The IPv6 virtual DNS servers (primary, secondary); used only when IPv6 is on. */
  dns6: string[];
  disableDefaultRoute: boolean;
  disableDnsServer: boolean;
  /** From `/vm-config/net-mtu`, validated by model/mtu.ts; absent = leave the link's MTU. */
  mtu?: number;
}

/** One rejected value: which key, the raw value (log it only through forLog) and why. */
export interface ConfigIssue {
  key: string;
  value: string | undefined;
  reason: string;
}

export type ConfigOutcome =
  | { kind: 'ok'; config: UplinkConfig; providesNetwork: boolean }
  /** No address assigned at all (no /qubes-ip): nothing to configure. */
  | { kind: 'unconfigured'; issue: ConfigIssue; providesNetwork: boolean }
  | { kind: 'invalid'; issues: ConfigIssue[]; providesNetwork: boolean };

/** Reads every key the parser may need, in parallel. */
export async function readUplinkKeys(db: QubesDB): Promise<Map<string, string>> {
  const [values, netConfig] = await Promise.all([
    Promise.all(EXACT_KEYS.map((k) => db.read(k))),
    db.multiread(NET_CONFIG_PREFIX),
  ]);
  const keys = new Map<string, string>(netConfig);
  EXACT_KEYS.forEach((k, i) => {
    const v = values[i];
    if (v !== undefined) keys.set(k, v);
  });
  return keys;
}

/** Whether a `/qubes-service/<name>` value switches the service on (upstream: exactly "1"). */
export function serviceEnabled(keys: UplinkKeys, key: string): boolean {
  return keys.get(key) === '1';
}

function isUnicastIPv4(ip: string): boolean {
  const first = Number(ip.split('.')[0]);
  // 0/8 (this network), 127/8 (loopback), 224/4 multicast and 240/4 reserved incl. broadcast.
  return first !== 0 && first !== 127 && first < 224;
}

function isUnicastIPv6(ip: string): boolean {
  const g = addr.ipv6Groups(ip);
  if (g.every((x) => x === 0)) return false; // ::
  if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return false; // ::1
  return (g[0]! & 0xff00) !== 0xff00; // ff00::/8 multicast
}

/**
 * Validates the snapshot. `uplinkMac` is the kernel's MAC of the chosen uplink (trusted), used
 * to find the per-interface layout.
 */
export function parseUplinkConfig(keys: UplinkKeys, uplinkMac: string | undefined): ConfigOutcome {
  const providesNetwork = (keys.get(KEY.netvmNetwork) ?? '') !== '';
  const issues: ConfigIssue[] = [];

  // Per-interface layout when /net-config/<MAC>/ip exists, else the /qubes- keys.
  const ncPrefix = uplinkMac && addr.parseMac(uplinkMac) ? `${NET_CONFIG_PREFIX}${uplinkMac}/` : undefined;
  const useNetConfig = ncPrefix !== undefined && keys.has(`${ncPrefix}ip`);
  const keyOf = (name: 'ip' | 'netmask' | 'gateway' | 'ip6' | 'netmask6' | 'gateway6'): string =>
    useNetConfig ? `${ncPrefix}${name}` : `/qubes-${name}`;
  const custom = ncPrefix !== undefined && keys.has(`${ncPrefix}custom`);
  // Upstream treats an empty value like a missing one for everything but the address itself.
  const get = (key: string): string | undefined => {
    const v = keys.get(key);
    return v === '' ? undefined : v;
  };
  const bad = (key: string, reason: string): undefined => {
    issues.push({ key, value: keys.get(key), reason });
    return undefined;
  };
  const v4 = (key: string, what: string): string | undefined => {
    const raw = get(key);
    if (raw === undefined) return undefined;
    const ip = addr.parseIPv4(raw);
    if (!ip) return bad(key, `${what} is not an IPv4 address`);
    if (!isUnicastIPv4(ip)) return bad(key, `${what} is not a unicast IPv4 address`);
    return ip;
  };
  const v6 = (key: string, what: string): string | undefined => {
    const raw = get(key);
    if (raw === undefined) return undefined;
    const ip = addr.parseIPv6(raw);
    if (!ip) return bad(key, `${what} is not an IPv6 address`);
    if (!isUnicastIPv6(ip)) return bad(key, `${what} is not a unicast IPv6 address`);
    return ip;
  };

  const ipKey = keyOf('ip');
  const ipRaw = get(ipKey);
  const ip = v4(ipKey, 'address');

  const netmaskRaw = get(keyOf('netmask'));
  let prefix = 32;
  if (netmaskRaw !== undefined) {
    const p = addr.parseNetmask4(netmaskRaw);
    if (p === undefined) bad(keyOf('netmask'), 'netmask is not a contiguous dotted mask or a prefix length 0-32');
    else prefix = p;
  }

  const gateway = v4(keyOf('gateway'), 'gateway');
  if (gateway === undefined && get(keyOf('gateway')) === undefined && !custom) {
    bad(keyOf('gateway'), 'gateway is missing');
  }

  // IPv6 keys matter only when there is an IPv6 address (upstream reads them only then).
  const ip6 = v6(keyOf('ip6'), 'IPv6 address');
  let prefix6 = 128;
  let gateway6: string | undefined;
  if (get(keyOf('ip6')) !== undefined) {
    const nm6 = get(keyOf('netmask6'));
    if (nm6 !== undefined) {
      const p = addr.parsePrefix6(nm6);
      if (p === undefined) bad(keyOf('netmask6'), 'IPv6 prefix length is not a number 0-128');
      else prefix6 = p;
    }
    gateway6 = v6(keyOf('gateway6'), 'IPv6 gateway');
  }

  // DNS always comes from the /qubes- keys (also in the per-interface layout).
  const primary = v4(KEY.primaryDns, 'primary DNS server');
  const secondary = v4(KEY.secondaryDns, 'secondary DNS server');
  const primaryOrGateway = primary ?? (get(KEY.primaryDns) === undefined ? gateway : undefined);
  const dns = [primaryOrGateway, secondary].filter((x): x is string => x !== undefined);
  // No gateway fallback for IPv6: an absent key is today's dom0 (IPv4 DNS only).
  // Read, like the other IPv6 keys, only when there is an IPv6 address.
  const dns6 = get(keyOf('ip6')) === undefined ? [] : [v6(KEY.primaryDns6, 'primary IPv6 DNS server'), v6(KEY.secondaryDns6, 'secondary IPv6 DNS server')]
    .filter((x, i, all): x is string => x !== undefined && all.indexOf(x) === i);

  // Without an address nothing gets configured, so the other values do not matter.
  if (ipRaw === undefined) {
    return { kind: 'unconfigured', issue: { key: ipKey, value: keys.get(ipKey), reason: 'address is missing' }, providesNetwork };
  }
  if (issues.length > 0 || ip === undefined) return { kind: 'invalid', issues, providesNetwork };

  const config: UplinkConfig = {
    layout: useNetConfig ? 'net-config' : 'qubes',
    custom,
    ip,
    prefix,
    prefix6,
    dns,
    dns6,
    disableDefaultRoute: serviceEnabled(keys, KEY.disableDefaultRoute),
    disableDnsServer: serviceEnabled(keys, KEY.disableDnsServer),
  };
  if (gateway !== undefined) config.gateway = gateway;
  if (ip6 !== undefined) config.ip6 = ip6;
  if (gateway6 !== undefined) config.gateway6 = gateway6;
  return { kind: 'ok', config, providesNetwork };
}

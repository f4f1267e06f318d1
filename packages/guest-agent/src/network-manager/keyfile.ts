// The NetworkManager connection for the uplink, as a pure function of the validated uplink
// configuration (the same UplinkConfig the direct path uses; reference §3.4). In a qube with the
// `network-manager` service NetworkManager owns the uplink's addresses, routes and DNS: we hand
// it one keyfile "VM uplink <IF>" with the static values from QubesDB.
//
// The values below already passed read-config's strict parsers; they are checked once more here
// because they end up in a file NetworkManager parses (a line break or a ';' would add keys or
// list items), and a renderer that can be called with anything must refuse rather than repair.
import * as addr from '@qubes-net/common/addr';
import type { UplinkConfig } from '../model/read-config.js';

/** Where NetworkManager's keyfile plugin reads system connections. */
export const NM_CONNECTIONS_DIR = '/etc/NetworkManager/system-connections';

/** Upstream's fixed first 20 hex digits; the last 12 are the uplink's MAC: stable per interface. */
const UUID_PREFIX = 'de85f79b-8c3d-405f-a652-';

/** A kernel interface name (IFNAMSIZ - 1), nothing a file name or a keyfile line could misread. */
const IFNAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;

export function validIfname(ifname: string): boolean {
  return typeof ifname === 'string' && IFNAME_RE.test(ifname);
}

/** The connection's name, as users and upstream's test 020 call it (`nmcli connection up "VM uplink eth0"`). */
export function connectionId(ifname: string): string {
  return `VM uplink ${ifname}`;
}

/** The keyfile's name (upstream's, so an upstream `setup-ip remove` finds ours and the reverse). */
export function keyfileName(ifname: string): string {
  return `qubes-uplink-${ifname}`;
}

/** `de85f79b-8c3d-405f-a652-<MAC without colons>`: the same on every apply for this interface. */
export function connectionUuid(mac: string): string {
  return UUID_PREFIX + mac.replace(/:/g, '');
}

export interface UplinkConnectionInput {
  ifname: string;
  /** The uplink's MAC as the kernel reports it (lower case, colon separated). */
  mac: string;
  config: UplinkConfig;
  /** IPv6 works on the interface: otherwise the IPv6 address is not configured (as in the direct path). */
  ipv6: boolean;
}

export type KeyfileResult =
  | { ok: true; content: string }
  | { ok: false; field: string; value: string; reason: string };

/**
 * The keyfile text. Semantics (reference §3.4), with two differences from upstream noted:
 *  - ipv4: manual, may-fail=false, the address with its prefix and the gateway; under
 *    `disable-default-route` the gateway is left out (NetworkManager then adds no default
 *    route); DNS servers unless `disable-dns-server`.
 *  - ipv6: manual with the address, prefix and gateway when dom0 gave an IPv6 address and the
 *    interface has IPv6; otherwise `method=ignore`. Unlike upstream, the IPv6 gateway is left out
 *    under `disable-default-route` too, and the IPv6 virtual DNS servers are given, as the
 *    direct path does in both cases.
 *  - interface-name is set besides the MAC, and `/vm-config/net-mtu` becomes the connection's
 *    MTU (NetworkManager would otherwise reset an MTU we set).
 */
export function renderUplinkKeyfile(input: UplinkConnectionInput): KeyfileResult {
  const { ifname, mac, config: c } = input;
  const refuse = (field: string, value: unknown, reason: string): KeyfileResult => ({ ok: false, field, value: addr.forLog(value), reason });
  if (!validIfname(ifname)) return refuse('ifname', ifname, 'not a valid interface name');
  if (addr.parseMac(mac) === undefined) return refuse('mac', mac, 'not a lower-case colon-separated MAC address');
  const v4 = (field: string, v: string | undefined): string | undefined => (v === undefined || addr.parseIPv4(v) === v ? undefined : field);
  const v6 = (field: string, v: string | undefined): string | undefined => (v === undefined || addr.parseIPv6(v) === v ? undefined : field);
  const badAddress = v4('ip', c.ip) ?? v4('gateway', c.gateway) ?? c.dns.map((d, i) => v4(`dns[${i}]`, d)).find((x) => x)
    ?? v6('ip6', c.ip6) ?? v6('gateway6', c.gateway6) ?? c.dns6.map((d, i) => v6(`dns6[${i}]`, d)).find((x) => x);
  if (badAddress !== undefined) return refuse(badAddress, badAddressValue(c, badAddress), 'not a canonical address');
  if (!Number.isInteger(c.prefix) || c.prefix < 0 || c.prefix > 32) return refuse('prefix', c.prefix, 'not a prefix length 0-32');
  if (!Number.isInteger(c.prefix6) || c.prefix6 < 0 || c.prefix6 > 128) return refuse('prefix6', c.prefix6, 'not a prefix length 0-128');
  if (c.mtu !== undefined && (!Number.isInteger(c.mtu) || c.mtu < 68 || c.mtu > 65535)) return refuse('mtu', c.mtu, 'not an MTU 68-65535');

  const lines: string[] = [
    '# Written by qubes-net-guest from QubesDB; rewritten when QubesDB changes.',
    '[connection]',
    `id=${connectionId(ifname)}`,
    `uuid=${connectionUuid(mac)}`,
    'type=802-3-ethernet',
    `interface-name=${ifname}`,
    '',
    '[ethernet]',
    'duplex=full',
    `mac-address=${mac}`,
    ...(c.mtu !== undefined ? [`mtu=${c.mtu}`] : []),
    '',
    '[ipv4]',
    'method=manual',
    'may-fail=false',
    `address1=${c.ip}/${c.prefix}${c.gateway !== undefined && !c.disableDefaultRoute ? `,${c.gateway}` : ''}`,
    ...(!c.disableDnsServer && c.dns.length > 0 ? [`dns=${c.dns.join(';')};`] : []),
    '',
    '[ipv6]',
  ];
  const ip6 = input.ipv6 ? c.ip6 : undefined;
  if (ip6 === undefined) {
    lines.push('method=ignore');
  } else {
    const gw6 = c.gateway6 !== undefined && !c.disableDefaultRoute ? `,${c.gateway6}` : '';
    lines.push('method=manual', `address1=${ip6}/${c.prefix6}${gw6}`);
    if (!c.disableDnsServer && c.dns6.length > 0) lines.push(`dns=${c.dns6.join(';')};`);
  }
  lines.push('');
  return { ok: true, content: lines.join('\n') };
}

function badAddressValue(c: UplinkConfig, field: string): unknown {
  const m = /^(dns6?)\[(\d+)\]$/.exec(field);
  if (m) return (m[1] === 'dns' ? c.dns : c.dns6)[Number(m[2])];
  return (c as unknown as Record<string, unknown>)[field];
}

// The provider's own settings, read from its QubesDB (dom0 writes them; see the reference,
// "keys in the QubesDB of a VM that provides network"). Parsing is pure: a raw key → value
// map in, a validated config and one InputError per rejected value out. A rejected value is
// left out, never half-used.
import { parseIPv4, parseIPv6 } from '@qubes-net/common';
import { InputError } from './input-error.js';
import { nonUnicastReason4, nonUnicastReason6, isLinkLocal6 } from './addr-class.js';

export const PROVIDER_KEYS = {
  gateway: '/qubes-netvm-gateway',
  gateway6: '/qubes-netvm-gateway6',
  primaryDns: '/qubes-netvm-primary-dns',
  secondaryDns: '/qubes-netvm-secondary-dns',
  /** The proposed IPv6 virtual DNS (qubes-issues 10038): fd09:24ef:4179::a8b:1 and :2. */
  primaryDns6: '/qubes-netvm-primary-dns6',
  secondaryDns6: '/qubes-netvm-secondary-dns6',
  connected4: '/connected-ips',
  connected6: '/connected-ips6',
  firewall: '/qubes-service/qubes-firewall',
  harden: '/qubes-service/harden-network-interfaces',
  /** Present when this provider is itself a client of another Qubes provider (a ProxyVM). */
  ownGateway: '/qubes-gateway',
} as const;

export type ProviderKey = keyof typeof PROVIDER_KEYS;

export interface ProviderConfig {
  /** IPv4 address put as /32 on every vif; without it no vif can be configured. */
  gateway?: string;
  /** IPv6 gateway; its presence switches IPv6 forwarding on. */
  gateway6?: string;
  /** The virtual DNS addresses clients use (primary first), 0 to 2 of them. */
  virtualDns: string[];
  /** The IPv6 virtual DNS addresses, 0 to 2 (absent keys: today's dom0, IPv4 DNS only). */
  virtualDns6?: string[];
  /** Every downstream qube's address, running or not (anti-spoofing on non-vif interfaces). */
  connected4: string[];
  connected6: string[];
  firewallService: boolean;
  hardenInterfaces: boolean;
  /** This provider sits behind another Qubes provider (its own /qubes-gateway is set). */
  behindQubesProvider: boolean;
}

export const MAX_CONNECTED = 4096;

function parseHost4(key: string, value: string, errors: InputError[]): string | undefined {
  const ip = parseIPv4(value);
  const bad = ip ? nonUnicastReason4(ip) : 'not an IPv4 address';
  if (bad) {
    errors.push(new InputError('qubesdb', key, value, bad));
    return undefined;
  }
  return ip;
}

function parseHost6(key: string, value: string, errors: InputError[]): string | undefined {
  const ip = parseIPv6(value);
  const bad = ip ? nonUnicastReason6(ip) : 'not an IPv6 address';
  if (bad) {
    errors.push(new InputError('qubesdb', key, value, bad));
    return undefined;
  }
  return ip;
}

function parseList(key: string, value: string | undefined, parse: (k: string, v: string, e: InputError[]) => string | undefined, errors: InputError[]): string[] {
  if (!value) return [];
  const items = value.split(' ').filter((s) => s !== '');
  if (items.length > MAX_CONNECTED) {
    errors.push(new InputError('qubesdb', key, value, `more than ${MAX_CONNECTED} addresses`));
  }
  const out: string[] = [];
  for (const item of items.slice(0, MAX_CONNECTED)) {
    const ip = parse(key, item, errors);
    if (ip && !out.includes(ip)) out.push(ip);
  }
  return out;
}

/** `raw` maps QubesDB paths to values (undefined or absent = key missing). */
export function parseProviderConfig(raw: ReadonlyMap<string, string | undefined>): { config: ProviderConfig; errors: InputError[] } {
  const errors: InputError[] = [];
  const get = (k: ProviderKey) => raw.get(PROVIDER_KEYS[k]);

  const config: ProviderConfig = {
    virtualDns: [],
    connected4: parseList(PROVIDER_KEYS.connected4, get('connected4'), parseHost4, errors),
    connected6: parseList(PROVIDER_KEYS.connected6, get('connected6'), parseHost6, errors),
    firewallService: get('firewall') === '1',
    hardenInterfaces: get('harden') === '1',
    behindQubesProvider: !!get('ownGateway'),
  };

  const gw = get('gateway');
  if (gw === undefined || gw === '') {
    errors.push(new InputError('qubesdb', PROVIDER_KEYS.gateway, gw ?? '', 'missing: this qube does not provide network'));
  } else {
    const ip = parseHost4(PROVIDER_KEYS.gateway, gw, errors);
    if (ip) config.gateway = ip;
  }

  const gw6 = get('gateway6');
  if (gw6) {
    const ip = parseHost6(PROVIDER_KEYS.gateway6, gw6, errors);
    if (ip) config.gateway6 = ip;
  }

  for (const k of ['primaryDns', 'secondaryDns'] as const) {
    const v = get(k);
    if (!v) continue;
    const ip = parseHost4(PROVIDER_KEYS[k], v, errors);
    if (ip && !config.virtualDns.includes(ip)) config.virtualDns.push(ip);
  }
  const dns6: string[] = [];
  for (const k of ['primaryDns6', 'secondaryDns6'] as const) {
    const v = get(k);
    if (!v) continue;
    const ip = parseHost6(PROVIDER_KEYS[k], v, errors);
    if (ip && isLinkLocal6(ip)) errors.push(new InputError('qubesdb', PROVIDER_KEYS[k], v, 'link-local address'));
    else if (ip && !dns6.includes(ip)) dns6.push(ip);
  }
  config.virtualDns6 = dns6;
  return { config, errors };
}

/** Whether the IPv6 gateway goes on the vifs as an address (upstream skips link-local ones). */
export function gateway6OnVifs(config: ProviderConfig): boolean {
  return !!config.gateway6 && !isLinkLocal6(config.gateway6);
}

/** Why a client address collides with the provider's own addresses, or undefined. */
export function clientAddressConflict(addr: string, config: ProviderConfig): string | undefined {
  if (addr === config.gateway || addr === config.gateway6) return 'is the provider\'s own gateway address';
  if (config.virtualDns.includes(addr) || config.virtualDns6?.includes(addr)) return 'is a virtual DNS address';
  return undefined;
}

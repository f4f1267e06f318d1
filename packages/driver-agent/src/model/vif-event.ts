// Validation of one vif hotplug event (from the control socket, the CLI's environment or
// xenstore). Everything here is untrusted: the vif name comes from the environment xl devd
// sets, the addresses, MAC and type from the backend's xenstore directory, which the
// toolstack fills from the client's configuration.
import { parseIPv4, parseIPv6, parseMac, parseVifName } from '@qubes-net/common';
import { InputError } from './input-error.js';
import { nonUnicastReason4, nonUnicastReason6, isVirtualDns4, isLinkLocal6 } from './addr-class.js';

export type VifOp = 'online' | 'offline';

/** A validated vif: name, ids and the client's addresses (canonical, deduplicated). */
export interface VifSpec {
  vif: string;
  domid: number;
  devid: number;
  ipv4: string[];
  ipv6: string[];
  /** The client's MAC; required as soon as the vif has an address. */
  mac?: string;
  /** Xen's device type (passed to user hooks). */
  type: string;
  /** The backend's `mtu` entry (issue 14): the vif's MTU; absent = left as the link has it. */
  mtu?: number;
}

/** What a caller hands in; every field unknown until validated. */
export interface RawVifEvent {
  op: unknown;
  vif: unknown;
  ips?: unknown;
  mac?: unknown;
  type?: unknown;
  xenbusPath?: unknown;
  /** The backend's `mtu` entry, when the caller read it. */
  mtu?: unknown;
}

export type VifEventCheck =
  | { ok: true; op: VifOp; spec: VifSpec; xenbusPath?: string }
  /** `vif` is set when at least the name was valid, so the failure can be reported per vif. */
  | { ok: false; op?: VifOp; vif?: string; error: InputError };

/** Upstream passes at most one IPv4 and one IPv6 address; leave room, but bound it. */
export const MAX_ADDRESSES_PER_VIF = 16;

const TYPE_RE = /^[a-z0-9_]{1,32}$/;
const XENBUS_RE = /^\/[A-Za-z0-9_.\/-]{1,200}$/;

export function validateVifName(value: unknown, source = 'env', key = 'vif'): { vif: string; domid: number; devid: number } | InputError {
  if (typeof value !== 'string') return new InputError(source, key, value, 'missing or not a string');
  const ids = parseVifName(value);
  if (!ids) return new InputError(source, key, value, 'not a vif name vif<domid>.<devid> (decimal, domid <= 32752)');
  return { vif: value, ...ids };
}

/** Splits xenstore's space-separated `ip` value (our C client already splits it). */
export function splitIpList(value: string): string[] {
  return value.split(/[ \t]+/).filter((s) => s.length > 0);
}

/**
 * Validates an event. `online` needs the addresses and MAC; `offline` only the name (the
 * agent undoes what it configured, which it remembers).
 */
export function validateVifEvent(raw: RawVifEvent): VifEventCheck {
  const op = raw.op === 'online' || raw.op === 'offline' ? raw.op : undefined;
  if (!op) return { ok: false, error: new InputError('request', 'op', raw.op, 'must be "online" or "offline"') };

  const xenbusPath = typeof raw.xenbusPath === 'string' && XENBUS_RE.test(raw.xenbusPath) ? raw.xenbusPath : undefined;
  if (raw.xenbusPath !== undefined && raw.xenbusPath !== '' && !xenbusPath) {
    return { ok: false, op, error: new InputError('env', 'XENBUS_PATH', raw.xenbusPath, 'not a xenstore path') };
  }
  const where = xenbusPath ?? '$XENBUS_PATH';

  const name = validateVifName(raw.vif);
  if (name instanceof InputError) return { ok: false, op, error: name };
  const fail = (key: string, value: unknown, reason: string): VifEventCheck => ({ ok: false, op, vif: name.vif, error: new InputError('xenstore', `${where}/${key}`, value, reason) });

  let type = 'vif';
  if (raw.type !== undefined && raw.type !== '') {
    if (typeof raw.type !== 'string' || !TYPE_RE.test(raw.type)) return fail('type', raw.type, 'not a device type ([a-z0-9_]{1,32})');
    type = raw.type;
  }

  const spec: VifSpec = { ...name, ipv4: [], ipv6: [], type };
  if (op === 'offline') return { ok: true, op, spec, ...(xenbusPath ? { xenbusPath } : {}) };

  let ips: unknown[];
  if (raw.ips === undefined || raw.ips === null || raw.ips === '') ips = [];
  else if (typeof raw.ips === 'string') ips = splitIpList(raw.ips);
  else if (Array.isArray(raw.ips)) ips = raw.ips;
  else return fail('ip', raw.ips, 'not a list of addresses');
  if (ips.length > MAX_ADDRESSES_PER_VIF) return fail('ip', ips.join(' '), `more than ${MAX_ADDRESSES_PER_VIF} addresses`);

  for (const item of ips) {
    if (typeof item !== 'string') return fail('ip', item, 'address is not a string');
    const v4 = parseIPv4(item);
    if (v4) {
      const bad = nonUnicastReason4(v4) ?? (isVirtualDns4(v4) ? 'address in the virtual DNS range 10.139.0.0/16' : undefined);
      if (bad) return fail('ip', item, `client address is a ${bad}`);
      if (!spec.ipv4.includes(v4)) spec.ipv4.push(v4);
      continue;
    }
    const v6 = parseIPv6(item);
    if (v6) {
      const bad = nonUnicastReason6(v6) ?? (isLinkLocal6(v6) ? 'link-local address' : undefined);
      if (bad) return fail('ip', item, `client address is a ${bad}`);
      if (!spec.ipv6.includes(v6)) spec.ipv6.push(v6);
      continue;
    }
    return fail('ip', item, 'not an IPv4 or IPv6 address');
  }

  if (raw.mac !== undefined && raw.mac !== '') {
    const mac = typeof raw.mac === 'string' ? parseMac(raw.mac) : undefined;
    if (!mac) return fail('mac', raw.mac, 'not a lower-case colon-separated MAC address');
    if ((parseInt(mac.slice(0, 2), 16) & 1) === 1) return fail('mac', raw.mac, 'multicast MAC address');
    spec.mac = mac;
  } else if (spec.ipv4.length + spec.ipv6.length > 0) {
    return fail('mac', raw.mac ?? '', 'missing: the client MAC is needed for its permanent neighbour entry');
  }
  const mtu = checkVifMtu(raw.mtu, spec);
  if (typeof mtu === 'string') return fail('mtu', raw.mtu, mtu);
  if (mtu.mtu !== undefined) spec.mtu = mtu.mtu;
  return { ok: true, op, spec, ...(xenbusPath ? { xenbusPath } : {}) };
}

/** Bounds of a vif's MTU: IPv4's minimum datagram; IPv6's minimum link MTU when it carries IPv6. */
export const VIF_MTU_MIN4 = 576;
export const VIF_MTU_MIN6 = 1280;
export const VIF_MTU_MAX = 65535;

/**
 * Validates a backend `mtu` value for `spec` (strict decimal, in bounds); undefined or empty =
 * no MTU. Returns the reason it is refused as a string.
 */
export function checkVifMtu(value: unknown, spec: Pick<VifSpec, 'ipv6'>): { mtu?: number } | string {
  if (value === undefined || value === null || value === '') return {};
  if (typeof value !== 'string' && typeof value !== 'number') return 'not a number';
  const s = String(value);
  if (!/^[1-9][0-9]{0,5}$/.test(s)) return 'not a decimal number';
  const mtu = Number(s);
  const min = spec.ipv6.length > 0 ? VIF_MTU_MIN6 : VIF_MTU_MIN4;
  if (mtu < min) return `MTU below ${min}${spec.ipv6.length > 0 ? ' (the client has IPv6)' : ''}`;
  if (mtu > VIF_MTU_MAX) return `MTU above ${VIF_MTU_MAX}`;
  return { mtu };
}

export function specAddresses(spec: VifSpec): string[] {
  return [...spec.ipv4, ...spec.ipv6];
}

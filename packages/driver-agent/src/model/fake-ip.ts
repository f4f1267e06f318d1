// Fake IP (the `net.fake-ip` / `net.fake-gateway` features): the client sees another address
// and gateway than the real ones dom0 allocated. dom0 writes `/mapped-ip/<real ip>/visible-ip`
// and `/visible-gateway` in the provider's QubesDB before the vif appears; xenstore's `ip`
// carries the real address.
//
// Instead of upstream's extra namespace per vif, the provider translates statelessly on the
// vif itself: one `netdev` ingress chain and one egress chain per mapped vif in
// `table netdev qubes-fakeip`. Ingress (from the client): saddr FAKE → REAL, daddr FAKEGW →
// the provider's gateway; egress (to the client): daddr REAL → FAKE, saddr gateway → FAKEGW.
// nft adds the L3 and L4 (pseudo-header) checksum fix-ups to `ip saddr/daddr set` itself.
// Netdev ingress runs before prerouting, so anti-spoofing, the firewall and conntrack only
// ever see the real address. ARP needs nothing: the client has a permanent neighbour for its
// gateway and the provider one for the client's real address. IPv6 is dropped on such a vif
// both ways (as upstream does): there is no fake IPv6 address to translate to.
//
// Pure: validation of the two QubesDB values and the nft statements.
import { parseIPv4 } from '@qubes-net/common';
import { InputError } from './input-error.js';
import { nonUnicastReason4, isVirtualDns4 } from './addr-class.js';
import type { VifSpec } from './vif-event.js';
import type { ProviderConfig } from './provider-config.js';

export const FAKEIP_TABLE = 'netdev qubes-fakeip';
/** Before anything else on the device's ingress/egress. */
export const FAKEIP_PRIORITY = -500;

/** The translation of one vif (IPv4, the vif's first address only, like upstream). */
export interface FakeIp {
  /** The client's real address (xenstore `ip`, the anti-spoofing and firewall key). */
  real: string;
  /** What the client has on its eth0. */
  fake: string;
  /** The provider's real gateway address on the vif. */
  gateway: string;
  /** What the client uses as its gateway. */
  fakeGateway: string;
}

/** The raw QubesDB values for one real address (undefined = key missing). */
export interface MappedRaw {
  visibleIp?: string | undefined;
  visibleGateway?: string | undefined;
}

export function mappedKeys(real: string): { visibleIp: string; visibleGateway: string } {
  return { visibleIp: `/mapped-ip/${real}/visible-ip`, visibleGateway: `/mapped-ip/${real}/visible-gateway` };
}

/** The real address whose mapping applies to a vif: its first IPv4, if any. */
export function mappedAddress(spec: VifSpec): string | undefined {
  return spec.ipv4[0];
}

/**
 * The vif's translation, undefined when none applies (no IPv4, a value missing or empty, or
 * the visible IP is the real one), or an InputError for a value that is present but invalid
 * (the vif is then refused and stays blocked).
 */
export function parseFakeIp(spec: VifSpec, raw: MappedRaw | undefined, provider: ProviderConfig): FakeIp | undefined | InputError {
  const real = mappedAddress(spec);
  if (!real || !raw) return undefined;
  const keys = mappedKeys(real);
  const check = (key: string, value: string | undefined): string | InputError | undefined => {
    if (value === undefined || value === '') return undefined;
    const ip = parseIPv4(value);
    if (!ip) return new InputError('qubesdb', key, value, 'not an IPv4 address');
    const bad = nonUnicastReason4(ip) ?? (isVirtualDns4(ip) ? 'address in the virtual DNS range 10.139.0.0/16' : undefined);
    if (bad) return new InputError('qubesdb', key, value, bad);
    return ip;
  };
  const fake = check(keys.visibleIp, raw.visibleIp);
  if (fake instanceof InputError) return fake;
  const fakeGateway = check(keys.visibleGateway, raw.visibleGateway);
  if (fakeGateway instanceof InputError) return fakeGateway;
  if (!fake || !fakeGateway || fake === real) return undefined;
  const gateway = provider.gateway;
  if (!gateway) return undefined;
  if (fake === gateway) return new InputError('qubesdb', keys.visibleIp, fake, 'is the provider\'s own gateway address');
  if (provider.virtualDns.includes(fake)) return new InputError('qubesdb', keys.visibleIp, fake, 'is a virtual DNS address');
  if (fakeGateway === fake) return new InputError('qubesdb', keys.visibleGateway, fakeGateway, 'is the fake IP itself');
  if (fakeGateway === real) return new InputError('qubesdb', keys.visibleGateway, fakeGateway, 'is the client\'s real address');
  return { real, fake, gateway, fakeGateway };
}

export function sameFakeIp(a: FakeIp | undefined, b: FakeIp | undefined): boolean {
  if (!a || !b) return a === b;
  return a.real === b.real && a.fake === b.fake && a.gateway === b.gateway && a.fakeGateway === b.fakeGateway;
}

const chainIn = (vif: string) => `in-${vif}`;
const chainOut = (vif: string) => `out-${vif}`;

function chainDecls(vif: string): string[] {
  const dev = JSON.stringify(vif);
  return [
    `add table ${FAKEIP_TABLE}`,
    `add chain ${FAKEIP_TABLE} ${chainIn(vif)} { type filter hook ingress device ${dev} priority ${FAKEIP_PRIORITY}; policy accept; }`,
    `add chain ${FAKEIP_TABLE} ${chainOut(vif)} { type filter hook egress device ${dev} priority ${FAKEIP_PRIORITY}; policy accept; }`,
  ];
}

/** Statements that put the translation of `vif` in place (idempotent: the chains are refilled). */
export function fakeIpApplyStatements(vif: string, f: FakeIp): string[] {
  const i = `add rule ${FAKEIP_TABLE} ${chainIn(vif)}`;
  const o = `add rule ${FAKEIP_TABLE} ${chainOut(vif)}`;
  const gw = f.fakeGateway !== f.gateway;
  return [
    ...chainDecls(vif),
    `flush chain ${FAKEIP_TABLE} ${chainIn(vif)}`,
    `flush chain ${FAKEIP_TABLE} ${chainOut(vif)}`,
    // No IPv6 on a fake-IP vif, either way.
    `${i} meta protocol ip6 counter drop`,
    // The client sends from its fake address only (its real one is not its to know).
    `${i} ip saddr ${f.real} counter drop`,
    `${i} ip saddr ${f.fake} ip saddr set ${f.real}`,
    ...(gw ? [`${i} ip daddr ${f.fakeGateway} ip daddr set ${f.gateway}`] : []),
    `${o} meta protocol ip6 counter drop`,
    `${o} ip daddr ${f.real} ip daddr set ${f.fake}`,
    ...(gw ? [`${o} ip saddr ${f.gateway} ip saddr set ${f.fakeGateway}`] : []),
  ];
}

/**
 * Statements that remove the translation of `vif`, exactly its two chains. Written as
 * add-then-delete (nft 1.0.6 has no `destroy`): a chain the kernel no longer has would
 * otherwise abort the whole transaction. Works whether or not the device still exists.
 */
export function fakeIpRemoveStatements(vif: string): string[] {
  return [
    ...chainDecls(vif),
    `flush chain ${FAKEIP_TABLE} ${chainIn(vif)}`,
    `flush chain ${FAKEIP_TABLE} ${chainOut(vif)}`,
    `delete chain ${FAKEIP_TABLE} ${chainIn(vif)}`,
    `delete chain ${FAKEIP_TABLE} ${chainOut(vif)}`,
  ];
}

/** Statements moving a vif from `before` to `after` (nothing when unchanged). */
export function fakeIpTransition(vif: string, before: FakeIp | undefined, after: FakeIp | undefined): string[] {
  if (sameFakeIp(before, after)) return [];
  if (after) return fakeIpApplyStatements(vif, after);
  return fakeIpRemoveStatements(vif);
}

/**
 * The whole table at the daemon's start, in the base transaction: replaced (atomically) by
 * the chains of the vifs that are online with a translation, so no chain of a vif the driver
 * no longer knows is left hooked to a device of the same name.
 */
export function fakeIpBaseStatements(vifs: ReadonlyArray<{ vif: string; fakeIp: FakeIp }>): string[] {
  const out = [`add table ${FAKEIP_TABLE}`, `delete table ${FAKEIP_TABLE}`];
  for (const v of vifs) out.push(...fakeIpApplyStatements(v.vif, v.fakeIp));
  return out;
}

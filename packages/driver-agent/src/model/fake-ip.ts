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
import type { NftTransaction } from '@qubes-net/common/kernel';
import { renderLines } from './nft-text.js';
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
const TABLE = { family: 'netdev', name: 'qubes-fakeip' } as const;

function chainDecls(tx: NftTransaction, vif: string): void {
  tx.addTable(TABLE)
    .addChain(TABLE, chainIn(vif), { type: 'filter', hook: 'ingress', device: vif, priority: FAKEIP_PRIORITY, policy: 'accept' })
    .addChain(TABLE, chainOut(vif), { type: 'filter', hook: 'egress', device: vif, priority: FAKEIP_PRIORITY, policy: 'accept' });
}

/** Puts the translation of `vif` in place (idempotent: the chains are refilled). */
export function addFakeIpApply(tx: NftTransaction, vif: string, f: FakeIp): void {
  const gw = f.fakeGateway !== f.gateway;
  chainDecls(tx, vif);
  tx.flushChain(TABLE, chainIn(vif)).flushChain(TABLE, chainOut(vif));
  // No IPv6 on a fake-IP vif, either way.
  tx.addRule(TABLE, chainIn(vif), 'meta protocol ip6 counter drop');
  // The client sends from its fake address only (its real one is not its to know).
  tx.addRule(TABLE, chainIn(vif), `ip saddr ${f.real} counter drop`);
  tx.addRule(TABLE, chainIn(vif), `ip saddr ${f.fake} ip saddr set ${f.real}`);
  if (gw) tx.addRule(TABLE, chainIn(vif), `ip daddr ${f.fakeGateway} ip daddr set ${f.gateway}`);
  tx.addRule(TABLE, chainOut(vif), 'meta protocol ip6 counter drop');
  tx.addRule(TABLE, chainOut(vif), `ip daddr ${f.real} ip daddr set ${f.fake}`);
  if (gw) tx.addRule(TABLE, chainOut(vif), `ip saddr ${f.gateway} ip saddr set ${f.fakeGateway}`);
}

/**
 * Removes the translation of `vif`, exactly its two chains. Written as add-then-delete (nft
 * 1.0.6 has no `destroy`): a chain the kernel no longer has would otherwise abort the whole
 * transaction. Works whether or not the device still exists.
 */
export function addFakeIpRemove(tx: NftTransaction, vif: string): void {
  chainDecls(tx, vif);
  tx.flushChain(TABLE, chainIn(vif)).flushChain(TABLE, chainOut(vif)).deleteChain(TABLE, chainIn(vif)).deleteChain(TABLE, chainOut(vif));
}

/** Moves a vif from `before` to `after` (nothing when unchanged). */
export function addFakeIpTransition(tx: NftTransaction, vif: string, before: FakeIp | undefined, after: FakeIp | undefined): void {
  if (sameFakeIp(before, after)) return;
  if (after) addFakeIpApply(tx, vif, after);
  else addFakeIpRemove(tx, vif);
}

/**
 * The whole table at the start, in the base transaction: replaced (atomically) by the chains
 * of the vifs that are online with a translation, so no chain of a vif the driver no longer
 * knows is left hooked to a device of the same name.
 */
export function addFakeIpBase(tx: NftTransaction, vifs: ReadonlyArray<{ vif: string; fakeIp: FakeIp }>): void {
  tx.destroyTable(TABLE);
  for (const v of vifs) addFakeIpApply(tx, v.vif, v.fakeIp);
}

const lines = renderLines;
// Text forms (tests).
export const fakeIpApplyStatements = (vif: string, f: FakeIp) => lines((tx) => addFakeIpApply(tx, vif, f));
export const fakeIpRemoveStatements = (vif: string) => lines((tx) => addFakeIpRemove(tx, vif));
export const fakeIpTransition = (vif: string, before: FakeIp | undefined, after: FakeIp | undefined) => lines((tx) => addFakeIpTransition(tx, vif, before, after));
export const fakeIpBaseStatements = (vifs: ReadonlyArray<{ vif: string; fakeIp: FakeIp }>) => lines((tx) => addFakeIpBase(tx, vifs));

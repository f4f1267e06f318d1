// Which interface is the uplink (reference §3.1): only a Xen frontend counts (sysfs driver `vif`,
// what upstream's udev rule matches), never a downstream vif (MAC fe:ff:ff:ff:ff:ff); among
// those the one whose MAC is /qubes-mac, else eth0. QUBES_NET_UPLINK_DRIVERS widens the driver
// set where there is no Xen (the lab's veths have no device: driver `none`).
import * as addr from '@qubes-net/common/addr';
import type { LinkState } from './kernel-state.js';

export const DEFAULT_UPLINK = 'eth0';
/** The MAC every backend vif carries (a netvm's downstream side). */
export const BACKEND_MAC = 'fe:ff:ff:ff:ff:ff';
export const DEFAULT_UPLINK_DRIVERS: readonly string[] = ['vif'];

/**
 * Interface names that can go into an `ip -batch` line as they are: no whitespace, no option
 * look-alike, at most IFNAMSIZ-1 characters.
 */
export function parseIfname(value: string): string | undefined {
  return /^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}$/.test(value) ? value : undefined;
}

/** The driver set from QUBES_NET_UPLINK_DRIVERS ("vif,none"); malformed entries are dropped. */
export function uplinkDrivers(env: string | undefined): readonly string[] {
  const list = (env ?? '').split(',').map((s) => s.trim()).filter((s) => /^[A-Za-z0-9_-]{1,32}$/.test(s));
  return list.length ? list : DEFAULT_UPLINK_DRIVERS;
}

/** Whether a link may be an uplink, given its sysfs driver ("none" when it has no device). */
export function isUplinkCandidate(link: Pick<LinkState, 'mac'>, driver: string, drivers: readonly string[]): boolean {
  return drivers.includes(driver) && link.mac !== BACKEND_MAC;
}

export interface UplinkChoice {
  ifname: string;
  /** Why this one: the explicit argument, the MAC match, or the fallback. */
  by: 'argument' | 'mac' | 'fallback';
  /** Set when /qubes-mac exists but is not a MAC address. */
  badMac?: string;
}

/**
 * `eligible` says whether a link passes the Xen-only rule; without it every link does (pure
 * callers and tests). An explicit interface is taken as given here: the caller checks that it
 * is eligible and refuses it otherwise.
 */
export function chooseUplink(links: readonly LinkState[], qubesMac: string | undefined, requested?: string, eligible: (l: LinkState) => boolean = () => true): UplinkChoice {
  if (requested !== undefined) return { ifname: requested, by: 'argument' };
  if (qubesMac !== undefined && qubesMac !== '') {
    const mac = addr.parseMac(qubesMac);
    if (!mac) return { ifname: DEFAULT_UPLINK, by: 'fallback', badMac: qubesMac };
    const match = links.find((l) => l.mac === mac && eligible(l));
    if (match) return { ifname: match.ifname, by: 'mac' };
  }
  return { ifname: DEFAULT_UPLINK, by: 'fallback' };
}

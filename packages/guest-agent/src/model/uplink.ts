// Which interface is the uplink: the one whose MAC is /qubes-mac, else eth0 (reference §3.1).
import * as addr from '@qubes-net/common/addr';
import type { LinkState } from './kernel-state.js';

export const DEFAULT_UPLINK = 'eth0';

/**
 * Interface names that can go into an `ip -batch` line as they are: no whitespace, no option
 * look-alike, at most IFNAMSIZ-1 characters.
 */
export function parseIfname(value: string): string | undefined {
  return /^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}$/.test(value) ? value : undefined;
}

export interface UplinkChoice {
  ifname: string;
  /** Why this one: the explicit argument, the MAC match, or the fallback. */
  by: 'argument' | 'mac' | 'fallback';
  /** Set when /qubes-mac exists but is not a MAC address. */
  badMac?: string;
}

export function chooseUplink(links: readonly LinkState[], qubesMac: string | undefined, requested?: string): UplinkChoice {
  if (requested !== undefined) return { ifname: requested, by: 'argument' };
  if (qubesMac !== undefined && qubesMac !== '') {
    const mac = addr.parseMac(qubesMac);
    if (!mac) return { ifname: DEFAULT_UPLINK, by: 'fallback', badMac: qubesMac };
    // Downstream vifs in a netvm carry fe:ff:ff:ff:ff:ff, never the qube's own MAC.
    const match = links.find((l) => l.mac === mac);
    if (match) return { ifname: match.ifname, by: 'mac' };
  }
  return { ifname: DEFAULT_UPLINK, by: 'fallback' };
}

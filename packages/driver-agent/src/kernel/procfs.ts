// Sysctls and per-interface facts through /proc/sys/net, which always shows the network
// namespace of the process reading it (unlike /sys/class/net, which shows the namespace of
// whoever mounted sysfs). Synchronous: these are tiny in-kernel reads and writes.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import type { VifFacts, Sysctl } from '../model/vif-state.js';

export const PROC_SYS = '/proc/sys';

export function readSysctl(path: string): string | undefined {
  try {
    return readFileSync(`${PROC_SYS}/${path}`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Writes one sysctl; throws with the path in the message. */
export function writeSysctl(s: Sysctl): void {
  try {
    writeFileSync(`${PROC_SYS}/${s.path}`, s.value);
  } catch (err) {
    throw new Error(`cannot write ${s.value} to ${PROC_SYS}/${s.path}: ${(err as Error).message}`);
  }
}

/** The kernel has IPv6 at all (not booted with ipv6.disable=1). */
export function kernelHasIPv6(): boolean {
  return existsSync(`${PROC_SYS}/net/ipv6/conf/all`);
}

export function interfaceExists(ifname: string): boolean {
  return existsSync(`${PROC_SYS}/net/ipv4/conf/${ifname}`);
}

export function vifFacts(vif: string): VifFacts {
  const exists = interfaceExists(vif);
  return { exists, ipv6: exists && readSysctl(`net/ipv6/conf/${vif}/disable_ipv6`) === '0' };
}

export function conntrackCount(): number {
  const v = readSysctl('net/netfilter/nf_conntrack_count');
  return v === undefined ? 0 : Number(v) || 0;
}

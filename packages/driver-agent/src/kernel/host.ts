// Everything the loop and its managers read from (or write to) the host outside nft and ip
// batches, in one interface: the real one here, an in-memory one in the unit tests (so the
// loop runs without root against the FakeKernel).
import type { Sysctl, VifFacts } from '../model/vif-state.js';
import { observe, ownAddresses, type Observation } from './observe.js';
import { readSysctl, writeSysctl, vifFacts, kernelHasIPv6 } from './procfs.js';
import { readXenVifs, type XenVif } from './xen-vifs.js';

export interface HostAccess {
  /** `firewall: false`: the caller does not need `tables.firewallSkeleton` (one read fewer). */
  observe(opts: { ipv6: boolean; firewall?: boolean }): Promise<Observation>;
  ownAddresses(): Promise<Set<string>>;
  readXenVifs(fakeDir: string | undefined): Promise<XenVif[]>;
  facts(vif: string): VifFacts;
  readSysctl(path: string): string | undefined;
  writeSysctl(s: Sysctl): void;
  ipv6(): boolean;
}

export const realHost: HostAccess = { observe, ownAddresses, readXenVifs, facts: vifFacts, readSysctl, writeSysctl, ipv6: kernelHasIPv6 };

// The sysfs driver of a link (/sys/class/net/IF/device/driver → its name), what upstream's
// udev rule matches on (DRIVERS=="vif"). A link without a device (veth, bridge…) is "none".
import { readlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseIfname } from '../model/uplink.js';

export async function linkDriver(ifname: string): Promise<string> {
  if (!parseIfname(ifname)) return 'none';
  try {
    return basename(await readlink(`/sys/class/net/${ifname}/device/driver`));
  } catch {
    return 'none';
  }
}

/** Drivers of the given links, read in parallel. */
export async function linkDrivers(ifnames: readonly string[]): Promise<Map<string, string>> {
  const entries = await Promise.all(ifnames.map(async (n) => [n, await linkDriver(n)] as const));
  return new Map(entries);
}

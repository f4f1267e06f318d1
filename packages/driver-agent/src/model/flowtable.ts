// Software flow offload for NATed downstream → uplink TCP/UDP flows, where the kernel has
// nftables flowtables (this module only writes text; the kernel writer probes support and
// leaves the table out entirely where there is none). The flowtable's device list is
// changed incrementally: `add flowtable` with a device list adds those devices to an
// existing flowtable; `delete flowtable … { devices = … }` removes only those.
import { nftQuote } from '@qubes-net/common';

export const ACCEL_TABLE = 'inet qubes-nat-accel';
export const ACCEL_FLOWTABLE = 'qubes-accel';
export const ACCEL_PRIORITY = 'filter + 20';

function deviceList(devices: readonly string[]): string {
  return `devices = { ${devices.map((d) => nftQuote(d)).join(', ')} };`;
}

/** Creates the table, flowtable and chain (idempotent; the chain is flushed and refilled). */
export function flowtableBaseStatements(devices: readonly string[]): string[] {
  const t = ACCEL_TABLE;
  const ft = `add flowtable ${t} ${ACCEL_FLOWTABLE} { hook ingress priority filter; ${devices.length ? deviceList(devices) + ' ' : ''}}`;
  return [
    `add table ${t}`,
    ft,
    `add chain ${t} qubes-accel { type filter hook forward priority ${ACCEL_PRIORITY}; policy accept; }`,
    `flush chain ${t} qubes-accel`,
    `add rule ${t} qubes-accel meta l4proto { tcp, udp } iifgroup 2 oifgroup 1 flow add @${ACCEL_FLOWTABLE}`,
    `add rule ${t} qubes-accel counter`,
  ];
}

/**
 * Incremental device changes. Devices that no longer exist are left out of `remove` by the
 * caller: the kernel drops a vanished device from the flowtable by itself, and naming it
 * would fail the transaction.
 */
export function flowtableDeviceStatements(add: readonly string[], remove: readonly string[]): string[] {
  const out: string[] = [];
  if (remove.length) out.push(`delete flowtable ${ACCEL_TABLE} ${ACCEL_FLOWTABLE} { ${deviceList(remove)} }`);
  if (add.length) out.push(`add flowtable ${ACCEL_TABLE} ${ACCEL_FLOWTABLE} { hook ingress priority filter; ${deviceList(add)} }`);
  return out;
}

/** Devices of our flowtable in `nft -j list flowtable inet qubes-nat-accel qubes-accel` output. */
export function flowtableDevicesFromJson(doc: { nftables: Record<string, any>[] } | undefined): string[] {
  for (const item of doc?.nftables ?? []) {
    const ft = item.flowtable;
    if (!ft || ft.name !== ACCEL_FLOWTABLE) continue;
    const dev = ft.dev;
    return Array.isArray(dev) ? dev.map(String) : typeof dev === 'string' ? [dev] : [];
  }
  return [];
}

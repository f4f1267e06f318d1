// The owned-address record's file format, validated on the way in like any other input: a
// corrupt record must not make the agent delete an address it never added.
import * as addr from '@qubes-net/common/addr';
import type { DesiredAddress } from './desired.js';
import type { OwnedRecord } from './plan.js';

export function parseOwnedRecord(text: string): OwnedRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.ifname !== 'string' || !Number.isInteger(o.ifindex) || !Array.isArray(o.addresses)) return undefined;
  const addresses: DesiredAddress[] = [];
  for (const a of o.addresses as unknown[]) {
    if (typeof a !== 'object' || a === null) return undefined;
    const { family, local, prefixlen } = a as Record<string, unknown>;
    if (typeof local !== 'string' || !Number.isInteger(prefixlen)) return undefined;
    const canonical = family === 4 ? addr.parseIPv4(local) : family === 6 ? addr.parseIPv6(local) : undefined;
    const max = family === 4 ? 32 : 128;
    if (canonical === undefined || (prefixlen as number) < 0 || (prefixlen as number) > max) return undefined;
    addresses.push({ family: family as 4 | 6, local: canonical, prefixlen: prefixlen as number });
  }
  return { ifname: o.ifname, ifindex: o.ifindex as number, addresses };
}

// The uplink MTU from `/vm-config/net-mtu` (dom0's `vm-config.net-mtu` feature, Qubes issue
// 10758: a PPPoE or VPN uplink below 1500 must reach every qube behind it). Pure: the caller
// gives the raw value, whether IPv6 will be configured and the link's maximum MTU.
// The value is untrusted: only a plain decimal in range is accepted, never repaired. An
// invalid value makes the whole outcome invalid, so the uplink fails closed like it does for
// any other bad key (nothing half-configured with a wrong MTU).
import { KEY } from './keys.js';
import type { ConfigOutcome, ConfigIssue } from './read-config.js';

/** IPv4's minimum datagram every host must accept (RFC 791). */
export const MIN_MTU_IPV4 = 576;
/** IPv6's minimum link MTU (RFC 8200); below it the kernel turns IPv6 off on the link. */
export const MIN_MTU_IPV6 = 1280;
/** The largest MTU any Linux link reports (and the answer when the driver gives none). */
export const MAX_MTU_FALLBACK = 65535;

export interface MtuContext {
  /** IPv6 will be configured on the uplink (an address from QubesDB, IPv6 usable there). */
  ipv6: boolean;
  /** The link's max_mtu from netlink; undefined or 0 = the driver states no limit. */
  maxMtu: number | undefined;
}

export type MtuVerdict = { kind: 'absent' } | { kind: 'ok'; mtu: number } | { kind: 'invalid'; issue: ConfigIssue };

/** Validates the raw key value; empty counts as absent (as for every other optional key). */
export function parseMtu(raw: string | undefined, ctx: MtuContext): MtuVerdict {
  if (raw === undefined || raw === '') return { kind: 'absent' };
  const bad = (reason: string): MtuVerdict => ({ kind: 'invalid', issue: { key: KEY.netMtu, value: raw, reason } });
  if (!/^[1-9][0-9]{0,5}$/.test(raw)) return bad('MTU is not a decimal number');
  const mtu = Number(raw);
  const min = ctx.ipv6 ? MIN_MTU_IPV6 : MIN_MTU_IPV4;
  if (mtu < min) return bad(`MTU ${mtu} is below the minimum ${min}${ctx.ipv6 ? ' (IPv6 is configured)' : ''}`);
  const max = ctx.maxMtu !== undefined && ctx.maxMtu > 0 ? ctx.maxMtu : MAX_MTU_FALLBACK;
  if (mtu > max) return bad(`MTU ${mtu} is above the uplink's maximum ${max}`);
  return { kind: 'ok', mtu };
}

/**
 * The outcome with the MTU folded in: an ok outcome gains `config.mtu`, or becomes invalid
 * when the value is refused. Other outcomes are returned as they are (nothing is configured).
 */
export function withMtu(outcome: ConfigOutcome, raw: string | undefined, ctx: MtuContext): ConfigOutcome {
  if (outcome.kind !== 'ok') return outcome;
  const v = parseMtu(raw, ctx);
  if (v.kind === 'absent') return outcome;
  if (v.kind === 'invalid') return { kind: 'invalid', issues: [v.issue], providesNetwork: outcome.providesNetwork };
  return { ...outcome, config: { ...outcome.config, mtu: v.mtu } };
}

/** The `ip -batch` line that sets the MTU, or none when the link already has it. */
export function mtuLine(ifname: string, current: number | undefined, wanted: number | undefined): string | undefined {
  if (wanted === undefined || current === wanted) return undefined;
  return `link set dev ${ifname} mtu ${wanted}`;
}

/** The link's MTU before this agent first changed it (kept under /run with the other record). */
export interface MtuRecord {
  ifindex: number;
  original: number;
}

export function parseMtuRecord(text: string): MtuRecord | undefined {
  try {
    const o = JSON.parse(text) as Record<string, unknown>;
    const ok = (v: unknown, min: number): v is number => Number.isInteger(v) && (v as number) >= min && (v as number) <= MAX_MTU_FALLBACK;
    return ok(o.ifindex, 1) && ok(o.original, 68) ? { ifindex: o.ifindex, original: o.original } : undefined;
  } catch {
    return undefined;
  }
}

export interface MtuTarget {
  /** The MTU the plan sets (undefined: leave the link's). */
  mtu?: number;
  /** What to do with the record: write it before the batch, remove it after a good one. */
  record: { op: 'keep' } | { op: 'write'; value: MtuRecord } | { op: 'remove' };
}

/**
 * The MTU to plan: the requested one (remembering the link's own first), or, once the key is
 * gone, the link's own MTU back. A record of another ifindex (the link was re-created) is stale.
 */
export function mtuTarget(wanted: number | undefined, rec: MtuRecord | undefined, link: { ifindex: number; mtu?: number | undefined }): MtuTarget {
  const mine = rec !== undefined && rec.ifindex === link.ifindex ? rec : undefined;
  if (wanted !== undefined) {
    if (!mine && link.mtu !== undefined && link.mtu !== wanted) return { mtu: wanted, record: { op: 'write', value: { ifindex: link.ifindex, original: link.mtu } } };
    return { mtu: wanted, record: { op: 'keep' } };
  }
  if (mine) return { mtu: mine.original, record: { op: 'remove' } };
  return { record: rec ? { op: 'remove' } : { op: 'keep' } };
}

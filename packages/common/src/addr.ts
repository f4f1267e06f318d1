// Strict parsing of addresses that arrive from untrusted sources (QubesDB, xenstore,
// resolv.conf, the environment). Every parser returns a canonical string or undefined: it
// never throws and never accepts anything with surrounding junk.
import { isIPv4, isIPv6 } from 'node:net';

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** A dotted-quad IPv4 address without leading zeros, or undefined. */
export function parseIPv4(value: string): string | undefined {
  if (typeof value !== 'string' || value.length > 15 || !IPV4_RE.test(value)) return undefined;
  return value;
}

/** An IPv6 address (no zone, no prefix), canonicalised (lower case, RFC 5952 compressed). */
export function parseIPv6(value: string): string | undefined {
  if (typeof value !== 'string' || value.length > 45 || !/^[0-9a-fA-F:.]+$/.test(value) || !isIPv6(value)) return undefined;
  return canonicalIPv6(value);
}

export function ipFamily(value: string): 4 | 6 | undefined {
  if (parseIPv4(value)) return 4;
  if (parseIPv6(value)) return 6;
  return undefined;
}

/** Expands an IPv6 address to 8 groups of 16 bits. Input must already be valid. */
export function ipv6Groups(value: string): number[] {
  let v = value.toLowerCase();
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(v);
  if (v4 && isIPv4(v4[1]!)) {
    const o = v4[1]!.split('.').map(Number);
    v = v.slice(0, -v4[1]!.length) + ((o[0]! << 8) | o[1]!).toString(16) + ':' + ((o[2]! << 8) | o[3]!).toString(16);
  }
  const [head, tail] = v.includes('::') ? v.split('::') as [string, string] : [v, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail !== undefined ? 8 - h.length - t.length : 0;
  return [...h, ...Array(fill).fill('0'), ...t].map((g) => parseInt(g, 16));
}

export function canonicalIPv6(value: string): string {
  const g = ipv6Groups(value);
  // Find the longest run (>= 2) of zero groups for '::'.
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return hex.slice(0, bestStart).join(':') + '::' + hex.slice(bestStart + bestLen).join(':');
}

/** Dotted netmask or decimal prefix → prefix length 0..32; undefined for a non-contiguous mask. */
export function parseNetmask4(value: string): number | undefined {
  if (/^(0|[1-9]\d?)$/.test(value)) {
    const n = Number(value);
    return n <= 32 ? n : undefined;
  }
  if (!parseIPv4(value)) return undefined;
  const bits = value.split('.').reduce((acc, o) => (acc << 8) | Number(o), 0) >>> 0;
  const prefix = 32 - Math.log2(((~bits) >>> 0) + 1);
  return Number.isInteger(prefix) ? prefix : undefined;
}

/** IPv6 prefix length 0..128 in decimal, without leading zeros. */
export function parsePrefix6(value: string): number | undefined {
  if (!/^(0|[1-9]\d{0,2})$/.test(value)) return undefined;
  const n = Number(value);
  return n <= 128 ? n : undefined;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** A lower-case colon-separated MAC address, as Qubes writes them. */
export function parseMac(value: string): string | undefined {
  return typeof value === 'string' && MAC_RE.test(value) ? value : undefined;
}

/** The MAC of every Xen backend vif, and the lladdr clients use for their gateway. */
export const GATEWAY_MAC = 'fe:ff:ff:ff:ff:ff';

/** `vif<domid>.<devid>`, decimal without leading zeros, domid <= 32752 (upstream's bound). */
export function parseVifName(value: string): { domid: number; devid: number } | undefined {
  const m = /^vif(0|[1-9]\d{0,4})\.(0|[1-9]\d{0,4})$/.exec(value);
  if (!m) return undefined;
  const domid = Number(m[1]), devid = Number(m[2]);
  if (domid > 32752 || devid > 65535) return undefined;
  return { domid, devid };
}

/** Shortens untrusted text for log lines so that 3 KB of garbage does not flood the journal. */
export function forLog(value: unknown, max = 80): string {
  const s = String(value);
  return s.length > max ? `${s.slice(0, max)}…(${s.length} bytes)` : s;
}

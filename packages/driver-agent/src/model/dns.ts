// DNS redirection, pure part: which real servers the virtual DNS addresses map to, and the
// nft text of the `dnat-dns` chain that does it. Upstream's rule: pair the virtual addresses,
// in order, with the real servers repeated cyclically, per family (IPv4 10.139.1.x, IPv6
// fd09:24ef:4179::a8b:x). A local resolver (loopback or an own address in resolv.conf) is a
// target too (issue 16.1). No usable server of a family → that family's virtual addresses
// reject at once (never a silent drop, which would make resolvers wait), so a query never
// leaves unredirected. A virtual address is never mapped onto a virtual address.
import { parseIPv4, parseIPv6, ipv6Groups } from '@qubes-net/common';
import type { NftTransaction } from '@qubes-net/common/kernel';
import { renderLines } from './nft-text.js';
import { InputError } from './input-error.js';
import { isVirtualDns4, nonUnicastReason4, nonUnicastReason6, isLoopback4, isLinkLocal6 } from './addr-class.js';

export interface ResolvConf {
  /** IPv4 nameservers in file order (only these can be DNAT targets of an IPv4 address). */
  servers4: string[];
  servers6: string[];
  errors: InputError[];
}

/** resolv.conf may carry at most a handful of servers; a huge file is garbage. */
export const MAX_RESOLV_CONF_BYTES = 64 * 1024;

/** Parses resolv.conf text; `source` names the file for error events. */
export function parseResolvConf(text: string, source = '/etc/resolv.conf'): ResolvConf {
  const out: ResolvConf = { servers4: [], servers6: [], errors: [] };
  if (text.length > MAX_RESOLV_CONF_BYTES) {
    out.errors.push(new InputError('resolv.conf', source, text, `larger than ${MAX_RESOLV_CONF_BYTES} bytes`));
    return out;
  }
  if (text.includes('\0')) {
    out.errors.push(new InputError('resolv.conf', source, text, 'contains NUL bytes (not a text file)'));
    return out;
  }
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/[#;].*$/, '').trim();
    if (!line) continue;
    const words = line.split(/\s+/);
    if (words[0] !== 'nameserver') continue;
    const value = words[1] ?? '';
    const key = `${source}:${i + 1}`;
    if (words.length !== 2) {
      out.errors.push(new InputError('resolv.conf', key, lines[i], 'nameserver line must have exactly one address'));
      continue;
    }
    const v4 = parseIPv4(value);
    if (v4) {
      if (!out.servers4.includes(v4)) out.servers4.push(v4);
      continue;
    }
    const v6 = parseIPv6(value.replace(/%[A-Za-z0-9_.-]{1,15}$/, ''));
    if (v6) {
      if (!out.servers6.includes(v6)) out.servers6.push(v6);
      continue;
    }
    out.errors.push(new InputError('resolv.conf', key, lines[i], 'nameserver is not an IP address'));
  }
  return out;
}

/**
 * systemd-resolved's `DNS` property as `busctl --json=short get-property` prints it:
 * {"type":"a(iiay)","data":[[ifindex, family, [bytes…]], …]}. Like upstream for IPv4: the
 * global entries (ifindex 0) when there are any, else the per-link ones; the same, separately,
 * for IPv6 (family 10).
 */
export function parseResolvedDns(json: string): { servers4: string[]; servers6: string[]; errors: InputError[] } {
  const errors: InputError[] = [];
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    return { servers4: [], servers6: [], errors: [new InputError('systemd-resolved', 'DNS', json, 'not JSON')] };
  }
  const data = (doc as { data?: unknown })?.data;
  if (!Array.isArray(data)) return { servers4: [], servers6: [], errors: [new InputError('systemd-resolved', 'DNS', json, 'no data array')] };
  const lists = { 2: { global: [] as string[], link: [] as string[] }, 10: { global: [] as string[], link: [] as string[] } };
  for (const entry of data) {
    if (!Array.isArray(entry) || entry.length !== 3) {
      errors.push(new InputError('systemd-resolved', 'DNS', JSON.stringify(entry), 'entry is not [ifindex, family, address]'));
      continue;
    }
    const [ifindex, family, bytes] = entry as [unknown, unknown, unknown];
    if (family !== 2 && family !== 10) continue;
    const len = family === 2 ? 4 : 16;
    if (typeof ifindex !== 'number' || !Array.isArray(bytes) || bytes.length !== len || !bytes.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) {
      errors.push(new InputError('systemd-resolved', 'DNS', JSON.stringify(entry), `malformed ${family === 2 ? 'IPv4' : 'IPv6'} entry`));
      continue;
    }
    const ip = family === 2
      ? bytes.join('.')
      : parseIPv6(Array.from({ length: 8 }, (_, i) => ((bytes[2 * i] as number) * 256 + (bytes[2 * i + 1] as number)).toString(16)).join(':'));
    if (!ip) continue;
    const list = ifindex === 0 ? lists[family].global : lists[family].link;
    if (!list.includes(ip)) list.push(ip);
  }
  const pick = (l: { global: string[]; link: string[] }) => (l.global.length ? l.global : l.link);
  return { servers4: pick(lists[2]), servers6: pick(lists[10]), errors };
}

export type DnsMode = 'dnat' | 'forward' | 'reject' | 'none';

export interface DnsPair {
  /** A virtual DNS address (10.139.1.1 …, fd09:24ef:4179::a8b:1 …). */
  virtual: string;
  /** The real server it is DNATed to (mode dnat only). */
  target?: string;
}

/** The mapping of one family's virtual DNS addresses. */
export interface FamilyDnsMapping {
  /**
   * dnat: to real servers (a local resolver included); forward: the upstream qube is itself a
   * Qubes provider whose virtual DNS we forward to unchanged (our resolv.conf names only
   * virtual addresses); reject: no usable server of this family, so queries are answered at
   * once with ICMP port unreachable / TCP reset (a resolver moves on to its next server
   * without waiting for a timeout); none: no virtual DNS address of this family, nothing to map.
   */
  mode: DnsMode;
  pairs: DnsPair[];
  /** The servers queries end up at (empty when rejected). */
  upstream: string[];
  /** Some target is a loopback address: the vifs need route_localnet (IPv4 only). */
  localnet?: boolean;
}

/** IPv4 at the top level (its historical shape); `ipv6` present whenever the kernel has IPv6. */
export interface DnsMapping extends FamilyDnsMapping {
  ipv6?: FamilyDnsMapping;
}

export interface DnsMappingInput {
  virtualDns: readonly string[];
  /** Candidate real servers, in preference order. */
  servers4: readonly string[];
  /** The IPv6 virtual DNS addresses (/qubes-netvm-*-dns6); undefined: no IPv6 in the kernel. */
  virtualDns6?: readonly string[];
  servers6?: readonly string[];
  /** This qube's own addresses (every interface, the gateway): DNAT to them reaches a local resolver. */
  ownAddresses: ReadonlySet<string>;
  /** A ProxyVM: virtual-range servers in its resolv.conf are its upstream provider's DNS. */
  behindQubesProvider: boolean;
}

export interface RejectedServer {
  server: string;
  reason: string;
}

/** fd09:24ef:4179::a8b:0/112, the block the proposed IPv6 virtual DNS addresses come from. */
export function isVirtualDns6(ip: string): boolean {
  const g = ipv6Groups(ip);
  const want = [0xfd09, 0x24ef, 0x4179, 0, 0, 0, 0xa8b];
  return want.every((x, i) => g[i] === x);
}

/** Every server queries end up at, IPv4 first (what /qubes-dns-upstream shows). */
export function allUpstream(m: DnsMapping): string[] {
  return [...m.upstream, ...(m.ipv6?.upstream ?? [])];
}

interface Classified {
  real: string[];
  virtualUpstream: string[];
  localnet: boolean;
}

function classify4(servers: readonly string[], input: DnsMappingInput, rejected: RejectedServer[]): Classified {
  const out: Classified = { real: [], virtualUpstream: [], localnet: false };
  for (const s of servers) {
    // A resolver on loopback in this qube (dnscrypt-proxy, unbound, Pi-hole: issue 16.1) is a
    // target like any other; the vifs then get route_localnet so the kernel routes to it.
    if (isLoopback4(s)) {
      if (!out.real.includes(s)) out.real.push(s);
      out.localnet = true;
      continue;
    }
    const bad = nonUnicastReason4(s);
    if (bad) rejected.push({ server: s, reason: bad });
    else if (isVirtualDns4(s) || input.virtualDns.includes(s)) out.virtualUpstream.push(s);
    else out.real.push(s); // own addresses too: a resolver listening on them
  }
  return out;
}

function classify6(servers: readonly string[], input: DnsMappingInput, rejected: RejectedServer[]): Classified {
  const out: Classified = { real: [], virtualUpstream: [], localnet: false };
  for (const s of servers) {
    const g = ipv6Groups(s);
    if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) {
      // The kernel drops packets to ::1 that arrived on another interface, DNAT or not, and
      // IPv6 has no route_localnet: such a resolver must listen on an own address too.
      rejected.push({ server: s, reason: 'IPv6 loopback: a DNATed query cannot reach ::1 (let the resolver listen on an own address)' });
      continue;
    }
    const bad = nonUnicastReason6(s) ?? (isLinkLocal6(s) ? 'link-local address (no interface to DNAT to)' : undefined);
    if (bad) rejected.push({ server: s, reason: bad });
    else if (isVirtualDns6(s) || (input.virtualDns6 ?? []).includes(s)) out.virtualUpstream.push(s);
    else out.real.push(s);
  }
  return out;
}

function familyMapping(virtual: readonly string[], c: Classified, behind: boolean, rejected: RejectedServer[]): FamilyDnsMapping {
  if (virtual.length === 0) return { mode: 'none', pairs: [], upstream: [] };
  if (c.real.length > 0) {
    for (const v of c.virtualUpstream) rejected.push({ server: v, reason: 'virtual DNS address (real servers are known)' });
    // Cyclic, as upstream: the n-th virtual address to the (n mod count)-th real server.
    const pairs = virtual.map((v, i) => ({ virtual: v, target: c.real[i % c.real.length]! }));
    const upstream = [...new Set(pairs.map((p) => p.target!))];
    const localnet = upstream.some((t) => !t.includes(':') && isLoopback4(t));
    return { mode: 'dnat', pairs, upstream, ...(localnet ? { localnet } : {}) };
  }
  if (c.virtualUpstream.length > 0 && behind) {
    return { mode: 'forward', pairs: virtual.map((v) => ({ virtual: v })), upstream: c.virtualUpstream };
  }
  for (const v of c.virtualUpstream) rejected.push({ server: v, reason: 'virtual DNS address, and this qube is not behind a Qubes provider' });
  return { mode: 'reject', pairs: virtual.map((v) => ({ virtual: v })), upstream: [] };
}

export function computeDnsMapping(input: DnsMappingInput): { mapping: DnsMapping; rejected: RejectedServer[] } {
  const rejected: RejectedServer[] = [];
  const mapping: DnsMapping = familyMapping(input.virtualDns, classify4(input.servers4, input, rejected), input.behindQubesProvider, rejected);
  if (input.virtualDns6 !== undefined) {
    mapping.ipv6 = familyMapping(input.virtualDns6, classify6(input.servers6 ?? [], input, rejected), input.behindQubesProvider, rejected);
  }
  return { mapping, rejected };
}

function familyRules(m: FamilyDnsMapping | undefined): string[] {
  const out: string[] = [];
  for (const p of m?.pairs ?? []) {
    for (const proto of ['udp', 'tcp']) {
      if (m!.mode === 'dnat') out.push(`${p.virtual} ${proto} dnat ${p.target}`);
      else if (m!.mode === 'forward') out.push(`${p.virtual} ${proto} accept`);
      else if (m!.mode === 'reject') out.push(`${p.virtual} ${proto} reject`);
    }
  }
  return out;
}

/** One line per rule of the IPv4 chain, in a form both the planner and the kernel reader produce. */
export function describeDnsRules(mapping: DnsMapping): string[] {
  return familyRules(mapping);
}

/** The same for the IPv6 chain (undefined: the mapping has no IPv6 part). */
export function describeDnsRules6(mapping: DnsMapping): string[] | undefined {
  return mapping.ipv6 ? familyRules(mapping.ipv6) : undefined;
}

function addFamilyChain(tx: NftTransaction, family: 'ip' | 'ip6', m: FamilyDnsMapping): void {
  const t = { family, name: 'qubes' } as const;
  tx.flushChain(t, 'dnat-dns');
  for (const p of m.pairs) {
    for (const proto of ['udp', 'tcp']) {
      const match = `${family} daddr ${p.virtual} ${proto} dport 53`;
      if (m.mode === 'dnat') tx.addRule(t, 'dnat-dns', `${match} dnat to ${p.target}`);
      else if (m.mode === 'forward') tx.addRule(t, 'dnat-dns', `${match} accept`);
      // Never a silent drop: the client's resolver would wait for its timeout (seconds) before
      // trying the other family's server.
      else if (m.mode === 'reject') tx.addRule(t, 'dnat-dns', proto === 'udp' ? `${match} counter reject` : `${match} counter reject with tcp reset`);
    }
  }
}

/**
 * Makes the `dnat-dns` chains hold exactly `mapping` (flush and refill, atomically): the IPv4
 * one always, the IPv6 one when the mapping has an IPv6 part (the kernel has IPv6).
 */
export function addDnsChain(tx: NftTransaction, mapping: DnsMapping): void {
  addFamilyChain(tx, 'ip', mapping);
  if (mapping.ipv6) addFamilyChain(tx, 'ip6', mapping.ipv6);
}

/** The same as text lines. */
export function dnsChainStatements(mapping: DnsMapping): string[] {
  return renderLines((tx) => addDnsChain(tx, mapping));
}

/** Reads `nft -j list chain ip|ip6 qubes dnat-dns` back into describeDnsRules' form. */
export function describeDnsChainJson(doc: { nftables: Record<string, any>[] } | undefined): string[] | undefined {
  if (!doc) return undefined;
  const out: string[] = [];
  for (const item of doc.nftables) {
    const rule = item.rule;
    if (!rule) continue;
    let daddr = '?', proto = '?', verdict = '?', target = '';
    for (const e of rule.expr ?? []) {
      if (e.match?.left?.payload?.field === 'daddr') daddr = String(e.match.right);
      else if (e.match?.left?.payload?.field === 'dport') proto = String(e.match.left.payload.protocol);
      else if (e.dnat) { verdict = 'dnat'; target = String(e.dnat.addr); }
      else if ('drop' in e) verdict = 'drop';
      else if ('reject' in e) verdict = 'reject';
      else if ('accept' in e) verdict = 'accept';
    }
    if (daddr.includes(':')) daddr = parseIPv6(daddr) ?? daddr;
    if (target.includes(':')) target = parseIPv6(target) ?? target;
    out.push(target ? `${daddr} ${proto} ${verdict} ${target}` : `${daddr} ${proto} ${verdict}`);
  }
  return out;
}

export function sameMapping(a: DnsMapping | undefined, b: DnsMapping | undefined): boolean {
  if (!a || !b) return a === b;
  return a.mode === b.mode && describeDnsRules(a).join('\n') === describeDnsRules(b).join('\n') && a.upstream.join(' ') === b.upstream.join(' ')
    && a.ipv6?.mode === b.ipv6?.mode && describeDnsRules6(a)?.join('\n') === describeDnsRules6(b)?.join('\n') && allUpstream(a).join(' ') === allUpstream(b).join(' ');
}

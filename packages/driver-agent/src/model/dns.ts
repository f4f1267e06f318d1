// DNS redirection, pure part: which real servers the virtual DNS addresses map to, and the
// nft text of the `dnat-dns` chain that does it. Upstream's rule: pair the virtual addresses,
// in order, with the real servers repeated cyclically; no usable server → drop both, so a
// query never leaves unredirected. Never map to a loopback, own or virtual address.
import { parseIPv4, parseIPv6 } from '@qubes-net/common';
import type { NftTransaction } from '@qubes-net/common/kernel';
import { renderLines } from './nft-text.js';
import { InputError } from './input-error.js';
import { isVirtualDns4, nonUnicastReason4 } from './addr-class.js';

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
 * {"type":"a(iiay)","data":[[ifindex, family, [bytes…]], …]}. Like upstream: IPv4 only;
 * the global entries (ifindex 0) when there are any, else the per-link ones.
 */
export function parseResolvedDns(json: string): { servers4: string[]; errors: InputError[] } {
  const errors: InputError[] = [];
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    return { servers4: [], errors: [new InputError('systemd-resolved', 'DNS', json, 'not JSON')] };
  }
  const data = (doc as { data?: unknown })?.data;
  if (!Array.isArray(data)) return { servers4: [], errors: [new InputError('systemd-resolved', 'DNS', json, 'no data array')] };
  const global: string[] = [];
  const link: string[] = [];
  for (const entry of data) {
    if (!Array.isArray(entry) || entry.length !== 3) {
      errors.push(new InputError('systemd-resolved', 'DNS', JSON.stringify(entry), 'entry is not [ifindex, family, address]'));
      continue;
    }
    const [ifindex, family, bytes] = entry as [unknown, unknown, unknown];
    if (family !== 2) continue;
    if (typeof ifindex !== 'number' || !Array.isArray(bytes) || bytes.length !== 4 || !bytes.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) {
      errors.push(new InputError('systemd-resolved', 'DNS', JSON.stringify(entry), 'malformed IPv4 entry'));
      continue;
    }
    const ip = bytes.join('.');
    const list = ifindex === 0 ? global : link;
    if (!list.includes(ip)) list.push(ip);
  }
  return { servers4: global.length ? global : link, errors };
}

export type DnsMode = 'dnat' | 'forward' | 'drop' | 'none';

export interface DnsPair {
  /** A virtual DNS address (10.139.1.1 …). */
  virtual: string;
  /** The real server it is DNATed to (mode dnat only). */
  target?: string;
}

export interface DnsMapping {
  /**
   * dnat: to real servers; forward: the upstream qube is itself a Qubes provider whose virtual
   * DNS we forward to unchanged (our resolv.conf names only virtual addresses); drop: no usable
   * server; none: no virtual DNS address is configured, nothing to map.
   */
  mode: DnsMode;
  pairs: DnsPair[];
  /** The servers queries end up at, as written to /qubes-dns-upstream (empty when dropped). */
  upstream: string[];
}

export interface DnsMappingInput {
  virtualDns: readonly string[];
  /** Candidate real servers, in preference order. */
  servers4: readonly string[];
  /** This qube's own addresses (every interface, the gateway); never a target. */
  ownAddresses: ReadonlySet<string>;
  /** A ProxyVM: virtual-range servers in its resolv.conf are its upstream provider's DNS. */
  behindQubesProvider: boolean;
}

export interface RejectedServer {
  server: string;
  reason: string;
}

export function computeDnsMapping(input: DnsMappingInput): { mapping: DnsMapping; rejected: RejectedServer[] } {
  const rejected: RejectedServer[] = [];
  const real: string[] = [];
  const virtualUpstream: string[] = [];
  for (const s of input.servers4) {
    const bad = nonUnicastReason4(s);
    if (bad) rejected.push({ server: s, reason: bad });
    else if (input.ownAddresses.has(s)) rejected.push({ server: s, reason: 'own address' });
    else if (isVirtualDns4(s) || input.virtualDns.includes(s)) virtualUpstream.push(s);
    else real.push(s);
  }
  if (input.virtualDns.length === 0) return { mapping: { mode: 'none', pairs: [], upstream: [] }, rejected };
  if (real.length > 0) {
    for (const v of virtualUpstream) rejected.push({ server: v, reason: 'virtual DNS address (real servers are known)' });
    const pairs = input.virtualDns.map((virtual, i) => ({ virtual, target: real[i % real.length]! }));
    const upstream = [...new Set(pairs.map((p) => p.target))];
    return { mapping: { mode: 'dnat', pairs, upstream }, rejected };
  }
  if (virtualUpstream.length > 0 && input.behindQubesProvider) {
    return { mapping: { mode: 'forward', pairs: input.virtualDns.map((virtual) => ({ virtual })), upstream: virtualUpstream }, rejected };
  }
  for (const v of virtualUpstream) rejected.push({ server: v, reason: 'virtual DNS address, and this qube is not behind a Qubes provider' });
  return { mapping: { mode: 'drop', pairs: input.virtualDns.map((virtual) => ({ virtual })), upstream: [] }, rejected };
}

/** One line per rule, in a form both the planner and the kernel reader produce. */
export function describeDnsRules(mapping: DnsMapping): string[] {
  const out: string[] = [];
  for (const p of mapping.pairs) {
    for (const proto of ['udp', 'tcp']) {
      if (mapping.mode === 'dnat') out.push(`${p.virtual} ${proto} dnat ${p.target}`);
      else if (mapping.mode === 'forward') out.push(`${p.virtual} ${proto} accept`);
      else if (mapping.mode === 'drop') out.push(`${p.virtual} ${proto} drop`);
    }
  }
  return out;
}

/** Makes the `dnat-dns` chain hold exactly `mapping` (flush and refill, atomically). */
export function addDnsChain(tx: NftTransaction, mapping: DnsMapping): void {
  const t = { family: 'ip', name: 'qubes' } as const;
  tx.flushChain(t, 'dnat-dns');
  for (const p of mapping.pairs) {
    for (const proto of ['udp', 'tcp']) {
      const match = `ip daddr ${p.virtual} ${proto} dport 53`;
      if (mapping.mode === 'dnat') tx.addRule(t, 'dnat-dns', `${match} dnat to ${p.target}`);
      else if (mapping.mode === 'forward') tx.addRule(t, 'dnat-dns', `${match} accept`);
      else if (mapping.mode === 'drop') tx.addRule(t, 'dnat-dns', `${match} counter drop`);
    }
  }
}

/** The same as text lines. */
export function dnsChainStatements(mapping: DnsMapping): string[] {
  return renderLines((tx) => addDnsChain(tx, mapping));
}

/** Reads `nft -j list chain ip qubes dnat-dns` back into describeDnsRules' form. */
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
      else if ('accept' in e) verdict = 'accept';
    }
    out.push(target ? `${daddr} ${proto} ${verdict} ${target}` : `${daddr} ${proto} ${verdict}`);
  }
  return out;
}

export function sameMapping(a: DnsMapping | undefined, b: DnsMapping | undefined): boolean {
  if (!a || !b) return a === b;
  return a.mode === b.mode && describeDnsRules(a).join('\n') === describeDnsRules(b).join('\n') && a.upstream.join(' ') === b.upstream.join(' ');
}

// dom0's firewall rules, in qvm-firewall's terms: parsing and validating what a user (the
// topology file or `qubes-net-lab firewall`) gives, and serializing each rule to the string
// dom0 writes into the provider's QubesDB (`action=accept dst4=1.2.3.0/24 proto=tcp
// dstports=80-80`). Pure: no I/O.
import { isIPv4, isIPv6 } from 'node:net';
import { parseIPv4, parseIPv6 } from '@qubes-net/common';

export type FirewallAction = 'accept' | 'drop';
export type FirewallProto = 'tcp' | 'udp' | 'icmp';

/** A validated rule. `dst` keeps the kind dom0 derives from `dsthost=`. */
export interface FirewallRule {
  action: FirewallAction;
  dst?: { kind: 'dst4' | 'dst6' | 'dsthost'; value: string };
  proto?: FirewallProto;
  /** Always "lo-hi", as dom0 stores it. */
  dstports?: string;
  icmptype?: number;
  specialtarget?: 'dns';
  /** Unix time (seconds) after which the rule no longer applies. */
  expire?: number;
  comment?: string;
}

export class FirewallRuleError extends Error {
  constructor(readonly field: string, readonly value: unknown, reason: string) {
    super(`${field}=${JSON.stringify(value)}: ${reason}`);
    this.name = 'FirewallRuleError';
  }
}

/** The rule list a qube has when none is given: accept everything (policy drop after it). */
export function defaultFirewall(): FirewallRule[] {
  return [{ action: 'accept' }];
}

const HOSTNAME_RE = /^[a-z0-9._-]+$/;

/** dsthost as qvm-firewall takes it: an IPv4/IPv6 address or network, or a host name. */
export function parseDstHost(input: unknown): NonNullable<FirewallRule['dst']> {
  const raw = typeof input === 'number' ? String(input) : input;
  if (typeof raw !== 'string' || raw === '') throw new FirewallRuleError('dsthost', input, 'expected an address, a network or a host name');
  const parts = raw.split('/');
  if (parts.length > 2) throw new FirewallRuleError('dsthost', input, 'too many "/"');
  const [host, prefixText] = parts as [string, string | undefined];
  let prefix: number | undefined;
  if (prefixText !== undefined) {
    if (!/^(0|[1-9]\d{0,2})$/.test(prefixText)) throw new FirewallRuleError('dsthost', input, 'the prefix length must be a decimal number');
    prefix = Number(prefixText);
  }
  if (isIPv6(host)) {
    const addr = parseIPv6(host);
    if (!addr) throw new FirewallRuleError('dsthost', input, 'invalid IPv6 address');
    const len = prefix ?? 128;
    if (len > 128) throw new FirewallRuleError('dsthost', input, 'IPv6 prefix length must be 0..128');
    return { kind: 'dst6', value: `${addr}/${len}` };
  }
  if (/^[0-9.]+$/.test(host)) {
    // Digits and dots only: this must be a full dotted quad (no "127/8" short forms).
    if (!isIPv4(host) || !parseIPv4(host)) throw new FirewallRuleError('dsthost', input, 'invalid IPv4 address');
    const len = prefix ?? 32;
    if (len > 32) throw new FirewallRuleError('dsthost', input, 'IPv4 prefix length must be 0..32');
    return { kind: 'dst4', value: `${host}/${len}` };
  }
  if (prefix !== undefined) throw new FirewallRuleError('dsthost', input, 'a host name takes no prefix length');
  if (!HOSTNAME_RE.test(host) || host.length > 255) throw new FirewallRuleError('dsthost', input, 'invalid host name (allowed: a-z 0-9 . _ -)');
  return { kind: 'dsthost', value: host };
}

/** "80", 80, "80-90" → "lo-hi"; ports 0..65535, lo <= hi. */
export function parseDstPorts(input: unknown): string {
  const text = typeof input === 'number' ? String(input) : input;
  if (typeof text !== 'string') throw new FirewallRuleError('dstports', input, 'expected a port or a range "lo-hi"');
  const m = /^(0|[1-9]\d{0,4})(?:-(0|[1-9]\d{0,4}))?$/.exec(text);
  if (!m) throw new FirewallRuleError('dstports', input, 'expected a port or a range "lo-hi"');
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > 65535 || hi > 65535) throw new FirewallRuleError('dstports', input, 'ports must be 0..65535');
  if (lo > hi) throw new FirewallRuleError('dstports', input, 'the range is reversed');
  return `${lo}-${hi}`;
}

export function parseIcmpType(input: unknown): number {
  const text = typeof input === 'number' ? String(input) : input;
  if (typeof text !== 'string' || !/^(0|[1-9]\d{0,2})$/.test(text) || Number(text) > 255) {
    throw new FirewallRuleError('icmptype', input, 'expected a number 0..255');
  }
  return Number(text);
}

function parseExpire(input: unknown, now: number): number {
  if (typeof input === 'number' && Number.isInteger(input) && input >= 0) return input;
  if (typeof input === 'string') {
    // qvm-firewall accepts "+SECONDS" (relative to now) or an absolute unix time.
    const rel = /^\+(\d{1,10})$/.exec(input);
    if (rel) return now + Number(rel[1]);
    if (/^\d{1,12}$/.test(input)) return Number(input);
  }
  throw new FirewallRuleError('expire', input, 'expected a unix time or "+SECONDS"');
}

const KNOWN = new Set(['action', 'dsthost', 'dst4', 'dst6', 'proto', 'dstports', 'icmptype', 'specialtarget', 'expire', 'comment']);

/**
 * One rule from an object (`{action: accept, proto: tcp, dstports: 80}`) or a qvm-firewall
 * style string (`action=accept proto=tcp dstports=80`). Throws FirewallRuleError naming the
 * offending option.
 */
export function parseFirewallRule(input: unknown, now = Math.floor(Date.now() / 1000)): FirewallRule {
  const fields = typeof input === 'string' ? tokensOf(input) : input;
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) {
    throw new FirewallRuleError('rule', input, 'expected "action=… …" or a mapping');
  }
  const f = fields as Record<string, unknown>;
  for (const key of Object.keys(f)) {
    if (!KNOWN.has(key)) throw new FirewallRuleError(key, f[key], 'unknown rule option');
  }
  if (f.action !== 'accept' && f.action !== 'drop') throw new FirewallRuleError('action', f.action, 'must be accept or drop');
  const rule: FirewallRule = { action: f.action };
  const dstFields = ['dsthost', 'dst4', 'dst6'].filter((k) => f[k] !== undefined);
  if (dstFields.length > 1) throw new FirewallRuleError(dstFields[1]!, f[dstFields[1]!], `only one destination option is allowed (also ${dstFields[0]})`);
  if (dstFields.length === 1) {
    const key = dstFields[0]!;
    const dst = parseDstHost(f[key]);
    if (key !== 'dsthost' && dst.kind !== key) throw new FirewallRuleError(key, f[key], `not an ${key === 'dst4' ? 'IPv4' : 'IPv6'} address or network`);
    rule.dst = dst;
  }
  if (f.proto !== undefined) {
    if (f.proto !== 'tcp' && f.proto !== 'udp' && f.proto !== 'icmp') throw new FirewallRuleError('proto', f.proto, 'must be tcp, udp or icmp');
    rule.proto = f.proto;
  }
  if (f.dstports !== undefined) {
    if (rule.proto !== 'tcp' && rule.proto !== 'udp') throw new FirewallRuleError('dstports', f.dstports, 'needs proto=tcp or proto=udp');
    rule.dstports = parseDstPorts(f.dstports);
  }
  if (f.icmptype !== undefined) {
    if (rule.proto !== 'icmp') throw new FirewallRuleError('icmptype', f.icmptype, 'needs proto=icmp');
    rule.icmptype = parseIcmpType(f.icmptype);
  }
  if (f.specialtarget !== undefined) {
    if (f.specialtarget !== 'dns') throw new FirewallRuleError('specialtarget', f.specialtarget, 'only "dns" exists');
    rule.specialtarget = 'dns';
  }
  if (f.expire !== undefined) rule.expire = parseExpire(f.expire, now);
  if (f.comment !== undefined) {
    if (typeof f.comment !== 'string') throw new FirewallRuleError('comment', f.comment, 'must be text');
    rule.comment = f.comment;
  }
  return rule;
}

function tokensOf(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const token of text.trim().split(/\s+/)) {
    if (token === '') continue;
    const eq = token.indexOf('=');
    if (eq <= 0) throw new FirewallRuleError('rule', token, 'expected KEY=VALUE');
    const key = token.slice(0, eq);
    if (key in out) throw new FirewallRuleError(key, token.slice(eq + 1), 'given twice');
    out[key] = token.slice(eq + 1);
  }
  return out;
}

/**
 * The rule as dom0 stores it: `action` first; then the destination option, `proto` and
 * `specialtarget`; then `dstports`, then `icmptype`. expire and comment are never written.
 */
export function serializeRule(rule: FirewallRule): string {
  const parts = [`action=${rule.action}`];
  if (rule.dst) parts.push(`${rule.dst.kind}=${rule.dst.value}`);
  if (rule.proto) parts.push(`proto=${rule.proto}`);
  if (rule.specialtarget) parts.push(`specialtarget=${rule.specialtarget}`);
  if (rule.dstports) parts.push(`dstports=${rule.dstports}`);
  if (rule.icmptype !== undefined) parts.push(`icmptype=${rule.icmptype}`);
  return parts.join(' ');
}

/** The qvm-firewall-like one-line form of a rule (for status output and the state file). */
export function describeRule(rule: FirewallRule): string {
  const parts = [`action=${rule.action}`];
  if (rule.dst) parts.push(`dsthost=${rule.dst.value}`);
  if (rule.proto) parts.push(`proto=${rule.proto}`);
  if (rule.specialtarget) parts.push(`specialtarget=${rule.specialtarget}`);
  if (rule.dstports) parts.push(`dstports=${rule.dstports}`);
  if (rule.icmptype !== undefined) parts.push(`icmptype=${rule.icmptype}`);
  if (rule.expire !== undefined) parts.push(`expire=${rule.expire}`);
  return parts.join(' ');
}

/**
 * dom0's per-family entries (`policy` and `NNNN`), keys relative to /qubes-firewall/<ip>/.
 * NNNN is the index in the whole list: rules skipped (expired, or for the other family) still
 * consume their number. The policy is always drop.
 */
export function firewallEntries(rules: readonly FirewallRule[], family: 4 | 6, now = Math.floor(Date.now() / 1000)): Array<[string, string]> {
  const out: Array<[string, string]> = [['policy', 'drop']];
  rules.forEach((rule, index) => {
    if (rule.expire !== undefined && rule.expire <= now) return;
    if (rule.dst?.kind === 'dst4' && family === 6) return;
    if (rule.dst?.kind === 'dst6' && family === 4) return;
    out.push([String(index).padStart(4, '0'), serializeRule(rule)]);
  });
  return out;
}

/** The nearest expiry still in the future (dom0 reloads the firewall then), if any. */
export function nextExpiry(rules: readonly FirewallRule[], now = Math.floor(Date.now() / 1000)): number | undefined {
  const future = rules.map((r) => r.expire).filter((e): e is number => e !== undefined && e > now);
  return future.length ? Math.min(...future) : undefined;
}

// Strict, total parser of the rules dom0 writes under /qubes-firewall/<ip>/ (policy and NNNN
// keys, each rule a string of space-separated key=value options). Every input, however
// malformed, yields either typed rules or a list of typed errors: nothing here throws, since
// one qube's garbage must never stop the daemon (upstream crashed on a token without '=').
import { forLog, parseIPv4, parseIPv6, canonicalIPv6, ipv6Groups } from '@qubes-net/common';
import type { Family } from './skeleton.js';
import type { Action, Cidr, ParsedQube, PortRange, Proto, Rule, RuleError, RuleErrorKind } from './rules.js';

export const FIREWALL_PREFIX = '/qubes-firewall/';

const OPTIONS = ['action', 'proto', 'dst4', 'dst6', 'dsthost', 'dstports', 'specialtarget', 'icmptype'] as const;
type Option = (typeof OPTIONS)[number];

/** A source address as it appears in a /qubes-firewall/<ip> path. */
export interface Target {
  addr: string;
  family: Family;
}

/**
 * The qube address from a path component. Only the canonical text is accepted (dom0 writes
 * Python's canonical form), so one address can never have two chains.
 */
export function parseTarget(raw: string): Target | undefined {
  if (typeof raw !== 'string') return undefined;
  if (parseIPv4(raw) === raw) return { addr: raw, family: 4 };
  if (parseIPv6(raw) === raw) return { addr: raw, family: 6 };
  return undefined;
}

/** The target of a watch event path: `/qubes-firewall/<ip>` exactly (the commit marker). */
export function markerTarget(path: string): string | undefined {
  if (!path.startsWith(FIREWALL_PREFIX)) return undefined;
  const rest = path.slice(FIREWALL_PREFIX.length);
  return rest !== '' && !rest.includes('/') ? rest : undefined;
}

function err(kind: RuleErrorKind, key: string, message: string, value?: string): RuleError {
  return value === undefined ? { kind, key, message } : { kind, key, message, value: forLog(value) };
}

const DECIMAL = /^(0|[1-9]\d*)$/;

function decimal(text: string, max: number): number | undefined {
  if (!DECIMAL.test(text) || text.length > 6) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

/** Clears the host bits, so that 10.1.2.3/8 and 10.0.0.0/8 are the same range. */
function networkAddress(family: Family, addr: string, prefix: number): string {
  if (family === 4) {
    const n = addr.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    const size = 2 ** (32 - prefix);
    const net = Math.floor(n / size) * size;
    return [24, 16, 8, 0].map((s) => Math.floor(net / 2 ** s) % 256).join('.');
  }
  const groups = ipv6Groups(addr);
  const out = groups.map((g, i) => {
    const bitsHere = Math.min(16, Math.max(0, prefix - i * 16));
    const mask = bitsHere === 0 ? 0 : (0xffff << (16 - bitsHere)) & 0xffff;
    return (g & mask).toString(16);
  });
  return canonicalIPv6(out.join(':'));
}

/** `a.b.c.d/len` or a bare address (/32); `addr/len` or bare (/128) for IPv6. */
export function parseCidr(family: Family, text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : decimal(prefixText, max);
  if (prefix === undefined) return undefined;
  const addr = family === 4 ? parseIPv4(addrText) : parseIPv6(addrText);
  if (!addr) return undefined;
  return { family, addr: networkAddress(family, addr, prefix), prefix };
}

const LABEL = /^[a-z0-9_-]{1,63}$/;

/** A host name from dom0's alphabet [a-z0-9._-], with sane label and total lengths. */
export function parseHostname(text: string): string | undefined {
  if (text.length === 0 || text.length > 253) return undefined;
  const body = text.endsWith('.') ? text.slice(0, -1) : text;
  if (body.length === 0) return undefined;
  return body.split('.').every((l) => LABEL.test(l)) ? text : undefined;
}

function parsePorts(key: string, text: string, errors: RuleError[]): PortRange | undefined {
  const m = /^([0-9]+)-([0-9]+)$/.exec(text);
  if (!m || !DECIMAL.test(m[1]!) || !DECIMAL.test(m[2]!)) {
    errors.push(err('bad-ports', key, 'dstports must be "lo-hi" in decimal', text));
    return undefined;
  }
  const lo = m[1]!.length > 6 ? Infinity : Number(m[1]);
  const hi = m[2]!.length > 6 ? Infinity : Number(m[2]);
  if (lo > 65535 || hi > 65535) {
    errors.push(err('port-out-of-range', key, 'ports must be within 0..65535', text));
    return undefined;
  }
  if (lo > hi) {
    errors.push(err('ports-reversed', key, 'port range is reversed', text));
    return undefined;
  }
  return { lo, hi };
}

/** One rule string (the value of an NNNN key) for a source of `family`. */
export function parseRule(key: string, value: string, family: Family): { ok: true; rule: Rule } | { ok: false; errors: RuleError[] } {
  try {
    return parseRuleUnguarded(key, value, family);
  } catch (e) {
    // Unreachable by design; the guard keeps the promise that the parser never throws.
    return { ok: false, errors: [err('internal', key, `parser failure: ${forLog((e as Error)?.message ?? e)}`, String(value))] };
  }
}

function parseRuleUnguarded(key: string, value: string, family: Family): { ok: true; rule: Rule } | { ok: false; errors: RuleError[] } {
  const errors: RuleError[] = [];
  if (typeof value !== 'string' || value.length === 0) return { ok: false, errors: [err('empty-rule', key, 'rule is empty', String(value ?? ''))] };
  if (!/^[\x20-\x7e]*$/.test(value)) return { ok: false, errors: [err('garbage', key, 'rule contains bytes outside printable ASCII', value)] };

  const options = new Map<Option, string>();
  for (const token of value.split(' ')) {
    if (token === '') {
      errors.push(err('empty-token', key, 'options must be separated by single spaces', value));
      continue;
    }
    const eq = token.indexOf('=');
    if (eq < 0) {
      errors.push(err('token-without-equals', key, 'option without "="', token));
      continue;
    }
    const name = token.slice(0, eq);
    const optValue = token.slice(eq + 1);
    if (!(OPTIONS as readonly string[]).includes(name)) {
      errors.push(err('unknown-option', key, `unknown option "${forLog(name, 20)}"`, token));
      continue;
    }
    if (options.has(name as Option)) {
      errors.push(err('duplicate-option', key, `option "${name}" given twice`, token));
      continue;
    }
    options.set(name as Option, optValue);
  }

  let action: Action | undefined;
  const actionText = options.get('action');
  if (actionText === undefined) errors.push(err('missing-action', key, 'rule has no action', value));
  else if (actionText === 'accept' || actionText === 'drop') action = actionText;
  else errors.push(err('bad-action', key, 'action must be accept or drop', actionText));

  let proto: Proto | undefined;
  const protoText = options.get('proto');
  if (protoText !== undefined) {
    if (protoText === 'tcp' || protoText === 'udp' || protoText === 'icmp') proto = protoText;
    else errors.push(err('bad-proto', key, 'proto must be tcp, udp or icmp', protoText));
  }

  const rule: Partial<Rule> = { key };
  const dstCount = ['dst4', 'dst6', 'dsthost'].filter((o) => options.has(o as Option)).length;
  if (dstCount > 1) errors.push(err('conflicting-destinations', key, 'at most one of dst4, dst6, dsthost', value));
  for (const [opt, fam] of [['dst4', 4], ['dst6', 6]] as const) {
    const text = options.get(opt);
    if (text === undefined) continue;
    const cidr = parseCidr(fam, text);
    if (!cidr) errors.push(err('bad-cidr', key, `${opt} is not a valid IPv${fam} address or prefix`, text));
    else if (fam !== family) errors.push(err('family-mismatch', key, `${opt} in the rules of an IPv${family} source`, text));
    else rule.dst = { kind: 'cidr', cidr };
  }
  const hostText = options.get('dsthost');
  if (hostText !== undefined) {
    const name = parseHostname(hostText);
    if (!name) errors.push(err('bad-hostname', key, 'dsthost must be a host name of [a-z0-9._-]', hostText));
    else rule.dst = { kind: 'host', name };
  }

  const special = options.get('specialtarget');
  if (special !== undefined) {
    if (special !== 'dns') errors.push(err('bad-specialtarget', key, 'specialtarget must be dns', special));
    else if (proto === 'icmp') errors.push(err('ports-without-tcp-udp', key, 'specialtarget=dns means port 53: it needs tcp, udp or no proto', value));
    else rule.dns = true;
  }

  const portsText = options.get('dstports');
  if (portsText !== undefined) {
    const ports = parsePorts(key, portsText, errors);
    if (proto === 'icmp') errors.push(err('ports-without-tcp-udp', key, 'dstports needs proto tcp or udp (or no proto)', value));
    else if (ports) rule.ports = ports;
  }

  const icmpText = options.get('icmptype');
  if (icmpText !== undefined) {
    const type = decimal(icmpText, 255);
    if (type === undefined) errors.push(err('bad-icmptype', key, 'icmptype must be 0..255', icmpText));
    if (proto !== 'icmp') errors.push(err('icmptype-without-icmp', key, 'icmptype needs proto=icmp', value));
    else if (type !== undefined) rule.icmpType = type;
  }

  if (errors.length) return { ok: false, errors };
  rule.action = action!;
  if (proto) rule.proto = proto;
  return { ok: true, rule: rule as Rule };
}

/**
 * All rules of one qube from a multiread of `/qubes-firewall/<addr>/`: the NNNN rules in key
 * order, then the policy as a final rule. Any error anywhere makes the whole qube an error.
 */
export function parseQubeEntries(target: Target, entries: ReadonlyMap<string, string>): ParsedQube {
  try {
    const prefix = `${FIREWALL_PREFIX}${target.addr}/`;
    const errors: RuleError[] = [];
    const numbered: [string, string][] = [];
    let policy: Action | undefined;
    let sawPolicy = false;
    for (const [path, value] of entries) {
      if (!path.startsWith(prefix)) {
        errors.push(err('bad-key', forLog(path), 'key outside this qube\'s rules'));
        continue;
      }
      const key = path.slice(prefix.length);
      if (key === 'policy') {
        sawPolicy = true;
        if (value === 'accept' || value === 'drop') policy = value;
        else errors.push(err('bad-policy', 'policy', 'policy must be accept or drop', value));
      } else if (/^\d{4}$/.test(key)) {
        numbered.push([key, value]);
      } else {
        errors.push(err('bad-key', forLog(key), 'rule keys are 4 digits or "policy"'));
      }
    }
    if (!sawPolicy) errors.push(err('missing-policy', 'policy', 'no policy'));
    numbered.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const rules: Rule[] = [];
    for (const [key, value] of numbered) {
      const r = parseRule(key, value, target.family);
      if (r.ok) rules.push(r.rule);
      else errors.push(...r.errors);
    }
    if (errors.length || !policy) return { ok: false, addr: target.addr, family: target.family, errors };
    rules.push({ key: 'policy', action: policy });
    return { ok: true, addr: target.addr, family: target.family, rules };
  } catch (e) {
    return { ok: false, addr: target.addr, family: target.family, errors: [err('internal', 'policy', `parser failure: ${forLog((e as Error)?.message ?? e)}`)] };
  }
}

/** One line per error, for logs and the feedback key. */
export function describeErrors(errors: readonly RuleError[]): string {
  return errors.map((e) => `${e.key}: ${e.kind}${e.value !== undefined ? ` (${e.value})` : ''}`).join('; ');
}

// Validation of a topology (already parsed from YAML/JSON into plain values) into the lab's
// model. Every problem is collected with the field path and, when the loader can tell, the
// line, so one run of `up` reports all mistakes of a file at once.
import { parseIPv4, parseIPv6, parseMac, parseNetmask4 } from '@qubes-net/common';
import { FirewallRuleError, defaultFirewall, parseFirewallRule, type FirewallRule } from '../dom0/firewall-rules.js';
import { DEFAULT_MAC, NET_MTU_FEATURE, realIPv4, realIPv6 } from '../dom0/addresses.js';
import type { LabModel, QubeClass, QubeSpec } from './model.js';

export type FieldPath = ReadonlyArray<string | number>;

export interface TopologyIssue {
  path: string;
  line?: number;
  message: string;
}

export class TopologyError extends Error {
  constructor(readonly source: string, readonly issues: readonly TopologyIssue[]) {
    super(issues.map((i) => `${source}${i.line !== undefined ? `:${i.line}` : ''}: ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n'));
    this.name = 'TopologyError';
  }
}

/** Maps a field path to a 1-based line of the source, when known. */
export type LineOf = (path: FieldPath) => number | undefined;

export function formatPath(path: FieldPath): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

/**
 * Qubes allows a letter then letters, digits, '_', '.', '-' (31 at most); the lab's names also
 * become parts of network namespace names, so: lower case, digits and '-', 20 at most.
 */
const QUBE_NAME_RE = /^[a-z][a-z0-9-]{0,19}$/;
// 'internet' is the fake internet's namespace.
const RESERVED_NAMES = new Set(['none', 'default', 'dom0', 'internet']);
const LAB_NAME_RE = /^[a-z][a-z0-9-]{0,11}$/;
const FEATURE_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const SERVICE_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const QUBE_KEYS = new Set(['name', 'qid', 'class', 'dispid', 'netvm', 'provides_network', 'uplink', 'start', 'features', 'services', 'firewall', 'mac', 'ip', 'default_user']);
const TOP_KEYS = new Set(['name', 'qubes', 'internet']);
/** Fields of `internet:` (added to by each feature that configures the fake internet). */
const INTERNET_KEYS: string[] = ['dns', 'mtu', 'ipv4'];

class Collector {
  readonly issues: TopologyIssue[] = [];
  constructor(private readonly lineOf: LineOf) {}
  add(path: FieldPath, message: string): void {
    // A missing field has no line of its own: use the nearest enclosing one that has.
    let line: number | undefined;
    for (let n = path.length; n >= 0 && line === undefined; n--) line = this.lineOf(path.slice(0, n));
    this.issues.push({ path: formatPath(path), ...(line !== undefined ? { line } : {}), message });
  }
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Feature values as dom0 stores them: strings; true → "1", false → "". */
function featureValue(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? '1' : '';
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

/** What is wrong with a feature value (for the features dom0 checks), or undefined. */
export function featureProblem(name: string, value: string): string | undefined {
  if (!FEATURE_NAME_RE.test(name)) return 'invalid feature name';
  if (name === 'net.fake-ip' || name === 'net.fake-gateway') {
    if (value !== '' && !parseIPv4(value)) return `${JSON.stringify(value)} is not an IPv4 address`;
  } else if (name === 'net.fake-netmask') {
    const prefix = value === '' ? 0 : parseNetmask4(value);
    if (value !== '' && (prefix === undefined || (/^\d+$/.test(value) && prefix > 24))) return `${JSON.stringify(value)} is not a netmask (dotted, or a prefix 0..24)`;
  } else if (name === NET_MTU_FEATURE) {
    // Bounds as the guest agent checks them (IPv4 minimum; IPv6 qubes refuse below 1280).
    if (value !== '' && !(/^[1-9][0-9]{2,4}$/.test(value) && Number(value) >= 576 && Number(value) <= 65535)) return `${JSON.stringify(value)} is not an MTU (576..65535, or "" for none)`;
  } else if (name.startsWith('service.')) {
    const svc = name.slice('service.'.length);
    if (!SERVICE_NAME_RE.test(svc) || svc.length > 48) return `invalid service name ${JSON.stringify(svc)}`;
  }
  return undefined;
}

function checkKnownFeature(c: Collector, path: FieldPath, name: string, value: string): void {
  const problem = featureProblem(name, value);
  if (problem) c.add(path, problem);
}

function readQube(c: Collector, raw: unknown, i: number): QubeSpec | undefined {
  const at = (...p: Array<string | number>): FieldPath => ['qubes', i, ...p];
  if (!isMap(raw)) {
    c.add(at(), 'each qube must be a mapping (name: …, qid: …)');
    return undefined;
  }
  for (const k of Object.keys(raw)) if (!QUBE_KEYS.has(k)) c.add(at(k), `unknown field (known: ${[...QUBE_KEYS].join(', ')})`);
  const before = c.issues.length;

  const name = raw.name;
  if (typeof name !== 'string' || !QUBE_NAME_RE.test(name) || RESERVED_NAMES.has(name)) {
    c.add(at('name'), name === undefined ? 'missing' : `invalid qube name ${JSON.stringify(name)} (a lower-case letter, then a-z 0-9 -; at most 20)`);
  }
  const qid = raw.qid;
  if (!Number.isInteger(qid) || (qid as number) < 1 || (qid as number) > 65023) c.add(at('qid'), qid === undefined ? 'missing' : `must be an integer 1..65023, got ${JSON.stringify(qid)}`);

  const klass = raw.class ?? 'AppVM';
  if (klass !== 'AppVM' && klass !== 'DispVM' && klass !== 'StandaloneVM') c.add(at('class'), `must be AppVM, DispVM or StandaloneVM, got ${JSON.stringify(klass)}`);
  let dispid: number | undefined;
  if (klass === 'DispVM') {
    if (!Number.isInteger(raw.dispid) || (raw.dispid as number) < 1 || (raw.dispid as number) > 65023) c.add(at('dispid'), raw.dispid === undefined ? 'a DispVM needs a dispid' : `must be an integer 1..65023, got ${JSON.stringify(raw.dispid)}`);
    else dispid = raw.dispid as number;
  } else if (raw.dispid !== undefined) {
    c.add(at('dispid'), 'only a DispVM has a dispid');
  }

  const netvm = raw.netvm ?? null;
  if (netvm !== null && typeof netvm !== 'string') c.add(at('netvm'), 'must be a qube name or null');
  const bools: Record<string, boolean> = {};
  for (const [key, def] of [['provides_network', false], ['uplink', false], ['start', true]] as const) {
    const v = raw[key] ?? def;
    if (typeof v !== 'boolean') c.add(at(key), `must be true or false, got ${JSON.stringify(v)}`);
    bools[key] = v === true;
  }
  if (bools.uplink && !bools.provides_network) c.add(at('uplink'), 'only a qube with provides_network: true can have the uplink');
  if (bools.uplink && netvm !== null) c.add(at('uplink'), 'a qube with the uplink has no netvm');

  const features: Record<string, string> = {};
  if (raw.features !== undefined) {
    if (!isMap(raw.features)) c.add(at('features'), 'must be a mapping of feature names to values');
    else for (const [k, v] of Object.entries(raw.features)) {
      const value = featureValue(v);
      if (!FEATURE_NAME_RE.test(k)) c.add(at('features', k), 'invalid feature name');
      else if (value === undefined) c.add(at('features', k), `must be a string, number or boolean, got ${JSON.stringify(v)}`);
      else {
        checkKnownFeature(c, at('features', k), k, value);
        features[k] = value;
      }
    }
  }
  if (raw.services !== undefined) {
    if (!isMap(raw.services)) c.add(at('services'), 'must be a mapping of service names to true/false');
    else for (const [k, v] of Object.entries(raw.services)) {
      if (!SERVICE_NAME_RE.test(k) || k.length > 48) c.add(at('services', k), 'invalid service name (at most 48 of letters, digits, _ . -)');
      else if (typeof v !== 'boolean') c.add(at('services', k), `must be true or false, got ${JSON.stringify(v)}`);
      else features[`service.${k}`] = v ? '1' : '';
    }
  }

  let firewall: FirewallRule[] = defaultFirewall();
  if (raw.firewall !== undefined) {
    if (!Array.isArray(raw.firewall)) c.add(at('firewall'), 'must be a list of rules');
    else {
      firewall = [];
      raw.firewall.forEach((r, j) => {
        try {
          firewall.push(parseFirewallRule(r));
        } catch (err) {
          if (!(err instanceof FirewallRuleError)) throw err;
          c.add(isMap(r) && err.field in r ? at('firewall', j, err.field) : at('firewall', j), err.message);
        }
      });
    }
  }

  const mac = raw.mac ?? DEFAULT_MAC;
  if (typeof mac !== 'string' || !parseMac(mac)) c.add(at('mac'), `must be a lower-case MAC like ${DEFAULT_MAC}`);
  if (raw.ip !== undefined && (typeof raw.ip !== 'string' || !parseIPv4(raw.ip))) c.add(at('ip'), `must be an IPv4 address, got ${JSON.stringify(raw.ip)}`);
  const defaultUser = raw.default_user ?? 'user';
  if (typeof defaultUser !== 'string' || !/^[a-z_][a-z0-9_-]{0,31}$/.test(defaultUser)) c.add(at('default_user'), 'must be a user name');

  if (c.issues.length > before) return undefined;
  return {
    name: name as string,
    qid: qid as number,
    klass: klass as QubeClass,
    ...(dispid !== undefined ? { dispid } : {}),
    netvm: netvm as string | null,
    providesNetwork: bools.provides_network!,
    uplink: bools.uplink!,
    autostart: bools.start!,
    features,
    firewall,
    mac: mac as string,
    ...(raw.ip !== undefined ? { ip: raw.ip as string } : {}),
    defaultUser: defaultUser as string,
  };
}

/** Validates a parsed topology; throws TopologyError listing every problem. */
export function validateTopology(raw: unknown, source = 'topology', lineOf: LineOf = () => undefined): LabModel {
  const c = new Collector(lineOf);
  if (!isMap(raw)) throw new TopologyError(source, [{ path: '', message: 'the topology must be a mapping with "qubes:"' }]);
  for (const k of Object.keys(raw)) if (!TOP_KEYS.has(k)) c.add([k], `unknown field (known: ${[...TOP_KEYS].join(', ')})`);
  const labName = raw.name ?? 'lab';
  if (typeof labName !== 'string' || !LAB_NAME_RE.test(labName)) c.add(['name'], 'the lab name must be 1-12 of a-z 0-9 -, starting with a letter');

  const internet: LabModel['internet'] = {};
  if (raw.internet !== undefined) {
    if (!isMap(raw.internet)) c.add(['internet'], 'must be a mapping');
    else {
      for (const k of Object.keys(raw.internet)) if (!INTERNET_KEYS.includes(k)) c.add(['internet', k], `unknown field (known: ${INTERNET_KEYS.join(', ')})`);
      const mtu = raw.internet.mtu;
      if (mtu !== undefined) {
        // The uplink carries IPv6 too: at least IPv6's minimum link MTU.
        if (!Number.isInteger(mtu) || (mtu as number) < 1280 || (mtu as number) > 65535) c.add(['internet', 'mtu'], `must be an integer 1280..65535, got ${JSON.stringify(mtu)}`);
        else internet.mtu = mtu as number;
      }
      const ipv4 = raw.internet.ipv4;
      if (ipv4 !== undefined) {
        if (typeof ipv4 !== 'boolean') c.add(['internet', 'ipv4'], 'must be true or false');
        else internet.ipv4 = ipv4;
      }
      const dns = raw.internet.dns;
      if (dns !== undefined) {
        if (!Array.isArray(dns) || dns.length === 0) c.add(['internet', 'dns'], 'must be a non-empty list of IP addresses');
        else {
          dns.forEach((d, j) => {
            if (typeof d !== 'string' || (!parseIPv4(d) && !parseIPv6(d))) c.add(['internet', 'dns', j], `not an IP address: ${JSON.stringify(d)}`);
            else if (ipv4 === false && parseIPv4(d)) c.add(['internet', 'dns', j], `an IPv4 server on an IPv6-only uplink (ipv4: false): ${d}`);
          });
          internet.dns = dns as string[];
        }
      }
    }
  }

  const qubes = new Map<string, QubeSpec>();
  if (!Array.isArray(raw.qubes) || raw.qubes.length === 0) {
    c.add(['qubes'], 'must be a non-empty list of qubes');
  } else {
    const qids = new Map<number, number>();
    const dispids = new Map<number, number>();
    raw.qubes.forEach((r, i) => {
      const q = readQube(c, r, i);
      if (!q) return;
      if (qubes.has(q.name)) c.add(['qubes', i, 'name'], `duplicate qube name ${JSON.stringify(q.name)}`);
      if (qids.has(q.qid)) c.add(['qubes', i, 'qid'], `qid ${q.qid} is already used by qubes[${qids.get(q.qid)}]`);
      if (q.dispid !== undefined && dispids.has(q.dispid)) c.add(['qubes', i, 'dispid'], `dispid ${q.dispid} is already used by qubes[${dispids.get(q.dispid)}]`);
      qids.set(q.qid, i);
      if (q.dispid !== undefined) dispids.set(q.dispid, i);
      qubes.set(q.name, q);
    });
    const index = new Map((raw.qubes as unknown[]).map((r, i) => [isMap(r) ? r.name : undefined, i]));
    // The fake internet has one uplink port.
    const uplinks = [...qubes.values()].filter((q) => q.uplink);
    for (const q of uplinks.slice(1)) c.add(['qubes', index.get(q.name)!, 'uplink'], `only one qube can have the uplink (${uplinks[0]!.name} has it)`);
    for (const q of qubes.values()) {
      const i = index.get(q.name)!;
      if (q.netvm === null) continue;
      const nv = qubes.get(q.netvm);
      if (!nv) c.add(['qubes', i, 'netvm'], `no qube named ${JSON.stringify(q.netvm)}`);
      else if (nv.name === q.name) c.add(['qubes', i, 'netvm'], 'a qube cannot be its own netvm');
      else if (!nv.providesNetwork) c.add(['qubes', i, 'netvm'], `${nv.name} does not have provides_network: true`);
    }
    for (const q of qubes.values()) {
      const seen = new Set<string>();
      for (let cur: QubeSpec | undefined = q; cur && cur.netvm !== null; cur = qubes.get(cur.netvm)) {
        if (seen.has(cur.name)) {
          c.add(['qubes', index.get(q.name)!, 'netvm'], `netvm loop: ${[...seen, cur.name].join(' → ')}`);
          break;
        }
        seen.add(cur.name);
      }
    }
  }
  if (c.issues.length) throw new TopologyError(source, c.issues);

  const model: LabModel = { name: labName as string, qubes, internet };
  checkAddressClashes(model, c, raw.qubes as unknown[]);
  if (c.issues.length) throw new TopologyError(source, c.issues);
  return model;
}

/** Two qubes with the same IP (a custom `ip` equal to a computed one) cannot both be routed. */
function checkAddressClashes(model: LabModel, c: Collector, rawQubes: unknown[]): void {
  const owner = new Map<string, string>();
  for (const q of model.qubes.values()) {
    for (const ip of [realIPv4(model, q.name), realIPv6(model, q.name)]) {
      if (ip === undefined) continue;
      const other = owner.get(ip);
      if (other) c.add(['qubes', rawQubes.findIndex((r) => isMap(r) && r.name === q.name), 'ip'], `${q.name} and ${other} would both have ${ip}`);
      owner.set(ip, q.name);
    }
  }
}

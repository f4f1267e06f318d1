// The lab's model of a Qubes system: what dom0 knows about each qube (its properties and
// features). Loaded from a topology file and then changed at runtime by the operations
// (netvm, features, firewall), exactly like qubes-core-admin's properties.
import type { FirewallRule } from '../dom0/firewall-rules.js';

export type QubeClass = 'AppVM' | 'DispVM' | 'StandaloneVM';

export interface QubeSpec {
  name: string;
  qid: number;
  klass: QubeClass;
  /** Only for disposables: their IPs come from it (10.138.x.y, …::a8a:<hex>). */
  dispid?: number;
  /** Name of the qube providing network to this one, or null. */
  netvm: string | null;
  providesNetwork: boolean;
  /** This provider's eth0 is plugged into the fake internet. */
  uplink: boolean;
  /** Started by `up`. */
  autostart: boolean;
  /** Qubes features, string-valued like dom0's ("" is false). `service.<name>` are services. */
  features: Record<string, string>;
  firewall: FirewallRule[];
  mac: string;
  /** A custom `ip` property instead of the one computed from the qid. */
  ip?: string;
  defaultUser: string;
}

export interface InternetSpec {
  /** The DNS servers sys-net's resolv.conf lists (served by the fake internet's dnsmasq). */
  dns?: string[];
  /** The MTU of the link between the fake internet and the uplink qube (both ends). */
  mtu?: number;
  /** false: an IPv6-only uplink (no IPv4 address or route on sys-net's eth0). Default true. */
  ipv4?: boolean;
}

export interface LabModel {
  /** Short lab name: part of namespace names, the state directory and the CLI's `--lab`. */
  name: string;
  qubes: Map<string, QubeSpec>;
  internet: InternetSpec;
}

/** A deep copy, so operations can compute "after" without touching "before". */
export function cloneModel(model: LabModel): LabModel {
  return {
    name: model.name,
    internet: structuredClone(model.internet),
    qubes: new Map([...model.qubes].map(([k, q]) => [k, structuredClone(q)])),
  };
}

/** JSON form (for the state file and `status --json`). */
export function modelToJSON(model: LabModel): unknown {
  return { name: model.name, internet: model.internet, qubes: [...model.qubes.values()] };
}

export function modelFromJSON(value: any): LabModel {
  return {
    name: value.name,
    internet: value.internet ?? {},
    qubes: new Map((value.qubes as QubeSpec[]).map((q) => [q.name, q])),
  };
}

/**
 * Start order: every netvm before its clients, otherwise by qid. With `names`, the result is
 * those qubes plus the netvm chains they need (dom0 starts a qube's netvm first).
 */
export function startOrder(model: LabModel, names?: readonly string[]): string[] {
  const wanted = new Set(names ?? model.qubes.keys());
  const out: string[] = [];
  const visit = (name: string, stack: Set<string>): void => {
    if (out.includes(name)) return;
    if (stack.has(name)) throw new Error(`netvm loop through ${name}`);
    const q = model.qubes.get(name);
    if (!q) throw new Error(`unknown qube ${JSON.stringify(name)}`);
    stack.add(name);
    if (q.netvm !== null) visit(q.netvm, stack);
    stack.delete(name);
    out.push(name);
  };
  const byQid = [...model.qubes.values()].sort((a, b) => a.qid - b.qid).map((q) => q.name);
  for (const n of byQid) if (wanted.has(n)) visit(n, new Set());
  return out;
}

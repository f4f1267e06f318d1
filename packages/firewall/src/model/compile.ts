// Rules → one qube's chain, as a pure function of the parsed rules and the names resolved for
// them. The result is both the nft text (one transaction touching only that qube) and the
// effective rules the conntrack matcher walks, so the two can never disagree.
import { forLog } from '@qubes-net/common';
import { NftTransaction } from '@qubes-net/common/kernel';
import { DISPATCH_MAP, DNS_SET, firewallTable, qubeChainName, type Family } from './skeleton.js';
import { describeErrors } from './parse.js';
import type { Cidr, ParsedQube, PortRange, Rule } from './rules.js';

/** What resolving one dsthost for one address family produced. */
export type HostResolution =
  | { ok: true; addrs: readonly string[]; ttlSeconds: number }
  | {
      ok: false;
      error: string;
      /** When to look the name up again (the name cache's back-off); default: the retry interval. */
      retryInMs?: number;
    };

export type L4 = 'tcp' | 'udp' | 'icmp';

/** One nft rule of a qube's chain, in a form the conntrack matcher can evaluate too. */
export interface EffectiveRule {
  /** The QubesDB key it came from ('0003', 'policy'), or 'blocked' for the fail-closed rule. */
  key: string;
  verdict: 'accept' | 'reject';
  /** Protocols matched; undefined = any. */
  protos?: readonly L4[];
  /** Destination ranges; undefined = any. */
  daddr?: readonly Cidr[];
  /** The destination must be in the table's dns-addr set (this VM's own resolvers). */
  dns?: boolean;
  ports?: PortRange;
  icmpType?: number;
}

export type Outcome = 'ok' | 'blocked' | 'partial';

export interface CompiledQube {
  addr: string;
  family: Family;
  chain: string;
  outcome: Outcome;
  /** Why the outcome is not plain ok (rules left out, parse errors, unresolved names). */
  reasons: string[];
  /** Rules that match nothing and were left out without changing the meaning. */
  notes: string[];
  rules: EffectiveRule[];
  /** dsthost → addresses used in the chain, for /dns/<ip>/<host>. */
  hosts: Map<string, string[]>;
}

/** The single rule of a qube that must not get through: reject everything. */
export function blockAllRules(): EffectiveRule[] {
  return [{ key: 'blocked', verdict: 'reject' }];
}

function hostCidrs(family: Family, addrs: readonly string[]): Cidr[] {
  const unique = [...new Set(addrs)].sort();
  return unique.map((addr) => ({ family, addr, prefix: family === 4 ? 32 : 128 }));
}

/** The port range of a specialtarget=dns rule: 53, intersected with any dstports given. */
function dnsPorts(rule: Rule): PortRange | undefined {
  if (rule.ports && (rule.ports.lo > 53 || rule.ports.hi < 53)) return undefined;
  return { lo: 53, hi: 53 };
}

/**
 * Compiles a parsed qube. `resolved` holds, for this qube's family, every dsthost its rules
 * name (a missing entry counts as unresolved).
 */
export function compileQube(parsed: ParsedQube, resolved: ReadonlyMap<string, HostResolution>): CompiledQube {
  const base = { addr: parsed.addr, family: parsed.family, chain: qubeChainName(parsed.addr) };
  if (!parsed.ok) {
    return { ...base, outcome: 'blocked', reasons: [`invalid rules: ${describeErrors(parsed.errors)}`], notes: [], rules: blockAllRules(), hosts: new Map() };
  }
  const rules: EffectiveRule[] = [];
  const reasons: string[] = [];
  const notes: string[] = [];
  const hosts = new Map<string, string[]>();
  for (const rule of parsed.rules) {
    const eff: EffectiveRule = { key: rule.key, verdict: rule.action === 'accept' ? 'accept' : 'reject' };
    if (rule.dst?.kind === 'cidr') eff.daddr = [rule.dst.cidr];
    if (rule.dst?.kind === 'host') {
      const name = rule.dst.name;
      const res = resolved.get(name) ?? { ok: false as const, error: 'not resolved' };
      if (!res.ok) {
        if (rule.action === 'drop') {
          // Leaving a drop rule out would let through what it forbids: block the qube.
          return { ...base, outcome: 'blocked', reasons: [`rule ${rule.key}: dsthost ${forLog(name)} did not resolve (${forLog(res.error)}) in a drop rule`], notes, rules: blockAllRules(), hosts };
        }
        reasons.push(`rule ${rule.key} left out: dsthost ${forLog(name)} did not resolve (${forLog(res.error)})`);
        continue;
      }
      hosts.set(name, [...new Set(res.addrs)].sort());
      if (res.addrs.length === 0) {
        notes.push(`rule ${rule.key} left out: ${forLog(name)} has no IPv${parsed.family} address`);
        continue;
      }
      eff.daddr = hostCidrs(parsed.family, res.addrs);
    }
    if (rule.dns) {
      const ports = dnsPorts(rule);
      if (!ports) {
        notes.push(`rule ${rule.key} left out: specialtarget=dns with dstports ${rule.ports!.lo}-${rule.ports!.hi} matches nothing`);
        continue;
      }
      eff.dns = true;
      eff.ports = ports;
      eff.protos = rule.proto ? [rule.proto] : ['tcp', 'udp'];
    } else if (rule.ports) {
      eff.ports = rule.ports;
      eff.protos = rule.proto ? [rule.proto] : ['tcp', 'udp'];
    } else if (rule.proto) {
      eff.protos = [rule.proto];
    }
    if (rule.icmpType !== undefined) eff.icmpType = rule.icmpType;
    rules.push(eff);
  }
  return { ...base, outcome: reasons.length ? 'partial' : 'ok', reasons, notes, rules, hosts };
}

function cidrText(c: Cidr): string {
  return c.prefix === (c.family === 4 ? 32 : 128) ? c.addr : `${c.addr}/${c.prefix}`;
}

function portText(p: PortRange): string {
  return p.lo === p.hi ? String(p.lo) : `${p.lo}-${p.hi}`;
}

/** The nft expression of one effective rule (without `add rule … chain` and comment). */
export function ruleExpr(family: Family, r: EffectiveRule): string {
  const ipKw = family === 4 ? 'ip' : 'ip6';
  const icmpKw = family === 4 ? 'icmp' : 'icmpv6';
  const parts: string[] = [];
  const l4name = (p: L4) => (p === 'icmp' ? (family === 4 ? 'icmp' : 'ipv6-icmp') : p);
  // A port or icmp type match names its protocol itself; otherwise match the protocol here.
  if (r.protos && r.ports === undefined && r.icmpType === undefined) {
    parts.push(r.protos.length === 1 ? `meta l4proto ${l4name(r.protos[0]!)}` : `meta l4proto { ${r.protos.map(l4name).join(', ')} }`);
  }
  if (r.daddr) parts.push(r.daddr.length === 1 ? `${ipKw} daddr ${cidrText(r.daddr[0]!)}` : `${ipKw} daddr { ${r.daddr.map(cidrText).join(', ')} }`);
  if (r.dns) parts.push(`${ipKw} daddr @${DNS_SET}`);
  if (r.icmpType !== undefined) parts.push(`${icmpKw} type ${r.icmpType}`);
  if (r.ports) {
    const protos = r.protos ?? ['tcp', 'udp'];
    parts.push(protos.length === 1 ? `${protos[0]} dport ${portText(r.ports)}` : `meta l4proto { ${protos.join(', ')} } th dport ${portText(r.ports)}`);
  }
  parts.push(r.verdict === 'accept' ? 'accept' : `reject with ${icmpKw} type admin-prohibited`);
  return parts.join(' ');
}

/** The nft statement list of one effective rule, comment included (for display). */
export function ruleText(family: Family, r: EffectiveRule): string {
  return `${ruleExpr(family, r)} comment "${r.key}"`;
}

/**
 * One qube's update: (re)define its chain and make sure the dispatch map sends its source
 * address there. The element's verdict depends only on the address, so adding it again is a
 * no-op and never needs a delete. Touches nothing else.
 */
export function addQubeUpdate(tx: NftTransaction, q: Pick<CompiledQube, 'addr' | 'family' | 'chain' | 'rules'>): NftTransaction {
  const t = firewallTable(q.family);
  tx.addChain(t, q.chain).flushChain(t, q.chain);
  for (const r of q.rules) tx.addRule(t, q.chain, ruleExpr(q.family, r), { comment: r.key });
  return tx.addElements(t, DISPATCH_MAP, [{ key: q.addr, value: { jump: q.chain } }]);
}

/**
 * Removes a qube whose entries are gone: its dispatch element first (a chain still referenced
 * cannot be deleted), then its chain; its traffic then meets the forward policy drop. Deleting a
 * missing object would fail the whole transaction, so both are added first: this works
 * whether or not the kernel holds them, and needs no prior listing.
 */
export function addQubeRemoval(tx: NftTransaction, addr: string, family: Family): NftTransaction {
  const t = firewallTable(family);
  const chain = qubeChainName(addr);
  return tx.addChain(t, chain).destroyElements(t, DISPATCH_MAP, [{ key: addr, value: { jump: chain } }]).destroyChain(t, chain);
}

/** Replaces the contents of `dns-addr` for one family (this VM's own resolvers). */
export function addDnsSet(tx: NftTransaction, family: Family, servers: readonly string[]): NftTransaction {
  const t = firewallTable(family);
  return tx.flushSet(t, DNS_SET).addElements(t, DNS_SET, [...new Set(servers)]);
}

/** Text forms of the above (render CLI, tests, the bench's baseline). */
export function qubeUpdateScript(q: Pick<CompiledQube, 'addr' | 'family' | 'chain' | 'rules'>): string {
  return addQubeUpdate(new NftTransaction(), q).render();
}

export function qubeRemovalScript(addr: string, family: Family): string {
  return addQubeRemoval(new NftTransaction(), addr, family).render();
}

export function dnsSetScript(family: Family, servers: readonly string[]): string {
  return addDnsSet(new NftTransaction(), family, servers).render();
}

/** The feedback word and reason, as written to /qubes-firewall-applied/<ip>. */
export function outcomeSummary(q: Pick<CompiledQube, 'outcome' | 'reasons' | 'rules'>): string {
  if (q.outcome === 'ok') return `ok ${q.rules.length} rules`;
  return `${q.outcome} ${q.reasons.join('; ')}`;
}

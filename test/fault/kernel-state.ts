// What the fault suite compares: the parts of a network qube's kernel state that depend on
// which vifs are attached and on each client's rules (anti-spoofing sets, the firewall's
// dispatch map and per-qube chains, /32 routes to vifs), read from the kernel (nft -j, ip -j),
// and the same parts computed from dom0's model. diff() lists what is extra (leftovers) and
// what is missing or wrong.
import { isIPv4 } from 'node:net';
import type { Qube } from '@qubes-net/netns';

export interface KernelView {
  downstream: Set<string>;
  allowed: Set<string>;
  /** "ip>chain" of the firewall's dispatch map (IPv4). */
  dispatch: Set<string>;
  /** Per-qube chains (qbs-*) and their rules, normalized (expr + comment as JSON). */
  chains: Map<string, string>;
  /** "dst dev" of routes through a vif. */
  routes: Set<string>;
}

export interface Attached {
  vif: string;
  ip: string;
  /** Normalized body the client's chain must have (from a reference chain with the same rules). */
  body: string | undefined;
}

interface NftObject {
  set?: { family: string; table: string; name: string; elem?: unknown[] };
  map?: { family: string; table: string; name: string; elem?: unknown[] };
  chain?: { family: string; table: string; name: string };
  rule?: { family: string; table: string; chain: string; expr: unknown[]; comment?: string };
}

function elemText(e: unknown): string {
  if (typeof e === 'string') return e;
  if (Array.isArray(e)) return e.map(elemText).join('>');
  if (e && typeof e === 'object') {
    const o = e as Record<string, unknown>;
    if (Array.isArray(o.concat)) return o.concat.map(elemText).join(' . ');
    if (o.jump && typeof o.jump === 'object') return String((o.jump as { target: string }).target);
    if (o.elem && typeof o.elem === 'object') return elemText((o.elem as { val: unknown }).val);
  }
  return JSON.stringify(e);
}

export async function readKernel(q: Qube): Promise<KernelView> {
  const nft = await q.exec('nft', ['-j', 'list', 'ruleset']);
  const items = (JSON.parse(nft.stdout) as { nftables: NftObject[] }).nftables;
  const v: KernelView = { downstream: new Set(), allowed: new Set(), dispatch: new Set(), chains: new Map(), routes: new Set() };
  const rules = new Map<string, string[]>();
  for (const it of items) {
    if (it.set && it.set.family === 'ip' && it.set.table === 'qubes') {
      const dst = it.set.name === 'downstream' ? v.downstream : it.set.name === 'allowed' ? v.allowed : undefined;
      for (const e of it.set.elem ?? []) dst?.add(elemText(e));
    }
    if (it.map && it.map.family === 'ip' && it.map.table === 'qubes-firewall' && it.map.name === 'dispatch') {
      for (const e of it.map.elem ?? []) v.dispatch.add(elemText(e));
    }
    if (it.chain && it.chain.table === 'qubes-firewall' && it.chain.name.startsWith('qbs-')) rules.set(`${it.chain.family} ${it.chain.name}`, []);
    if (it.rule && it.rule.table === 'qubes-firewall' && it.rule.chain.startsWith('qbs-')) {
      rules.get(`${it.rule.family} ${it.rule.chain}`)?.push(JSON.stringify({ expr: it.rule.expr, comment: it.rule.comment ?? null }));
    }
  }
  for (const [k, body] of rules) v.chains.set(k, body.join('\n'));
  const routes = await q.exec('ip', ['-4', '-j', 'route', 'show']);
  for (const r of JSON.parse(routes.stdout || '[]') as Array<{ dst: string; dev?: string }>) {
    if (r.dev?.startsWith('vif')) v.routes.add(`${r.dst} ${r.dev}`);
  }
  return v;
}

/** The firewall's chain name for a client address (dots to dashes, as the kernel shows it). */
export function chainOf(ip: string): string {
  return `qbs-${ip.replace(/[.:]/g, '-')}`;
}

export function desired(attached: readonly Attached[]): KernelView {
  const v: KernelView = { downstream: new Set(), allowed: new Set(), dispatch: new Set(), chains: new Map(), routes: new Set() };
  for (const a of attached) {
    if (!isIPv4(a.ip)) continue;
    v.downstream.add(a.ip);
    v.allowed.add(`${a.vif} . ${a.ip}`);
    v.dispatch.add(`${a.ip}>${chainOf(a.ip)}`);
    v.chains.set(`ip ${chainOf(a.ip)}`, a.body ?? '(no reference body)');
    v.routes.add(`${a.ip} ${a.vif}`);
  }
  return v;
}

export interface Diff {
  /** In the kernel but not wanted: leftovers of gone vifs or of old rules. */
  extra: string[];
  /** Wanted but not (yet) in the kernel, or a chain with other rules than wanted. */
  missing: string[];
}

export function diff(actual: KernelView, want: KernelView): Diff {
  const extra: string[] = [];
  const missing: string[] = [];
  for (const key of ['downstream', 'allowed', 'dispatch', 'routes'] as const) {
    for (const x of actual[key]) if (!want[key].has(x)) extra.push(`${key} ${x}`);
    for (const x of want[key]) if (!actual[key].has(x)) missing.push(`${key} ${x}`);
  }
  for (const [name, body] of actual.chains) {
    if (!want.chains.has(name)) extra.push(`chain ${name}`);
    else if (want.chains.get(name) !== body) missing.push(`chain ${name} has other rules than wanted`);
  }
  for (const name of want.chains.keys()) if (!actual.chains.has(name)) missing.push(`chain ${name}`);
  return { extra, missing };
}

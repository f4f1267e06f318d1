// Full reconciliation (pure): the desired state against what the kernel holds, as read with
// `ip -j` and `nft -j`. Used at start, on demand and by `status` (empty result = in sync).
// It only corrects what differs: nothing that is still wanted is flushed, so traffic of
// configured vifs keeps flowing while a restarted driver reconciles.
import { NftTransaction } from '@qubes-net/common/kernel';
import { allowedElement, addElementChanges, type SetChange, type Family } from './ruleset.js';
import { transitionIpLines, type VifKernelState, type Sysctl } from './vif-state.js';
import type { DriverState, IpLine } from './planner.js';
import { appliedAddresses } from './planner.js';

export interface ObservedKernel {
  /** vif* interfaces in this namespace: name → group and whether up. */
  vifLinks: Map<string, { group: string; up: boolean }>;
  /** Elements of `allowed` as `vif addr`; of `downstream` as addresses; per family. */
  allowed: Record<Family, Set<string>>;
  downstream: Record<Family, Set<string>>;
  /** Per vif*: host routes `addr metric` we could have put there (not proto kernel). */
  routes: Map<string, Set<string>>;
  /** Per vif*: addresses `addr/prefix`. */
  addrs: Map<string, Set<string>>;
  /** Per vif*: permanent neighbours addr → lladdr. */
  neigh: Map<string, Map<string, string>>;
  /** Current value of a sysctl below /proc/sys, undefined when absent. */
  sysctl: (path: string) => string | undefined;
}

export interface Correction {
  /** Element corrections, typed; `nft` is their text. */
  tx: NftTransaction;
  nft: string[];
  ip: IpLine[];
  sysctls: Array<Sysctl & { vif: string }>;
  /** Human-readable differences, one per finding (for status and the reconcile log). */
  differences: string[];
  /** Addresses whose `downstream` element goes (no vif holds them): their flows are purged. */
  purge: string[];
}

function routeKey(addr: string, metric: number): string {
  return `${addr} ${metric}`;
}

function vifDiffers(k: VifKernelState, obs: ObservedKernel, diffs: string[]): boolean {
  const v = k.vif;
  const before = diffs.length;
  const link = obs.vifLinks.get(v);
  if (!link?.up || link.group !== '2') diffs.push(`${v}: link not up in group 2`);
  const routes = obs.routes.get(v) ?? new Set();
  for (const r of k.routes) if (!routes.has(routeKey(r, k.metric))) diffs.push(`${v}: route ${r} metric ${k.metric} missing`);
  const addrs = obs.addrs.get(v) ?? new Set();
  for (const a of k.gatewayAddrs) if (!addrs.has(a)) diffs.push(`${v}: gateway address ${a} missing`);
  const neigh = obs.neigh.get(v) ?? new Map();
  for (const n of k.neighbours) if (neigh.get(n.addr) !== n.mac) diffs.push(`${v}: permanent neighbour ${n.addr} → ${n.mac} missing`);
  for (const s of k.sysctls) if (obs.sysctl(s.path) !== s.value) diffs.push(`${v}: ${s.path} is ${obs.sysctl(s.path) ?? 'absent'}, want ${s.value}`);
  return diffs.length > before;
}

/** Lines removing what a vif* holds beyond `want` (everything, for a vif that is not online). */
function extras(v: string, want: VifKernelState | undefined, obs: ObservedKernel, diffs: string[]): string[] {
  const out: string[] = [];
  for (const r of obs.routes.get(v) ?? []) {
    const [addr, metric] = r.split(' ') as [string, string];
    if (!want || !want.routes.includes(addr) || Number(metric) !== want.metric) {
      diffs.push(`${v}: extra route ${addr} metric ${metric}`);
      out.push(`route del ${addr} dev ${v} metric ${metric}`);
    }
  }
  for (const [addr] of obs.neigh.get(v) ?? []) {
    if (!want || !want.neighbours.some((n) => n.addr === addr)) {
      diffs.push(`${v}: extra permanent neighbour ${addr}`);
      out.push(`neigh del ${addr} dev ${v}`);
    }
  }
  for (const a of obs.addrs.get(v) ?? []) {
    if (!want || !want.gatewayAddrs.includes(a)) {
      diffs.push(`${v}: extra address ${a}`);
      out.push(`address del ${a} dev ${v}`);
    }
  }
  return out;
}

export function reconcile(state: DriverState, obs: ObservedKernel): Correction {
  const c: Correction = { tx: new NftTransaction(), nft: [], ip: [], sysctls: [], differences: [], purge: [] };
  const wantAllowed: Record<Family, Set<string>> = { ip: new Set(), ip6: new Set() };
  const wantDown: Record<Family, Set<string>> = { ip: new Set(), ip6: new Set() };
  const online = new Map<string, VifKernelState>();
  for (const rec of state.online()) {
    if (!rec.applied) continue;
    online.set(rec.spec.vif, rec.applied);
    for (const a of rec.applied.allowed4) wantAllowed.ip.add(`${rec.spec.vif} ${a}`);
    for (const a of rec.applied.allowed6) wantAllowed.ip6.add(`${rec.spec.vif} ${a}`);
    for (const a of appliedAddresses(rec.applied)) wantDown[a.includes(':') ? 'ip6' : 'ip'].add(a);
  }

  const changes: SetChange[] = [];
  for (const f of ['ip', 'ip6'] as const) {
    const allowed: SetChange = { family: f, set: 'allowed', add: [], remove: [] };
    for (const e of wantAllowed[f]) if (!obs.allowed[f].has(e)) {
      c.differences.push(`${f} allowed: element ${e} missing`);
      const [vif, addr] = e.split(' ') as [string, string];
      allowed.add.push(allowedElement(vif, addr));
    }
    for (const e of obs.allowed[f]) if (!wantAllowed[f].has(e)) {
      c.differences.push(`${f} allowed: extra element ${e}`);
      const [vif, addr] = e.split(' ') as [string, string];
      allowed.remove.push(allowedElement(vif, addr));
    }
    const down: SetChange = { family: f, set: 'downstream', add: [], remove: [] };
    for (const a of wantDown[f]) if (!obs.downstream[f].has(a)) {
      c.differences.push(`${f} downstream: element ${a} missing`);
      down.add.push(a);
    }
    for (const a of obs.downstream[f]) if (!wantDown[f].has(a)) {
      c.differences.push(`${f} downstream: extra element ${a}`);
      down.remove.push(a);
      c.purge.push(a);
    }
    changes.push(allowed, down);
  }
  addElementChanges(c.tx, changes);
  if (c.tx.error) throw c.tx.error;
  c.nft = c.tx.render().split('\n').filter((l) => l !== '');

  for (const [v, k] of online) {
    if (!obs.vifLinks.has(v)) {
      c.differences.push(`${v}: online but the interface is gone`);
      continue;
    }
    for (const line of extras(v, k, obs, c.differences)) c.ip.push({ line, vif: v, tolerant: true });
    if (vifDiffers(k, obs, c.differences)) {
      for (const s of k.sysctls) c.sysctls.push({ ...s, vif: v });
      for (const line of transitionIpLines(undefined, k).apply) c.ip.push({ line, vif: v, tolerant: false });
    }
  }
  for (const [v, link] of obs.vifLinks) {
    if (online.has(v)) continue;
    for (const line of extras(v, undefined, obs, c.differences)) c.ip.push({ line, vif: v, tolerant: true });
    if (link.group === '2') {
      c.differences.push(`${v}: not online but in group 2`);
      c.ip.push({ line: `link set dev ${v} group default`, vif: v, tolerant: true });
    }
  }
  return c;
}

// The planner: from the driver's in-memory state and a burst of vif events to one plan,
// i.e. one nft transaction, one ip batch, the sysctls, the conntrack purges, the hooks and
// the new per-vif records. Pure and synchronous; kernel facts (does the vif exist, is IPv6
// on) are looked up beforehand and passed in.
//
// Ownership: an address may briefly belong to two vifs (a qube restarted with a new domid
// before its old vif went offline). The `downstream` set element and the conntrack purge of
// an address follow its owners: added when the first vif takes it, removed when the last
// one lets go, so undoing one vif never removes state another vif now owns.
import { parseVifName } from '@qubes-net/common';
import type { VifSpec, VifEventCheck } from './vif-event.js';
import { specAddresses } from './vif-event.js';
import type { ProviderConfig } from './provider-config.js';
import { clientAddressConflict } from './provider-config.js';
import { vifKernelState, transitionIpLines, removalIpLines, removalSysctls, type VifFacts, type VifKernelState, type Sysctl } from './vif-state.js';
import { NftTransaction } from '@qubes-net/common/kernel';
import { allowedElement, addElementChanges, type SetChange } from './ruleset.js';
import { flowtableDeviceStatements } from './flowtable.js';
import { InputError } from './input-error.js';
import { parseFakeIp, mappedAddress, addFakeIpTransition, type MappedRaw } from './fake-ip.js';

export type VifStatus = 'online' | 'offline' | 'error';

export interface VifRecord {
  spec: VifSpec;
  state: VifStatus;
  detail: string;
  generation: number;
  /** What is configured in the kernel for this vif (online only). */
  applied?: VifKernelState;
}

/** The desired state the driver keeps in memory. */
export class DriverState {
  readonly vifs = new Map<string, VifRecord>();
  /** address → online vifs that hold it. */
  readonly owners = new Map<string, Set<string>>();

  /**
   * A copy for the planner to change. Records are immutable and the owner sets are replaced,
   * never changed in place (copy on write), so the copy only duplicates the two maps'
   * references: planning one event costs the same with 0 or 500 vifs.
   */
  clone(): DriverState {
    const c = new DriverState();
    for (const [k, v] of this.vifs) c.vifs.set(k, v);
    for (const [k, v] of this.owners) c.owners.set(k, v);
    return c;
  }

  setRecord(vif: string, rec: VifRecord | undefined): void {
    const old = this.vifs.get(vif);
    for (const a of old?.applied ? appliedAddresses(old.applied) : []) {
      const s = this.owners.get(a);
      if (!s?.has(vif)) continue;
      const next = new Set(s);
      next.delete(vif);
      if (next.size === 0) this.owners.delete(a);
      else this.owners.set(a, next);
    }
    if (rec) this.vifs.set(vif, rec);
    else this.vifs.delete(vif);
    for (const a of rec?.applied ? appliedAddresses(rec.applied) : []) {
      const next = new Set(this.owners.get(a) ?? []);
      next.add(vif);
      this.owners.set(a, next);
    }
  }

  online(): VifRecord[] {
    return [...this.vifs.values()].filter((r) => r.state === 'online');
  }
}

export function appliedAddresses(k: VifKernelState): string[] {
  return [...k.allowed4, ...k.allowed6];
}

export interface IpLine {
  line: string;
  vif: string;
  /** A removal: its failure (already gone) is expected and ignored. */
  tolerant: boolean;
}

export interface HookCall {
  command: 'online' | 'offline';
  vif: string;
  type: string;
  /** One call per address; none → one call without an address. */
  addrs: string[];
}

export interface EventResult {
  ok: boolean;
  vif?: string;
  state?: VifStatus | 'gone';
  error?: string;
  /** The rejected input, for the error log event. */
  inputError?: InputError;
  generation?: number;
}

export interface Plan {
  generation: number;
  /** Sysctls written before the nft transaction (proxy_arp …). */
  sysctls: Array<Sysctl & { vif: string; tolerant: boolean }>;
  /** The nft part, typed (what the loop applies). */
  tx: NftTransaction;
  /** Its text (tests, logs), plus the flowtable statements the typed layer has no form for. */
  nft: string[];
  /** Addresses whose conntrack entries are purged (they changed hands). */
  purge: string[];
  ip: IpLine[];
  hooks: HookCall[];
  /** vif → new record; undefined = forget the vif (and remove its QubesDB entries). */
  records: Map<string, VifRecord | undefined>;
  results: EventResult[];
  /** The state after the plan is applied. */
  next: DriverState;
}

export interface PlanContext {
  provider: ProviderConfig;
  facts: (vif: string) => VifFacts;
  generation: number;
  /** Flowtable device changes are planned only where the kernel has flowtables. */
  flowtable: boolean;
  /** The provider's `/mapped-ip/<real ip>/…` values (read beforehand); none = no fake IPs. */
  mapped?: (realIp: string) => MappedRaw | undefined;
}

/** A vif that failed for another reason than its input (the kernel refused a change). */
export interface FailedVif {
  ok: false;
  vif?: string;
  error: Error;
}

export type PlanEvent = VifEventCheck | FailedVif;

/** Plans a burst. At most one event per vif: the driver queues a second one for the next burst. */
export function planBatch(state: DriverState, events: readonly PlanEvent[], ctx: PlanContext): Plan {
  const next = state.clone();
  const plan: Plan = { generation: ctx.generation, sysctls: [], tx: new NftTransaction(), nft: [], purge: [], ip: [], hooks: [], records: new Map(), results: [], next };
  const touched = new Set<string>();

  const undo = (rec: VifRecord | undefined, vif: string, exists: boolean) => {
    if (!rec?.applied) return;
    if (exists) {
      for (const line of removalIpLines(rec.applied)) plan.ip.push({ line, vif, tolerant: true });
      for (const s of removalSysctls(rec.applied)) plan.sysctls.push({ ...s, vif, tolerant: true });
    }
    plan.hooks.push({ command: 'offline', vif, type: rec.spec.type, addrs: appliedAddresses(rec.applied) });
  };

  const fail = (vif: string | undefined, spec: VifSpec | undefined, message: string, inputError?: Error) => {
    if (vif && spec) {
      const old = next.vifs.get(vif);
      const facts = ctx.facts(vif);
      undo(old, vif, facts.exists);
      const rec: VifRecord = { spec: { ...spec, ipv4: [], ipv6: [] }, state: 'error', detail: message, generation: ctx.generation };
      next.setRecord(vif, rec);
      plan.records.set(vif, rec);
      touched.add(vif);
    }
    plan.results.push({ ok: false, ...(vif ? { vif, state: 'error' as const } : {}), error: message, ...(inputError instanceof InputError ? { inputError } : {}), generation: ctx.generation });
  };

  for (const ev of events) {
    if (!ev.ok) {
      const ids = ev.vif ? parseVifName(ev.vif) : undefined;
      const spec = ev.vif && ids ? { vif: ev.vif, ...ids, ipv4: [], ipv6: [], type: 'vif' } : undefined;
      fail(ev.vif, spec, ev.error instanceof InputError ? ev.error.message : `kernel refused the configuration: ${ev.error.message}`, ev.error);
      continue;
    }
    const { spec } = ev;
    const vif = spec.vif;
    const facts = ctx.facts(vif);
    const old = next.vifs.get(vif);

    if (ev.op === 'offline') {
      undo(old, vif, facts.exists);
      touched.add(vif);
      if (facts.exists) {
        const rec: VifRecord = { spec: old?.spec ?? spec, state: 'offline', detail: 'unconfigured', generation: ctx.generation };
        next.setRecord(vif, rec);
        plan.records.set(vif, rec);
        plan.results.push({ ok: true, vif, state: 'offline', generation: ctx.generation });
      } else {
        next.setRecord(vif, undefined);
        plan.records.set(vif, undefined);
        plan.results.push({ ok: true, vif, state: 'gone', generation: ctx.generation });
      }
      continue;
    }

    // online
    if (!ctx.provider.gateway) {
      fail(vif, spec, 'cannot configure: this qube has no valid /qubes-netvm-gateway');
      continue;
    }
    const conflict = specAddresses(spec).map((a) => [a, clientAddressConflict(a, ctx.provider)] as const).find(([, c]) => c);
    if (conflict) {
      fail(vif, spec, `client address ${conflict[0]} ${conflict[1]}`);
      continue;
    }
    if (!facts.exists) {
      fail(vif, spec, `interface ${vif} does not exist`);
      continue;
    }
    const real = mappedAddress(spec);
    const fake = parseFakeIp(spec, real ? ctx.mapped?.(real) : undefined, ctx.provider);
    if (fake instanceof InputError) {
      fail(vif, spec, fake.message, fake);
      continue;
    }
    const k = vifKernelState(spec, ctx.provider, facts, fake);
    const prev = old?.applied;
    for (const s of k.sysctls) plan.sysctls.push({ ...s, vif, tolerant: false });
    const { remove, apply } = transitionIpLines(prev, k);
    for (const line of remove) plan.ip.push({ line, vif, tolerant: true });
    for (const line of apply) plan.ip.push({ line, vif, tolerant: false });
    const addrs = specAddresses(spec);
    plan.hooks.push({ command: 'online', vif, type: spec.type, addrs });
    const notes: string[] = [];
    if (k.skipped6.length) notes.push(`IPv6 is off on ${vif}: no route for ${k.skipped6.join(' ')}`);
    if (fake) notes.push(`fake IP ${fake.fake} gateway ${fake.fakeGateway}${spec.ipv6.length ? `; IPv6 dropped: ${spec.ipv6.join(' ')}` : ''}`);
    const detail = notes.length ? `online; ${notes.join('; ')}` : 'online';
    const rec: VifRecord = { spec, state: 'online', detail, generation: ctx.generation, applied: k };
    next.setRecord(vif, rec);
    plan.records.set(vif, rec);
    touched.add(vif);
    plan.results.push({ ok: true, vif, state: 'online', generation: ctx.generation });
  }

  // Set elements: per-vif `allowed` from the applied states, `downstream` from ownership.
  const changes: SetChange[] = [
    { family: 'ip', set: 'allowed', add: [], remove: [] },
    { family: 'ip6', set: 'allowed', add: [], remove: [] },
    { family: 'ip', set: 'downstream', add: [], remove: [] },
    { family: 'ip6', set: 'downstream', add: [], remove: [] },
  ];
  const [allowed4, allowed6, down4, down6] = changes as [SetChange, SetChange, SetChange, SetChange];
  const ftAdd: string[] = [];
  const ftRemove: string[] = [];
  const fakeTransitions: Array<() => void> = [];
  for (const vif of touched) {
    const before = state.vifs.get(vif)?.applied;
    const after = next.vifs.get(vif)?.applied;
    fakeTransitions.push(() => addFakeIpTransition(plan.tx, vif, before?.fakeIp, after?.fakeIp));
    const b4 = new Set(before?.allowed4 ?? []), a4 = new Set(after?.allowed4 ?? []);
    const b6 = new Set(before?.allowed6 ?? []), a6 = new Set(after?.allowed6 ?? []);
    for (const a of b4) if (!a4.has(a)) allowed4.remove.push(allowedElement(vif, a));
    for (const a of a4) if (!b4.has(a)) allowed4.add.push(allowedElement(vif, a));
    for (const a of b6) if (!a6.has(a)) allowed6.remove.push(allowedElement(vif, a));
    for (const a of a6) if (!b6.has(a)) allowed6.add.push(allowedElement(vif, a));
    if (ctx.flowtable) {
      if (!before && after) ftAdd.push(vif);
      if (before && !after && ctx.facts(vif).exists) ftRemove.push(vif);
    }
  }
  const addrsTouched = new Set<string>();
  for (const vif of touched) {
    for (const a of state.vifs.get(vif)?.applied ? appliedAddresses(state.vifs.get(vif)!.applied!) : []) addrsTouched.add(a);
    for (const a of next.vifs.get(vif)?.applied ? appliedAddresses(next.vifs.get(vif)!.applied!) : []) addrsTouched.add(a);
  }
  for (const a of addrsTouched) {
    const had = state.owners.has(a), has = next.owners.has(a);
    if (had === has) continue;
    const target = a.includes(':') ? down6 : down4;
    (has ? target.add : target.remove).push(a);
    plan.purge.push(a);
  }
  addElementChanges(plan.tx, changes);
  for (const f of fakeTransitions) f();
  if (plan.tx.error) throw plan.tx.error;
  plan.nft = [...plan.tx.render().split('\n').filter((l) => l !== ''), ...flowtableDeviceStatements(ftAdd, ftRemove)];
  return plan;
}

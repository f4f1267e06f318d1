// The vifs: hotplug events are queued, a turn takes at most one event per vif and plans them
// against the committed state (model/planner.ts). The state moves on only when the kernel
// accepted the turn's transaction. A refused burst is retried one event at a time, so one bad
// vif cannot fail its neighbours; a vif whose ip lines or sysctls the kernel refused is rolled
// back on the next turn and reported failed.
//
// At start the vif set is rebuilt from what Xen gives (the backend entries in xenstore) and
// the kernel's links (issue 13.2). The /qubes-vif/ QubesDB records are never input: a record
// may only keep a vif unconfigured (fail closed), never give it an address.
import { performance } from 'node:perf_hooks';
import type { Logger } from '@qubes-net/common';
import { forLog } from '@qubes-net/common';
import type { QubesDB } from '@qubes-net/qubesdb';
import { checkVifMtu, validateVifEvent, type RawVifEvent, type VifSpec } from '../model/vif-event.js';
import type { ProviderConfig } from '../model/provider-config.js';
import { DriverState, planBatch, type EventResult, type Plan, type PlanEvent, type VifRecord } from '../model/planner.js';
import { vifKernelState, type VifFacts } from '../model/vif-state.js';
import { parseFakeIp, mappedAddress, mappedKeys, type FakeIp, type MappedRaw } from '../model/fake-ip.js';
import { InputError } from '../model/input-error.js';
import { parseStoredVifs, VIF_PREFIX } from '../model/feedback.js';
import { vifFacts } from '../kernel/procfs.js';
import { purgeConntrack } from '../kernel/conntrack.js';
import { runHooks, listHooks } from '../kernel/hooks.js';
import { readVifBackendEntry, xenstoreDirFromEnv, type XenVif } from '../kernel/xen-vifs.js';
import type { FeedbackManager } from './feedback.js';
import type { Turn } from './turn.js';

interface Pending {
  event: PlanEvent;
  /** Answer to whoever asked (a hotplug request); none for the driver's own events. */
  resolve?: (r: EventResult) => void;
  /** Part of a refused burst: applied alone, and failed if refused again. */
  isolate?: boolean;
}

const vifOf = (e: PlanEvent) => (e.ok ? e.spec.vif : e.vif);

export class VifManager {
  /** Committed: what the kernel holds for every vif. */
  state = new DriverState();
  generation = 1;
  private queue: Pending[] = [];
  /** Hooks and conntrack purges still running beside the loop (their callers may wait; the loop does not). */
  private backgroundJobs = 0;
  /** Called when the last background job finished (the loop's idle signal). */
  onHooksDone: () => void = () => undefined;

  constructor(private readonly deps: {
    qdb: QubesDB; log: Logger; hooksDir: string; feedback: FeedbackManager; facts?: (vif: string) => VifFacts;
    /** Reads a backend entry (tests); default readVifBackendEntry. */
    readBackend?: (xenbusPath: string, key: 'mtu') => Promise<string | undefined>;
  }) {}

  /**
   * The backend `mtu` of each online event that names its xenstore path and carries none (the
   * control socket's requests do not): read now, validated like the event's other backend
   * values; a refused value fails the event (the vif stays blocked, as for a bad address).
   */
  private async readBackendMtus(batch: Pending[]): Promise<void> {
    const read = this.deps.readBackend ?? ((path: string, key: 'mtu') => readVifBackendEntry(xenstoreDirFromEnv(this.xenstoreDir), path, key));
    await Promise.all(batch.map(async (p) => {
      const e = p.event;
      if (!e.ok || e.op !== 'online' || !e.xenbusPath || e.spec.mtu !== undefined) return;
      const raw = await read(e.xenbusPath, 'mtu').catch(() => undefined);
      const mtu = checkVifMtu(raw, e.spec);
      if (typeof mtu === 'string') {
        p.event = { ok: false, op: 'online', vif: e.spec.vif, error: new InputError('xenstore', `${e.xenbusPath}/mtu`, raw, mtu) };
      } else if (mtu.mtu !== undefined) {
        p.event = { ...e, spec: { ...e.spec, mtu: mtu.mtu } };
      }
    }));
  }

  private facts(vif: string): VifFacts {
    return (this.deps.facts ?? vifFacts)(vif);
  }

  get hasWork(): boolean {
    return this.queue.length > 0;
  }

  /** The xenstore stand-in directory the loop was given (see xenstoreDirFromEnv). */
  xenstoreDir: string | undefined;

  /** Hooks running in the background: work for the host's idle clock, not for a turn. */
  get busy(): boolean {
    return this.backgroundJobs > 0;
  }

  /** A rollback or an isolated retry waits at the front: it goes before a full turn. */
  get hasRollback(): boolean {
    return !!this.queue[0]?.isolate;
  }

  /** Validates and queues one event; resolves once its turn is applied. */
  submit(raw: RawVifEvent): Promise<EventResult> {
    const event = validateVifEvent(raw);
    return new Promise((resolve) => this.queue.push({ event, resolve }));
  }

  /** Events the driver makes itself (a gateway change, a vanished vif). */
  enqueue(events: readonly PlanEvent[]): void {
    for (const event of events) this.queue.push({ event });
  }

  /** Answers every queued caller (stopping). */
  drop(reason: string): void {
    for (const p of this.queue.splice(0)) p.resolve?.({ ok: false, ...(vifOf(p.event) ? { vif: vifOf(p.event)! } : {}), error: reason });
  }

  /** At most one event per vif, in arrival order; an isolated event goes alone. */
  private take(): Pending[] {
    if (this.queue[0]?.isolate) return [this.queue.shift()!];
    const batch: Pending[] = [];
    const rest: Pending[] = [];
    const seen = new Set<string>();
    for (const p of this.queue) {
      const vif = vifOf(p.event);
      if (p.isolate || (vif && seen.has(vif))) rest.push(p);
      else {
        if (vif) seen.add(vif);
        batch.push(p);
      }
    }
    this.queue = rest;
    return batch;
  }

  /** The provider's `/mapped-ip/<real ip>/…` values for these vifs (fake IP), by real address. */
  async readMapped(specs: readonly VifSpec[]): Promise<Map<string, MappedRaw>> {
    const out = new Map<string, MappedRaw>();
    await Promise.all(specs.map(async (spec) => {
      const real = mappedAddress(spec);
      if (!real || out.has(real)) return;
      const keys = mappedKeys(real);
      const read = (k: string) => this.deps.qdb.read(k).catch((err) => {
        // Unreadable: no translation, so a client with a fake IP stays blocked (fail closed).
        this.deps.log.error({ vif: spec.vif, key: k, err: String(err) }, 'qubesdb read failed');
        return undefined;
      });
      const [visibleIp, visibleGateway] = await Promise.all([read(keys.visibleIp), read(keys.visibleGateway)]);
      out.set(real, { visibleIp, visibleGateway });
    }));
    return out;
  }

  /**
   * The desired state at start: every vif Xen has connected whose link exists, with the
   * addresses Xen gives. Vifs in the kernel without a connected backend stay unconfigured
   * (blocked) until their hotplug event.
   */
  async rebuild(provider: ProviderConfig, xen: readonly XenVif[], kernelVifs: Iterable<string>, kernelAllowed: ReadonlySet<string> = new Set()): Promise<DriverState> {
    const next = new DriverState();
    const raw = await this.deps.qdb.multiread(VIF_PREFIX).catch(() => new Map<string, string>());
    const stored = parseStoredVifs(raw);
    this.generation = Math.max(this.generation, stored.maxGeneration + 1);
    const gen = this.generation;
    const known = new Set<string>();
    // Records in Xen's order; the online ones get their kernel state below, after one batch
    // of fake-IP reads for all of them (not one QubesDB round trip per vif, in sequence).
    const ordered: Array<{ vif: string; rec: VifRecord } | { vif: string; spec: VifSpec; facts: VifFacts }> = [];
    for (const x of xen) {
      known.add(x.vif);
      const facts = this.facts(x.vif);
      if (!facts.exists) continue;
      const check = validateVifEvent({ op: 'online', vif: x.vif, ips: x.ip, mac: x.mac, type: x.type, ...(x.mtu !== undefined ? { mtu: x.mtu } : {}) });
      // Not marked connected yet: an online may be in flight right now (a one-shot fallback
      // configured it and has not written hotplug-status). The kernel already holding Xen's
      // addresses for it says so; taking it as online keeps the start from undoing it.
      const inFlight = check.ok && check.spec.ipv4.length > 0 && check.spec.ipv4.every((a) => kernelAllowed.has(`${x.vif} ${a}`));
      if (x.hotplugStatus !== 'connected' && !inFlight) {
        this.deps.log.info({ vif: x.vif, hotplugStatus: x.hotplugStatus }, 'vif not connected yet: waiting for its hotplug event');
        continue;
      }
      if (!check.ok) {
        this.deps.log.error({ vif: x.vif, ...check.error.logFields(), source: 'xenstore', key: check.error.key.replace('$XENBUS_PATH', x.path) }, 'invalid vif backend entry: vif left blocked');
        continue;
      }
      const rec = stored.vifs.get(x.vif);
      if (rec && rec.state !== 'online') {
        // Feedback may only narrow: an unconfigured vif stays so until its next event.
        ordered.push({ vif: x.vif, rec: { spec: check.spec, state: rec.state, detail: rec.detail, generation: gen } });
        continue;
      }
      if (!provider.gateway) {
        ordered.push({ vif: x.vif, rec: { spec: check.spec, state: 'error', detail: 'no valid /qubes-netvm-gateway at start', generation: gen } });
        continue;
      }
      ordered.push({ vif: x.vif, spec: check.spec, facts });
    }
    const mapped = await this.readMapped(ordered.flatMap((o) => ('spec' in o ? [o.spec] : [])));
    for (const o of ordered) {
      if ('rec' in o) next.setRecord(o.vif, o.rec);
      else next.setRecord(o.vif, { spec: o.spec, state: 'online', detail: 'online', generation: gen, applied: this.kernelStateFor(o.spec, o.facts, provider, mapped) });
    }
    for (const vif of kernelVifs) if (!known.has(vif)) this.deps.log.warn({ vif }, 'vif without a Xen backend entry: left blocked');
    // Every record that is not ours now goes, valid or not (only names that are vif names).
    const names = new Set([...raw.keys()].map((k) => k.slice(VIF_PREFIX.length).split('/')[0]!));
    for (const vif of names) if (!next.vifs.has(vif) && /^vif\d{1,5}\.\d{1,5}$/.test(vif)) this.deps.feedback.record(vif, undefined);
    for (const e of stored.errors) this.deps.log.warn({ ...e.logFields() }, 'invalid feedback entry ignored');
    return next;
  }

  /** A vif's kernel state with its fake-IP translation read from QubesDB. */
  private kernelStateFor(spec: VifSpec, facts: VifFacts, provider: ProviderConfig, mapped: ReadonlyMap<string, MappedRaw>): ReturnType<typeof vifKernelState> {
    const real = mappedAddress(spec);
    let fake: FakeIp | undefined;
    if (real) {
      const r = parseFakeIp(spec, mapped.get(real), provider);
      if (r instanceof InputError) this.deps.log.error({ vif: spec.vif, ...r.logFields() }, 'invalid fake-IP mapping: vif kept without translation');
      else fake = r;
    }
    return vifKernelState(spec, provider, facts, fake);
  }

  /**
   * A full turn: commit the rebuilt state with the turn, then record every vif. `purge`: the
   * addresses no vif holds any more whose elements the turn removes (a vif that went while
   * nothing ran): their flows go like those of a vif that goes offline.
   */
  planFull(turn: Turn, next: DriverState | undefined, purge: readonly string[] = []): void {
    if (purge.length) {
      turn.after(() => {
        this.background(purgeConntrack(purge).then((r) => {
          for (const e of r.errors) this.deps.log.error({ err: e }, 'conntrack purge failed');
        }));
      });
    }
    if (!next) return;
    turn.onCommit(() => (this.state = next));
    turn.after(() => {
      for (const rec of next.vifs.values()) this.deps.feedback.record(rec.spec.vif, rec);
    });
  }

  /** Plans queued events into the turn. `gatewayChanged`: every online vif is configured again. */
  async plan(turn: Turn, provider: ProviderConfig, opts: { gatewayChanged: boolean; flowtables: boolean }): Promise<void> {
    const batch = this.take();
    if (opts.gatewayChanged) {
      const queued = new Set(batch.map((p) => vifOf(p.event)));
      for (const r of this.state.online()) if (!queued.has(r.spec.vif)) batch.push({ event: { ok: true, op: 'online', spec: r.spec } });
    }
    if (batch.length === 0) return;
    const t0 = performance.now();
    await this.readBackendMtus(batch);
    const events = batch.map((p) => p.event);
    const mapped = await this.readMapped(events.flatMap((e) => (e.ok && e.op === 'online' ? [e.spec] : [])));
    const generation = this.generation;
    const plan = planBatch(this.state, events, { provider, facts: (v) => this.facts(v), generation, flowtable: opts.flowtables, mapped: (ip) => mapped.get(ip) });
    for (const s of plan.sysctls) turn.sysctls.push(s);
    turn.tx.append(plan.tx);
    turn.ip.push(...plan.ip);
    turn.onCommit(() => {
      this.state = plan.next;
      this.generation = generation + 1;
    });
    turn.onReject((err) => {
      if (batch.length > 1 || !batch[0]!.isolate) {
        this.deps.log.warn({ events: batch.length, err: forLog(err.message, 300) }, 'burst refused by nft: each event again on its own');
        this.queue.unshift(...batch.map((p) => ({ ...p, isolate: true })));
      } else {
        const p = batch[0]!;
        const vif = vifOf(p.event);
        this.queue.unshift({ event: { ok: false, ...(vif ? { vif } : {}), error: err }, ...(p.resolve ? { resolve: p.resolve } : {}), isolate: true });
      }
    });
    turn.after(async (o) => {
      // Vifs the kernel refused part of: rolled back on the next turn, their callers answered then.
      const failed = new Map(o.failedVifs);
      for (const f of o.ipFailures) if (!f.tolerant && !failed.has(f.vif)) failed.set(f.vif, `"ip ${f.line}": ${f.message}`);
      for (const f of o.ipFailures) if (f.tolerant) this.deps.log.debug({ vif: f.vif, line: f.line, err: f.message }, 'removal already done');
      // Flows of addresses that changed hands are purged beside the loop (two conntrack
      // processes per address, when the namespace has any entries: not on the reply's path;
      // the old code overlapped it with the transaction the same way). The user's hooks run
      // before a vif's caller hears back, as upstream's hotplug script runs them, but beside
      // the loop too: a hook that hangs (until its timeout) holds up its own vif's reply only.
      if (plan.purge.length) {
        this.background(purgeConntrack(plan.purge).then((purge) => {
          for (const e of purge.errors) this.deps.log.error({ err: e }, 'conntrack purge failed');
        }));
      }
      const hooks = plan.hooks.filter((h) => !(h.command === 'online' && failed.has(h.vif)));
      const listed = hooks.length ? await listHooks(this.deps.hooksDir) : [];
      const rollback: Pending[] = [];
      batch.forEach((p, i) => {
        const r = plan.results[i]!;
        if (r.vif && r.ok && failed.has(r.vif)) {
          rollback.push({ event: { ok: false, vif: r.vif, error: new Error(failed.get(r.vif)!) }, ...(p.resolve ? { resolve: p.resolve } : {}), isolate: true });
          return;
        }
        const mine = listed.length && r.vif ? hooks.filter((h) => h.vif === r.vif) : [];
        if (mine.length === 0) {
          p.resolve?.(r);
          return;
        }
        this.background(runHooks(this.deps.hooksDir, mine, undefined, listed)
          .then((failures) => {
            for (const h of failures) this.deps.log.warn({ vif: h.vif, hook: h.hook, err: h.message }, 'network hook failed');
          })
          .finally(() => p.resolve?.(r)));
      });
      this.queue.unshift(...rollback);
      this.logResults(plan, events, failed);
      for (const [vif, rec] of plan.records) if (!failed.has(vif)) this.deps.feedback.record(vif, rec);
      this.deps.log.debug({ events: events.length, nft: plan.tx.size, ip: plan.ip.length, purged: plan.purge.length, ms: Math.round((performance.now() - t0) * 10) / 10 }, 'burst applied');
    });
  }

  /** Runs `job` beside the loop, counted as work for the idle signal. */
  private background(job: Promise<unknown>): void {
    this.backgroundJobs++;
    void job
      .catch((err) => this.deps.log.error({ err: String(err) }, 'background job failed'))
      .finally(() => {
        if (--this.backgroundJobs === 0) this.onHooksDone();
      });
  }

  private logResults(plan: Plan, events: readonly PlanEvent[], failed: ReadonlyMap<string, string>): void {
    plan.results.forEach((r, i) => {
      const ev = events[i];
      if (r.vif && failed.has(r.vif) && r.ok) return;
      if (r.ok) {
        const rec = r.vif ? plan.records.get(r.vif) : undefined;
        const ip = rec ? [...rec.spec.ipv4, ...rec.spec.ipv6] : [];
        this.deps.log.info({ vif: r.vif, ip, domid: rec?.spec.domid, generation: r.generation, ...(rec?.detail && rec.detail !== 'online' ? { detail: rec.detail } : {}) }, r.state === 'online' ? 'vif online' : r.state === 'gone' ? 'vif gone' : 'vif offline');
      } else if (r.inputError) {
        this.deps.log.error({ vif: r.vif, op: ev?.ok === false && 'op' in ev ? ev.op : undefined, ...r.inputError.logFields() }, 'vif rejected');
      } else {
        this.deps.log.error({ vif: r.vif, err: forLog(r.error, 300) }, 'vif error');
      }
    });
  }

  /** Every record, for feedback after QubesDB lost it. */
  records(): VifRecord[] {
    return [...this.state.vifs.values()];
  }
}

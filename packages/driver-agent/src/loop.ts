// The driver: a thin loop over per-feature managers (managers/). Each turn gathers what the
// managers want into ONE nft transaction and ONE ip batch; each manager commits its own state
// only once the kernel accepted the transaction. Any failed write sets `needFullSync`, and the
// next turn rebuilds from the kernel (kube-proxy's needFullSync); a periodic full turn catches
// what changed behind our back. There is one start path: a full turn, with the vif set
// rebuilt from Xen's backend entries and the kernel (never from our QubesDB feedback).
//
// Host processes (the network agent) use start(), handle(request), stop() and the idle
// signal (hasWork(), onIdle); the CLI's one-shot commands use the same start path.
import { performance } from 'node:perf_hooks';
import type { Logger } from '@qubes-net/common';
import type { QubesDB } from '@qubes-net/qubesdb';
import type { RawVifEvent } from './model/vif-event.js';
import type { EventResult } from './model/planner.js';
import { reconcile } from './model/reconcile.js';
import { baseDifferences } from './model/base-check.js';
import { allUpstream } from './model/dns.js';
import { realHost, type HostAccess } from './kernel/host.js';
import { toolWriter, sessionWriter, type KernelWriter } from './kernel/writer.js';
import type { IpFailure } from './kernel/ip-writer.js';
import { IdleCollector } from './idle-gc.js';
import { Turn } from './managers/turn.js';
import { ProviderManager, WATCHED_KEYS } from './managers/provider.js';
import { DnsManager, type DnsState } from './managers/dns.js';
import { UplinkManager } from './managers/uplink.js';
import { VifManager } from './managers/vifs.js';
import { FeedbackManager } from './managers/feedback.js';
import { planFullSync } from './managers/full-sync.js';

export type { DnsState } from './managers/dns.js';

export interface DriverOptions {
  qdb: QubesDB;
  log: Logger;
  resolvConf: string;
  resolved: 'auto' | 'off';
  resolvedRunDir?: string;
  hooksDir: string;
  /** auto: follow /qubes-service/qubes-firewall. */
  firewall: 'auto' | 'on' | 'off';
  firewallPidFile: string;
  /** Extra time to gather a burst before applying it; 0 = the current event-loop turn only. */
  batchWindowMs?: number;
  /** The lab's xenstore stand-in directory; default: QN_XENSTORE_DIR, the lab's path, else the xenstore tools. */
  xenstoreDir?: string;
  /** Full turn every N ms while following (0 = never). Default 300000. */
  reconcileIntervalMs?: number;
  /** The kernel writer (tests pass a fake). */
  writer?: KernelWriter;
  /** The host outside nft/ip batches (tests pass a fake). */
  host?: HostAccess;
  /** Called whenever the loop runs out of work (the host's idle-exit clock). */
  onIdle?: () => void;
  /**
   * Called after a committed change of the DNS mapping, instead of SIGHUP to the firewall's
   * pid file (a host that runs the firewall engine in the same process).
   */
  onDnsChanged?: (dns: DnsState) => void;
}

export interface StatusReport {
  ok: true;
  generation: number;
  vifs: Array<{ vif: string; domid: number; ips: string[]; mac: string; state: string; generation: number; detail: string }>;
  dns: { mode: string; pairs: Array<{ virtual: string; target?: string }>; upstream: string[]; source: string; rejected: Array<{ server: string; reason: string }>; ipv6?: { mode: string; pairs: Array<{ virtual: string; target?: string }>; upstream: string[] } } | undefined;
  forwarding: { ipv4: boolean; ipv6: boolean };
  flowtables: boolean;
  firewall: boolean;
  antispoofDrops: { ip: number; ip6: number };
  kernel: { inSync: boolean; differences: string[] };
  /** The process' own memory (bytes), for the RSS budget. */
  memory: { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number };
}

/** Requests of the control protocol (docs/runtime-shape.md); `dns-changed` is the old name of a DNS sync. */
export type DriverRequest =
  | ({ op: 'online' | 'offline' } & Omit<RawVifEvent, 'op'>)
  | { op: 'sync'; reason?: unknown }
  | { op: 'dns-changed' }
  | { op: 'status' }
  | { op: 'reconcile' };

/** The reply shape shared by every agent; `error` repeats the message for the C hotplug client. */
export interface Reply {
  ok: boolean;
  code: string;
  message: string;
  details: Record<string, unknown>;
  error?: string;
}

const MAX_BACKOFF_MS = 30_000;

export class DriverLoop {
  readonly provider: ProviderManager;
  readonly dns: DnsManager;
  readonly uplink: UplinkManager;
  readonly vifs: VifManager;
  readonly feedback: FeedbackManager;
  ipv6Kernel = true;
  flowtables = false;

  private readonly log: Logger;
  private writer: KernelWriter;
  private readonly host: HostAccess;
  private readonly idleGc = new IdleCollector();
  private serial: Promise<unknown> = Promise.resolve();
  private needFullSync = true;
  private fullSyncFailures = 0;
  private fullSyncNotBefore = 0;
  private started = false;
  private ready = false;
  private stopped = false;
  private scheduled = false;
  private fullReason = 'start';
  private lastDifferences: string[] = [];
  private timers = new Set<NodeJS.Timeout>();
  /** Feedback writes, in order among themselves, off the loop's critical path. */
  private flushing: Promise<unknown> = Promise.resolve();
  private flushesInFlight = 0;
  private watchClose: (() => Promise<void>) | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: DriverOptions) {
    this.log = opts.log;
    this.writer = opts.writer ?? toolWriter;
    this.host = opts.host ?? realHost;
    this.feedback = new FeedbackManager({ qdb: opts.qdb, log: opts.log });
    this.provider = new ProviderManager({ qdb: opts.qdb, log: opts.log, firewall: opts.firewall, ipv6Kernel: () => this.ipv6Kernel, host: this.host });
    this.dns = new DnsManager({ log: opts.log, resolvConf: opts.resolvConf, resolved: opts.resolved, ...(opts.resolvedRunDir ? { resolvedRunDir: opts.resolvedRunDir } : {}), firewallPidFile: opts.firewallPidFile, host: this.host, ...(opts.onDnsChanged ? { tellFirewall: opts.onDnsChanged } : {}) });
    this.dns.onChanged = (s) => this.feedback.dnsUpstream(allUpstream(s.mapping));
    this.uplink = new UplinkManager({ log: opts.log, onChange: () => this.kick(), onVifGone: (vif) => this.vifGone(vif) });
    this.vifs = new VifManager({ qdb: opts.qdb, log: opts.log, hooksDir: opts.hooksDir, feedback: this.feedback, facts: (v) => this.host.facts(v) });
    this.vifs.onHooksDone = () => this.kick();
    this.vifs.xenstoreDir = opts.xenstoreDir;
  }

  // ---------------------------------------------------------------- public surface

  /**
   * The one start path: a full turn (base ruleset, provider settings, DNS, the vif set from
   * Xen and the kernel, corrections), then forwarding. `apply: false` plans the same state
   * without touching the kernel (status without a daemon); `follow` watches QubesDB, the DNS
   * source and the uplink, and reconciles periodically (long-running hosts).
   */
  async start(o: { apply?: boolean; follow?: boolean; deferLinkMonitor?: boolean } = {}): Promise<void> {
    const apply = o.apply !== false;
    this.ipv6Kernel = this.host.ipv6();
    // A long-running host keeps one ip process for the turns' ip lines.
    if (o.follow && !this.opts.writer) this.writer = sessionWriter(this.log);
    if (o.follow) await this.follow();
    if (!apply) {
      if (o.follow) this.uplink.follow();
      await this.exclusive(async () => {
        const turn = new Turn(true);
        await this.planFull(turn);
        turn.commit();
        this.provider.forwarding = { ipv4: this.host.readSysctl('net/ipv4/ip_forward') === '1', ipv6: this.host.readSysctl('net/ipv6/conf/all/forwarding') === '1' };
      });
    } else {
      // The helper processes are spawned where the main thread would wait anyway (each spawn
      // holds it): the link monitor once the start turn's reads are running (started before
      // them it was no guarantee either: its subscription raced them the same way), the ip
      // session while the start's transaction runs (apply()). A host may defer the monitor
      // further (followLinks()).
      this.helpersPending = !!o.follow;
      this.warmPending = !!o.follow;
      this.linkMonitorDeferred = !!(o.follow && o.deferLinkMonitor);
      try {
        await this.exclusive(() => this.turn());
      } finally {
        this.startHelpers();
      }
      if (this.needFullSync) throw new Error('the start transaction was refused (see the log)');
      // Ready means our feedback is in QubesDB too.
      await this.flushing;
    }
    this.ready = true;
    this.kick();
  }

  private helpersPending = false;
  private warmPending = false;
  private linkMonitorDeferred = false;

  private startHelpers(): void {
    if (!this.helpersPending || this.stopped) return;
    this.helpersPending = false;
    if (!this.linkMonitorDeferred) this.uplink.follow();
  }

  /**
   * Starts the link monitor that `start({ deferLinkMonitor: true })` left out (a host that
   * answers the requests waiting for its start first: one spawn fewer on their path). What
   * changed since the start's reads is caught up: DNS is re-learned (an own address of the
   * uplink) and a vif gone from the kernel is taken offline.
   */
  followLinks(): void {
    if (!this.linkMonitorDeferred || this.stopped) return;
    this.linkMonitorDeferred = false;
    this.uplink.follow();
    this.uplink.dirty = true;
    for (const rec of this.vifs.records()) if (!this.host.facts(rec.spec.vif).exists) this.vifGone(rec.spec.vif);
    this.kick();
  }

  /** Answers one control request. */
  async handle(req: DriverRequest): Promise<Reply> {
    switch (req.op) {
      case 'online':
      case 'offline': {
        const r = await this.submit(req);
        const details = { ...(r.vif ? { vif: r.vif } : {}), ...(r.state ? { state: r.state } : {}), ...(r.generation !== undefined ? { generation: r.generation } : {}) };
        if (r.ok) return { ok: true, code: 'ok', message: `${r.vif} ${r.state}`, details };
        const message = r.error ?? 'failed';
        return { ok: false, code: r.inputError ? 'invalid-input' : 'kernel-refused', message, details, error: message };
      }
      case 'sync':
      case 'dns-changed': {
        const reason = req.op === 'sync' && typeof req.reason === 'string' ? req.reason.slice(0, 100) : req.op;
        const before = this.dns.state?.mapping;
        await this.sync(reason);
        const d = this.dns.state;
        const changed = !!d && before !== d.mapping && JSON.stringify(before) !== JSON.stringify(d.mapping);
        return { ok: true, code: 'ok', message: `dns ${changed ? 'changed' : 'unchanged'}`, details: { changed, mode: d?.mapping.mode, ...(d?.mapping.ipv6 ? { mode6: d.mapping.ipv6.mode } : {}), upstream: d ? allUpstream(d.mapping) : [] } };
      }
      case 'status':
        return { ok: true, code: 'ok', message: 'status', details: { ...(await this.status()) } };
      case 'reconcile': {
        const { differences } = await this.reconcileNow();
        return { ok: true, code: 'ok', message: `${differences.length} correction(s)`, details: { differences } };
      }
    }
  }

  /** Queues one vif event; resolves once its turn is applied. */
  submit(raw: RawVifEvent): Promise<EventResult> {
    const p = this.vifs.submit(raw);
    this.kick();
    return p;
  }

  /** Re-reads the provider's keys and DNS now (a `sync` request, SIGHUP, the C watcher). */
  async sync(reason: string): Promise<void> {
    this.provider.dirty = true;
    this.dns.dirty = true;
    this.log.debug({ reason }, 'sync requested');
    await this.exclusive(() => this.turn());
  }

  /** A full turn now; the differences it corrected. */
  reconcileNow(): Promise<{ differences: string[] }> {
    return this.exclusive(async () => {
      this.needFullSync = true;
      this.fullSyncNotBefore = 0;
      this.fullReason = 'reconcile request';
      await this.turn();
      return { differences: this.lastDifferences };
    });
  }

  /** Whether anything is queued, scheduled or running. */
  hasWork(): boolean {
    return this.scheduled || this.flushesInFlight > 0 || this.vifs.busy || this.turnWork();
  }

  /** Work for a turn (feedback being written is work, but not a turn's). */
  private turnWork(): boolean {
    return this.vifs.hasWork || this.provider.dirty || this.dns.dirty || this.uplink.dirty || (this.needFullSync && Date.now() >= this.fullSyncNotBefore);
  }

  get generation(): number {
    return this.vifs.generation;
  }

  status(): Promise<StatusReport> {
    return this.exclusive(async () => {
      const obs = await this.host.observe({ ipv6: this.ipv6Kernel });
      const fix = reconcile(this.vifs.state, obs.kernel);
      const differences = [...baseDifferences(obs.tables, this.ipv6Kernel, this.dns.state?.mapping), ...fix.differences];
      if (this.host.readSysctl('net/ipv4/ip_forward') !== '1' && this.provider.forwarding.ipv4) differences.push('ipv4 forwarding is off');
      const d = this.dns.state;
      return {
        ok: true,
        generation: this.vifs.generation - 1,
        vifs: [...this.vifs.state.vifs.values()].sort((a, b) => a.spec.domid - b.spec.domid || a.spec.devid - b.spec.devid).map((r) => ({
          vif: r.spec.vif, domid: r.spec.domid, ips: [...r.spec.ipv4, ...r.spec.ipv6], mac: r.spec.mac ?? '', state: r.state, generation: r.generation, detail: r.detail,
        })),
        dns: d ? { mode: d.mapping.mode, pairs: d.mapping.pairs, upstream: d.mapping.upstream, source: d.source, rejected: d.rejected, ...(d.mapping.ipv6 ? { ipv6: { mode: d.mapping.ipv6.mode, pairs: d.mapping.ipv6.pairs, upstream: d.mapping.ipv6.upstream } } : {}) } : undefined,
        forwarding: { ...this.provider.forwarding },
        flowtables: this.flowtables,
        // From the kernel, not from the service flag (13.5).
        firewall: obs.tables.firewallSkeleton,
        antispoofDrops: obs.tables.antispoofDrops,
        kernel: { inSync: differences.length === 0, differences },
        memory: (({ rss, heapUsed, heapTotal, external, arrayBuffers }) => ({ rss, heapUsed, heapTotal, external, arrayBuffers }))(process.memoryUsage()),
      };
    });
  }

  /** Stops watching; the kernel keeps what was configured (fail closed, restart without a gap). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.idleGc.stop();
    for (const t of this.timers) clearTimeout(t);
    clearInterval(this.reconcileTimer);
    this.dns.close();
    this.uplink.stop();
    await this.watchClose?.().catch(() => undefined);
    await this.serial.catch(() => undefined);
    await this.flushing.catch(() => undefined);
    this.writer.close?.();
    this.vifs.drop('the driver is stopping');
  }

  // ---------------------------------------------------------------- watching

  private async follow(): Promise<void> {
    await this.dns.source.watch(() => {
      this.dns.dirty = true;
      this.kick();
    });
    const w = this.opts.qdb.watch(WATCHED_KEYS);
    this.watchClose = () => w.close();
    void (async () => {
      try {
        for await (const path of w) {
          if (this.stopped) break;
          this.log.debug({ key: path }, 'qubesdb key changed');
          this.provider.dirty = true;
          this.later(10, () => this.kick());
        }
      } catch (err) {
        if (!this.stopped) this.log.error({ err: String(err) }, 'qubesdb watch ended');
      }
    })();
    const every = this.opts.reconcileIntervalMs ?? 300_000;
    if (every > 0) {
      this.reconcileTimer = setInterval(() => {
        this.needFullSync = true;
        this.fullReason = 'periodic';
        this.kick();
      }, every);
      this.reconcileTimer.unref();
    }
  }

  private vifGone(vif: string): void {
    if (!this.vifs.state.vifs.has(vif)) return;
    this.log.info({ vif }, 'vif disappeared');
    void this.submit({ op: 'offline', vif });
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  // ---------------------------------------------------------------- the loop

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.serial.then(fn, fn);
    this.serial = next.catch(() => undefined);
    return next;
  }

  private kick(): void {
    if (this.scheduled || !this.ready || this.stopped) return;
    if (!this.turnWork()) {
      if (this.flushesInFlight > 0 || this.vifs.busy) return; // the last flush or hook kicks again
      this.idleGc.touch();
      this.opts.onIdle?.();
      return;
    }
    this.scheduled = true;
    const go = () => {
      void this.exclusive(() => this.turn())
        .catch((err) => this.log.error({ err: String(err) }, 'loop turn failed'))
        .finally(() => {
          this.scheduled = false;
          this.kick();
        });
    };
    if (this.opts.batchWindowMs) this.later(this.opts.batchWindowMs, go);
    else setImmediate(go);
  }

  /** One turn: full when a rebuild is due (and no rollback waits), else the managers' deltas. */
  private async turn(): Promise<void> {
    const full = this.needFullSync && Date.now() >= this.fullSyncNotBefore && !this.vifs.hasRollback;
    const turn = new Turn(full);
    try {
      if (full) await this.planFull(turn);
      else await this.planDelta(turn);
    } catch (err) {
      // Reading state failed (QubesDB, xenstore, a tool): nothing was written; rebuild later.
      turn.reject(err as Error);
      this.fullSyncFailed(`planning failed: ${String(err)}`, full);
      return;
    }
    await this.apply(turn);
  }

  private async planFull(turn: Turn): Promise<void> {
    const starting = !this.started;
    const reason = this.fullReason;
    this.needFullSync = false;
    const differences = await planFullSync(turn, { provider: this.provider, dns: this.dns, vifs: this.vifs, host: this.host, log: this.log, ipv6: this.ipv6Kernel, xenstoreDir: this.opts.xenstoreDir, starting, reason, ...(starting ? { onReadsStarted: () => this.startHelpers() } : {}) });
    turn.onCommit(() => {
      this.started = true;
      this.fullSyncFailures = 0;
      this.fullReason = 'failed write';
      this.lastDifferences = differences;
    });
  }

  private async planDelta(turn: Turn): Promise<void> {
    if (this.needFullSync) {
      // A rebuild is pending (backing off): only vif events, against the committed settings.
      await this.vifs.plan(turn, this.provider.config, { gatewayChanged: false, flowtables: this.flowtables });
      return;
    }
    if (this.provider.dirty && (await this.feedback.lost())) {
      // A restarted QubesDB daemon starts empty: put our feedback back.
      this.log.warn({}, 'feedback missing from QubesDB (restarted?): writing it again');
      for (const rec of this.vifs.records()) this.feedback.record(rec.spec.vif, rec);
      if (this.dns.state) this.feedback.dnsUpstream(allUpstream(this.dns.state.mapping));
    }
    const view = await this.provider.plan(turn, undefined);
    let config = view.config;
    if (!config.gateway && this.vifs.hasWork) {
      const c = await this.provider.gatewayIfMissing();
      if (c) {
        config = c;
        turn.onCommit(() => (this.provider.config = c));
      }
    }
    if (view.gatewayChanged) this.log.info({ gateway: config.gateway, gateway6: config.gateway6 }, 'gateway changed: reconfiguring every vif');
    const uplinkChanged = this.uplink.plan(turn);
    await this.dns.plan(turn, config, { inputsChanged: view.dnsInputsChanged || uplinkChanged, reason: uplinkChanged ? 'uplink changed' : view.dnsInputsChanged ? 'provider settings changed' : 'dns source changed' });
    await this.vifs.plan(turn, config, { gatewayChanged: view.gatewayChanged, flowtables: this.flowtables });
  }

  private async apply(turn: Turn): Promise<void> {
    const t0 = performance.now();
    const failedVifs = new Map<string, string>();
    for (const s of turn.sysctls) {
      try {
        this.host.writeSysctl(s);
      } catch (err) {
        this.log.debug({ vif: s.vif, err: (err as Error).message }, 'sysctl write failed');
        if (!s.tolerant && s.vif) failedVifs.set(s.vif, `sysctl ${s.path}`);
      }
    }
    // The ip batch runs beside the transaction: its lines only add routes, neighbours and
    // addresses to vifs, which carry no traffic without their anti-spoofing elements; if the
    // transaction is refused, the full turn that follows removes what the batch left.
    const ipRun = this.writer.ip(turn.ip).catch((err: unknown): IpFailure[] => turn.ip.map((l) => ({ ...l, message: String(err) })));
    const nftRun = this.writer.nft(turn.tx);
    // The start's ip session is spawned while the transaction runs (in libnftables' worker
    // thread or an nft process), not while the reads wait on the main thread.
    if (this.warmPending) {
      this.warmPending = false;
      this.writer.warm?.();
    }
    try {
      await nftRun;
    } catch (err) {
      await ipRun;
      this.log.error({ full: turn.full, statements: turn.tx.size, err: String(err).slice(0, 500) }, 'transaction refused by nft: nothing of this turn is applied');
      turn.reject(err as Error);
      this.fullSyncFailed('nft refused a transaction', turn.full);
      return;
    }
    turn.commit();
    const t1 = performance.now();
    const ipFailures = await ipRun;
    if (ipFailures.some((f) => !f.tolerant)) {
      for (const f of ipFailures) if (!f.tolerant) this.log.error({ vif: f.vif, line: f.line, err: f.message }, 'ip change refused');
      this.fullSyncFailed('ip refused a change', turn.full);
    }
    const t2 = performance.now();
    await turn.finish({ failedVifs, ipFailures });
    const ms = (a: number, b: number) => Math.round((b - a) * 10) / 10;
    this.log.debug({ full: turn.full, nft: turn.tx.size, ip: turn.ip.length, nftMs: ms(t0, t1), ipMs: ms(t1, t2), afterMs: ms(t2, performance.now()) }, 'turn applied');
    this.flushFeedback();
  }

  /**
   * Writes pending feedback after the turn, without holding up the next turn (a burst's
   * records are many QubesDB writes). Flushes run one after the other and each writes the
   * latest record per vif, so a slow one never leaves an older value last. Failures retry.
   */
  private flushFeedback(): void {
    if (!this.feedback.pending) return;
    this.flushesInFlight++;
    this.flushing = this.flushing.then(async () => {
      try {
        if (!(await this.feedback.flush()) && !this.stopped) this.later(1000, () => this.flushFeedback());
      } finally {
        this.flushesInFlight--;
        if (this.flushesInFlight === 0) this.kick();
      }
    });
  }

  /**
   * Any failed write: rebuild on a later turn. Only full turns that fail back off (a vif
   * turn's refusal is that vif's, and is retried and reported per event).
   */
  private fullSyncFailed(why: string, full: boolean): void {
    this.needFullSync = true;
    this.fullReason = why;
    let delay = 0;
    if (full) {
      delay = this.fullSyncFailures === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (this.fullSyncFailures - 1));
      this.fullSyncFailures++;
      this.fullSyncNotBefore = Date.now() + delay;
    }
    // Also when the failed turn was not the loop's own (start, sync, reconcile requests).
    this.later(delay, () => this.kick());
  }
}

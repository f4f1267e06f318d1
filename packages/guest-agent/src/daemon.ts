// `qubes-net-guest run`: apply at start, then again (debounced) on every relevant QubesDB
// change, on link events for the uplink, after a failed apply (with back-off), after the
// QubesDB watch reconnects, and at once on a control request (the udev-started
// `qubes-net-uplink`). Never on a timer: a route or resolv.conf line a user changed by hand
// stays so until QubesDB or the link changes (upstream configures once per hotplug). All kernel work is serialised: one pass or request at a
// time, requests in the order they came; events arriving during a pass cause exactly one more
// pass. Stopping leaves the configuration in place, like systemd-networkd, so restarting the
// agent breaks no traffic.
import type { QubesDB, QubesDBWatch } from '@qubes-net/qubesdb';
import type { Logger } from '@qubes-net/common/log';
import { applyOnce, runProviderHooks, EXIT, type AgentPaths, type ApplyContext, type ApplyResult } from './apply.js';
import { formatUplinkStatus, generationCounter, type UplinkStatus } from './model/feedback.js';
import { KEY, WATCHED_PATHS } from './model/keys.js';
import { LinkMonitor, type LinkEvent } from './kernel/link-monitor.js';
import { removeUplink } from './remove.js';

export type Trigger = 'start' | 'qubesdb' | 'link' | 'resync' | 'retry' | 'control';

export interface DaemonOptions {
  db: QubesDB;
  log: Logger;
  paths: AgentPaths;
  iface?: string;
  /** Quiet time after an event before applying, so a burst of dom0 writes is one pass. */
  debounceMs?: number;
  /** Called once after the first pass (sd_notify READY=1 in the CLI). */
  onReady?: () => void;
}

/** What a control request gets: the same outcome and exit code `qubes-net-guest apply|remove` would give. */
export interface RequestOutcome {
  ifname: string;
  result: UplinkStatus;
  detail: string;
  exitCode: number;
}

/** A request that was not started before the daemon stopped (its client runs the CLI instead). */
export class DaemonStoppingError extends Error {
  constructor() {
    super('the guest daemon is stopping');
    this.name = 'DaemonStoppingError';
  }
}

interface Deferred<T> {
  resolve: (v: T) => void;
  reject: (err: Error) => void;
}

/** Queued work: a pass shared by every apply request that joined it, or a remove. */
type QueueItem =
  | { kind: 'pass'; waiters: (Deferred<RequestOutcome> & { iface: string | undefined })[] }
  | { kind: 'remove'; iface: string; waiter: Deferred<RequestOutcome> };

const DOWNSTREAM_VIF = /^vif\d+\.\d+/;

function outcomeOf(res: ApplyResult): RequestOutcome {
  return { ifname: res.ifname, result: res.status, detail: res.detail, exitCode: res.exitCode };
}

export class GuestDaemon {
  private readonly generation = generationCounter();
  private readonly ctx: ApplyContext;
  private readonly debounceMs: number;
  private pending = new Set<Trigger>();
  private readonly queue: QueueItem[] = [];
  /** Links taken down by a remove request: ifname → ifindex (a new link of that name is not held). */
  private readonly removed = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelayMs = 0;
  private running: Promise<void> | undefined;
  private started = false;
  private stopped = false;
  private firstPass = true;
  private uplink: string;
  private last: (RequestOutcome & { at: string }) | undefined;
  private watch: QubesDBWatch | undefined;
  private watchDone: Promise<void> | undefined;
  private monitor: LinkMonitor | undefined;
  private hooks: { running: Promise<void> | undefined; again: boolean } = { running: undefined, again: false };
  /** Number of completed passes (tests and the bench read it). */
  passes = 0;

  constructor(private readonly opts: DaemonOptions) {
    this.debounceMs = opts.debounceMs ?? 10;
    this.uplink = opts.iface ?? 'eth0';
    this.ctx = this.context(opts.iface);
    this.ctx.quietWhenUnchanged = true;
  }

  private context(iface: string | undefined): ApplyContext {
    return {
      db: this.opts.db,
      log: this.opts.log,
      paths: this.opts.paths,
      generation: this.generation,
      isRemoved: (ifname, ifindex) => this.removed.get(ifname) === ifindex,
      ...(iface !== undefined ? { iface } : {}),
    };
  }

  /** Starts the watchers, then the first pass; resolves once that pass is done. */
  async start(): Promise<void> {
    const log = this.opts.log;
    // Watchers first, so that nothing changing during the first pass goes unseen.
    this.monitor = new LinkMonitor({
      onEvent: (e) => this.onLinkEvent(e),
      onExit: (code, signal) => log.error({ code, signal }, 'ip monitor exited, restarting it'),
    });
    this.monitor.start();
    this.watchDone = this.watchLoop();
    log.info({ iface: this.opts.iface, watched: WATCHED_PATHS.length, debounceMs: this.debounceMs }, 'guest agent started');
    this.started = true;
    this.trigger('start', 0);
    await this.idle();
    this.opts.onReady?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of [this.timer, this.retryTimer]) if (t) clearTimeout(t);
    this.timer = undefined;
    this.monitor?.stop();
    await this.watch?.close().catch(() => undefined);
    await this.running;
    // Requests not started yet: their clients fall back to running the CLI themselves.
    for (const item of this.queue.splice(0)) {
      for (const w of item.kind === 'pass' ? item.waiters : [item.waiter]) w.reject(new DaemonStoppingError());
    }
    await this.hooks.running;
    await this.watchDone;
    this.opts.log.info({}, 'guest agent stopped, configuration left in place');
  }

  /** Resolves when no pass or request is pending or running. */
  async idle(): Promise<void> {
    while (this.running || this.timer || (this.queue.length > 0 && !this.stopped)) {
      if (this.running) await this.running;
      else await new Promise((r) => setTimeout(r, this.debounceMs));
    }
  }

  trigger(reason: Trigger, delayMs = this.debounceMs): void {
    if (this.stopped) return;
    this.pending.add(reason);
    this.kick(delayMs);
  }

  /**
   * An apply request (control socket): a pass now, without the debounce. A pass already running
   * may have read the kernel before the event that caused the request, so the request waits for
   * the next pass, which every request arriving meanwhile shares. When `iface` is not the
   * uplink that pass chose, that interface is applied on its own, as `apply IFACE` would.
   * A link held down by a remove request is configured again.
   */
  requestApply(iface?: string): Promise<RequestOutcome> {
    if (this.stopped) return Promise.reject(new DaemonStoppingError());
    return new Promise((resolve, reject) => {
      const tail = this.queue[this.queue.length - 1];
      const waiter = { resolve, reject, iface };
      if (tail?.kind === 'pass') tail.waiters.push(waiter);
      else this.queue.push({ kind: 'pass', waiters: [waiter] });
      this.pending.add('control');
      this.kick(0);
    });
  }

  /** A remove request: the link down and our entries gone (as `remove IFACE`), held so until an apply request. */
  requestRemove(iface: string): Promise<RequestOutcome> {
    if (this.stopped) return Promise.reject(new DaemonStoppingError());
    return new Promise((resolve, reject) => {
      this.queue.push({ kind: 'remove', iface, waiter: { resolve, reject } });
      this.kick(0);
    });
  }

  /** The daemon's own state, for the control socket's status request. */
  status(): Record<string, unknown> {
    return {
      uplink: this.uplink,
      passes: this.passes,
      busy: this.running !== undefined,
      queued: this.queue.length,
      removed: [...this.removed.keys()],
      ...(this.last ? { last: this.last } : {}),
    };
  }

  /** Starts the work loop now (delay 0) or after `delayMs`, unless it runs or is due sooner. */
  private kick(delayMs: number): void {
    if (this.stopped || !this.started || this.running) return; // a running loop looks again when done
    if (this.timer) {
      if (delayMs > 0) return; // a burst stays one pass
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (delayMs > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.work();
      }, delayMs);
      return;
    }
    this.work();
  }

  private work(): void {
    this.running = this.drain().finally(() => {
      this.running = undefined;
      if (this.stopped) return;
      if (this.queue.length > 0) this.kick(0);
      else if (this.pending.size > 0) this.kick(this.debounceMs);
    });
  }

  /** Runs queued requests in order, and one pass for the triggers pending when it started. */
  private async drain(): Promise<void> {
    let passed = false;
    while (!this.stopped) {
      const item = this.queue.shift();
      if (item?.kind === 'pass') await this.servePass(item.waiters);
      else if (item?.kind === 'remove') await this.serveRemove(item.iface, item.waiter);
      else if (!passed && this.pending.size > 0) await this.pass().catch(() => undefined);
      else return;
      passed = true;
    }
  }

  private async servePass(waiters: (Deferred<RequestOutcome> & { iface: string | undefined })[]): Promise<void> {
    // An apply request undoes an earlier remove, as starting the uplink unit again would.
    for (const w of waiters) this.removed.delete(w.iface ?? this.uplink);
    let res: ApplyResult;
    try {
      res = await this.pass(true);
    } catch (err) {
      for (const w of waiters) w.reject(err as Error);
      return;
    }
    const others = new Map<string, ApplyResult | Error>();
    for (const w of waiters) {
      if (w.iface !== undefined && w.iface !== res.ifname && !others.has(w.iface)) {
        others.set(w.iface, await this.applyOther(w.iface).catch((err: Error) => err));
      }
    }
    // The replies wait for the provider hooks (as the CLI's exit does); the work loop does not.
    void this.hooksIdle().then(() => {
      for (const w of waiters) {
        const r = w.iface === undefined || w.iface === res.ifname ? res : others.get(w.iface)!;
        if (r instanceof Error) w.reject(r);
        else w.resolve(outcomeOf(r));
      }
    });
  }

  /** `apply IFACE` for an interface that is not the daemon's uplink: one pass of its own. */
  private async applyOther(iface: string): Promise<ApplyResult> {
    this.opts.log.info({ ifname: iface, uplink: this.uplink }, 'apply requested for an interface other than the uplink');
    const res = await applyOnce(this.context(iface));
    if (res.providesNetwork && res.linkPresent) await runProviderHooks(this.opts.paths, this.opts.log);
    return res;
  }

  private async serveRemove(iface: string, waiter: Deferred<RequestOutcome>): Promise<void> {
    try {
      const res = await removeUplink(iface, this.opts.paths, this.opts.log);
      // Held down from now on: the link event of our own `link set down` must not bring it back.
      if (res.ifindex !== undefined) this.removed.set(iface, res.ifindex);
      const detail = `${iface} removed`;
      try {
        await this.opts.db.write(KEY.uplinkStatus, formatUplinkStatus(this.ctx.generation(), 'unconfigured', detail));
      } catch (err) {
        this.opts.log.warn({ key: KEY.uplinkStatus, error: (err as Error).message }, 'qubesdb feedback write failed');
      }
      const outcome: RequestOutcome = res.ok
        ? { ifname: iface, result: 'unconfigured', detail, exitCode: EXIT.ok }
        : { ifname: iface, result: 'error', detail: `${iface} kernel refused the change`, exitCode: EXIT.kernel };
      this.last = { ...outcome, at: new Date().toISOString() };
      waiter.resolve(outcome);
    } catch (err) {
      waiter.reject(err as Error);
    }
  }

  private onLinkEvent(e: LinkEvent): void {
    // A netvm's downstream vifs come and go all the time; they never are the uplink.
    if (e.ifname !== this.uplink && DOWNSTREAM_VIF.test(e.ifname)) return;
    this.opts.log.debug({ ifname: e.ifname, deleted: e.deleted }, 'link event');
    this.trigger('link');
  }

  private async watchLoop(): Promise<void> {
    let backoff = 100;
    while (!this.stopped) {
      try {
        this.watch = this.opts.db.watch(WATCHED_PATHS);
        for await (const path of this.watch) {
          backoff = 100;
          this.opts.log.debug({ key: path }, 'qubesdb change');
          this.trigger('qubesdb');
        }
        if (this.stopped) return;
        this.opts.log.error({}, 'qubesdb watch ended, watching again');
      } catch (err) {
        if (this.stopped) return;
        this.opts.log.error({ error: (err as Error).message }, 'qubesdb watch failed, watching again');
      }
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 5000);
      this.trigger('resync');
    }
  }

  /** One apply pass of the uplink; `requested`: an apply request, after which a provider's hooks always run (as after `apply`). */
  private async pass(requested = false): Promise<ApplyResult> {
    const reasons = this.pending;
    this.pending = new Set();
    const log = this.opts.log;
    this.ctx.alwaysWriteStatus = reasons.has('qubesdb') || reasons.has('start') || reasons.has('control');
    try {
      const res = await applyOnce(this.ctx);
      this.uplink = res.ifname;
      this.last = { ...outcomeOf(res), at: new Date().toISOString() };
      if (res.providesNetwork && (res.changed || this.firstPass || (requested && res.linkPresent))) this.startHooks();
      // A refused kernel change is retried with back-off; bad QubesDB values wait for a change.
      if (res.exitCode === EXIT.kernel && res.linkPresent) this.scheduleRetry();
      else this.retryDelayMs = 0;
      return res;
    } catch (err) {
      log.error({ error: (err as Error).message, reasons: [...reasons] }, 'uplink apply pass failed');
      this.scheduleRetry();
      throw err;
    } finally {
      this.firstPass = false;
      this.passes++;
    }
  }

  private scheduleRetry(): void {
    this.retryDelayMs = Math.min(this.retryDelayMs ? this.retryDelayMs * 2 : 500, 30_000);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.trigger('retry', 0), this.retryDelayMs);
  }

  private async hooksIdle(): Promise<void> {
    while (this.hooks.running) await this.hooks.running;
  }

  /** Hooks run beside the apply loop (a slow user hook must not delay the next pass), one at a time. */
  private startHooks(): void {
    if (this.hooks.running) {
      this.hooks.again = true;
      return;
    }
    this.hooks.running = runProviderHooks(this.opts.paths, this.opts.log)
      .catch((err) => this.opts.log.error({ error: (err as Error).message }, 'provider hooks failed'))
      .finally(() => {
        this.hooks.running = undefined;
        if (this.hooks.again && !this.stopped) {
          this.hooks.again = false;
          this.startHooks();
        }
      });
  }
}

// `qubes-net-guest run`: apply at start, then again (debounced) on every relevant QubesDB
// change, on link events for the uplink, after a failed apply (with back-off) and on a slow
// periodic re-check that catches anything missed. One pass at a time; events arriving during a
// pass cause exactly one more pass. Stopping leaves the configuration in place, like
// systemd-networkd, so restarting the agent breaks no traffic.
import type { QubesDB, QubesDBWatch } from '@qubes-net/qubesdb';
import type { Logger } from './common-lite.js';
import { applyOnce, runProviderHooks, EXIT, type AgentPaths, type ApplyContext } from './apply.js';
import { generationCounter } from './model/feedback.js';
import { WATCHED_PATHS } from './model/keys.js';
import { LinkMonitor, type LinkEvent } from './kernel/link-monitor.js';

export type Trigger = 'start' | 'qubesdb' | 'link' | 'resync' | 'retry';

export interface DaemonOptions {
  db: QubesDB;
  log: Logger;
  paths: AgentPaths;
  iface?: string;
  /** Quiet time after an event before applying, so a burst of dom0 writes is one pass. */
  debounceMs?: number;
  /** Periodic re-check; 0 disables it. */
  resyncMs?: number;
  /** Called once after the first pass (sd_notify READY=1 in the CLI). */
  onReady?: () => void;
}

const DOWNSTREAM_VIF = /^vif\d+\.\d+/;

export class GuestDaemon {
  private readonly ctx: ApplyContext;
  private readonly debounceMs: number;
  private readonly resyncMs: number;
  private pending = new Set<Trigger>();
  private timer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelayMs = 0;
  private running: Promise<void> | undefined;
  private stopped = false;
  private firstPass = true;
  private uplink: string;
  private watch: QubesDBWatch | undefined;
  private watchDone: Promise<void> | undefined;
  private monitor: LinkMonitor | undefined;
  private hooks: { running: Promise<void> | undefined; again: boolean } = { running: undefined, again: false };
  /** Number of completed passes (tests and the bench read it). */
  passes = 0;

  constructor(private readonly opts: DaemonOptions) {
    this.debounceMs = opts.debounceMs ?? 10;
    this.resyncMs = opts.resyncMs ?? 30_000;
    this.uplink = opts.iface ?? 'eth0';
    this.ctx = {
      db: opts.db,
      log: opts.log,
      paths: opts.paths,
      generation: generationCounter(),
      quietWhenUnchanged: true,
      ...(opts.iface !== undefined ? { iface: opts.iface } : {}),
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
    this.trigger('start', 0);
    await this.idle();
    this.opts.onReady?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of [this.timer, this.resyncTimer, this.retryTimer]) if (t) clearTimeout(t);
    this.monitor?.stop();
    await this.watch?.close().catch(() => undefined);
    await this.running;
    await this.hooks.running;
    await this.watchDone;
    this.opts.log.info({}, 'guest agent stopped, configuration left in place');
  }

  /** Resolves when no pass is pending or running. */
  async idle(): Promise<void> {
    while (this.running || this.timer) {
      if (this.running) await this.running;
      else await new Promise((r) => setTimeout(r, this.debounceMs));
    }
  }

  trigger(reason: Trigger, delayMs = this.debounceMs): void {
    if (this.stopped) return;
    this.pending.add(reason);
    if (this.running || this.timer) return; // the running pass re-schedules when it ends
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.pass().finally(() => {
        this.running = undefined;
        if (this.pending.size > 0 && !this.stopped) this.trigger([...this.pending][0]!);
      });
    }, delayMs);
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

  private async pass(): Promise<void> {
    const reasons = this.pending;
    this.pending = new Set();
    const log = this.opts.log;
    this.ctx.alwaysWriteStatus = reasons.has('qubesdb') || reasons.has('start');
    try {
      const res = await applyOnce(this.ctx);
      this.uplink = res.ifname;
      if (res.providesNetwork && (res.changed || this.firstPass)) this.startHooks();
      // A refused kernel change is retried with back-off; bad QubesDB values wait for a change.
      if (res.exitCode === EXIT.kernel && res.linkPresent) this.scheduleRetry();
      else this.retryDelayMs = 0;
    } catch (err) {
      log.error({ error: (err as Error).message, reasons: [...reasons] }, 'uplink apply pass failed');
      this.scheduleRetry();
    } finally {
      this.firstPass = false;
      this.passes++;
      this.scheduleResync();
    }
  }

  private scheduleRetry(): void {
    this.retryDelayMs = Math.min(this.retryDelayMs ? this.retryDelayMs * 2 : 500, 30_000);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.trigger('retry', 0), this.retryDelayMs);
  }

  private scheduleResync(): void {
    if (this.resyncMs <= 0 || this.stopped) return;
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    this.resyncTimer = setTimeout(() => this.trigger('resync', 0), this.resyncMs);
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

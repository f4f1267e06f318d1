// `qubes-net-agent run`: the driver and the per-qube firewall in one process, on one QubesDB
// connection, behind one control socket, and only while there is work (docs/runtime-shape.md).
//
// Start: listen (or take the activated socket) first, so early requests wait instead of
// failing; then the driver rebuilds its state from the kernel, Xen's vif entries and QubesDB
// and loads the base ruleset (with the firewall skeleton where the service is on); then the
// firewall engine applies every qube's rules; then requests are answered.
// Idle exit: after `idleExitMs` without work, stop accepting (close the listening fd), finish
// what is in flight, leave the next deadline (a firewall name's TTL) in the wake file, close
// QubesDB, exit 0. Nothing is removed from the kernel on exit: it keeps enforcing.
import { mkdir, rename, unlink, writeFile, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createLogger, packageVersion, sdNotify, forLog, type Logger } from '@qubes-net/common';
import { ControlServer, HangUp, activatedFd, reply, type Reply, type Request, type AgentStatus } from '@qubes-net/common/control';
import { Driver } from '@qubes-net/driver-agent';
import type { FirewallEngine } from '@qubes-net/firewall';
import { HostedQubesDB } from './qubesdb-host.js';
import { WorkClock } from './work.js';
import { firewallEnabled } from './firewall-service.js';
import type { AgentOptions } from './options.js';

const RESOLVE = { timeoutMs: 2_000, tries: 2 };
/** The driver signals a separate firewall daemon by pidfile; in the agent the engine is in-process. */
const NO_FIREWALL_PIDFILE = '/run/qubes-net/agent-hosts-the-firewall.pid';

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => (t = setTimeout(() => rej(new Error(`${what}: no answer within ${ms} ms`)), ms)))]).finally(() => clearTimeout(t));
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

export class NetworkAgent {
  readonly log: Logger;
  private readonly startedAt = new Date();
  private readonly db: HostedQubesDB;
  private readonly server: ControlServer;
  private readonly clock: WorkClock;
  private driver: Driver | undefined;
  private engine: FirewallEngine | undefined;
  private closers: (() => Promise<void> | void)[] = [];
  private ready = false;
  private firewallStarting: Promise<void> | undefined;
  private firewallError: string | undefined;
  private readyWaiters: ((ok: boolean) => void)[] = [];
  /** vif events that came in while starting (settled promises of their replies). */
  private earlyVifRequests: Promise<unknown>[] = [];
  private exiting: Promise<number> | undefined;
  /** A stop signal came (systemctl stop or restart): what this instance cannot serve goes to the next. */
  private stopSignalled = false;
  private exitResolve!: (code: number) => void;
  readonly done = new Promise<number>((r) => (this.exitResolve = r));

  constructor(private readonly opts: AgentOptions, log: Logger = createLogger('network-agent')) {
    this.log = log;
    this.clock = new WorkClock(opts.idleExitMs, () => void this.exit('idle'), () => this.db.inFlight > 0 || this.server.busy > 0 || !!this.driver?.hasWork());
    this.db = new HostedQubesDB({ runDir: opts.qubesdbDir, timeoutMs: opts.qubesdbTimeoutMs, onEvent: () => this.clock.touch() });
    this.server = new ControlServer({ path: opts.socket, fd: activatedFd(), log, handle: (req) => this.handle(req) });
  }

  async start(): Promise<void> {
    await this.server.listen();
    try {
      await this.db.openWatches();
      const fw = await firewallEnabled(this.opts.firewall, this.opts.serviceDir, this.db);
      const driver = new Driver({
        qdb: this.db,
        log: this.log.child({ part: 'driver' }),
        resolvConf: this.opts.resolvConf,
        resolved: this.opts.resolved,
        ...(this.opts.resolvedDir ? { resolvedRunDir: this.opts.resolvedDir } : {}),
        hooksDir: this.opts.hooksDir,
        firewall: fw ? 'on' : 'off',
        firewallPidFile: NO_FIREWALL_PIDFILE,
        // The loop ran out of work: the idle period starts from here.
        onIdle: () => this.clock.touch(),
        // One DNS source for both: the firewall re-reads its servers when the driver's change.
        onDnsChanged: () => {
          this.clock.touch();
          this.engine?.dnsMaybeChanged();
        },
      });
      this.driver = driver;
      // The link monitor waits until the vif events that waited for the start are answered.
      await driver.start({ follow: true, deferLinkMonitor: true });
      this.closers.push(() => driver.stop());
      // The driver's start loaded the firewall skeleton (forward policy drop), so vif events
      // can be answered now; the per-qube chains follow without holding them up (until then a
      // new qube's traffic meets the drop policy: fail closed).
      // The vif events that waited for the start (the one that activated us) are answered
      // before the link monitor's spawn shares the main thread with them. The firewall is not
      // deferred behind them: until its start has reconciled the per-qube chains with QubesDB,
      // a chain the kernel still holds for a reused address (a disposable's) would be the one
      // in force, so its start is not pushed later than the driver's.
      const early = Promise.all(this.earlyVifRequests);
      this.earlyVifRequests = [];
      void early.then(() => driver.followLinks());
      if (fw) {
        this.firewallStarting = this.clock.around(() => this.startFirewall()).catch((err) => {
          this.firewallError = String((err as Error)?.message ?? err);
          this.log.error({ err: forLog(this.firewallError) }, 'firewall start failed: forward stays closed for qubes without rules');
        });
      }
    } catch (err) {
      this.setReady(false);
      throw err;
    }
    this.setReady(true);
    sdNotify('READY=1');
    this.clock.start();
    this.log.info({ socket: this.opts.socket, activated: this.server.activated, firewall: this.engine !== undefined || this.firewallStarting !== undefined, idleExitMs: this.opts.idleExitMs }, 'network agent ready');
  }

  private async startFirewall(): Promise<void> {
    // Loaded here, after the vif path is ready: the engine is not on the first request's path.
    const { FirewallEngine, WATCH_PATHS, realKernel, readResolvConf, resolveHost, ensureFirewallTables } = await import('@qubes-net/firewall');
    const log = this.log.child({ part: 'firewall' });
    const kernel = realKernel();
    // Our rules in `forward` first, then the users' hooks, as upstream builds its table before
    // running the user script: a rule a hook inserts at the top then stays above ours (16.2).
    const tables = await ensureFirewallTables(kernel);
    if (!tables.ok) log.error({ err: forLog(tables.error) }, 'cannot create the firewall tables before the hooks; the engine retries');
    await this.firewallHooksOncePerBoot(log);
    const engine = new FirewallEngine({
      db: this.db,
      log,
      kernel,
      resolve: (host, family, servers) => resolveHost(host, family, servers, RESOLVE),
      readDnsServers: async () => {
        const r = await readResolvConf(this.opts.resolvConf);
        if (r.error) log.warn({ file: this.opts.resolvConf, err: r.error }, 'cannot read resolv.conf');
        return r.servers;
      },
      onSettled: () => this.clock.touch(),
    });
    this.engine = engine;
    // Watch before the initial read: a change made in between is then seen, not lost.
    const watch = this.db.watch(WATCH_PATHS);
    const loop = (async () => {
      for await (const path of watch) engine.onWatchEvent(path);
    })().catch((e) => log.error({ err: forLog((e as Error).message) }, 'qubesdb watch ended'));
    this.closers.push(async () => {
      await engine.stop();
      await watch.close();
      await loop;
    });
    await engine.start();
  }

  /** Users' firewall hooks belong to boot, not to each start of an on-demand agent. */
  private async firewallHooksOncePerBoot(log: Logger): Promise<void> {
    const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '')).trim();
    const done = (await readFile(this.opts.hooksDoneFile, 'utf8').catch(() => '')).trim();
    if (bootId && done === bootId) return;
    const persist = (await this.db.read('/qubes-service/custom-persist').catch(() => undefined)) === '1';
    const { runHooks, DEFAULT_HOOK_PATHS } = await import('@qubes-net/firewall');
    await runHooks(DEFAULT_HOOK_PATHS, persist, log);
    await writeAtomic(this.opts.hooksDoneFile, `${bootId}\n`).catch(() => undefined);
  }

  private setReady(ok: boolean): void {
    this.ready = ok;
    const w = this.readyWaiters;
    this.readyWaiters = [];
    for (const f of w) f(ok);
  }

  private whenReady(): Promise<boolean> {
    if (this.ready) return Promise.resolve(true);
    return new Promise((r) => this.readyWaiters.push(r));
  }

  // ------------------------------------------------------------------ requests

  async handle(req: Request): Promise<Reply> {
    if (req.op === 'status') return reply('ok', 'status', { ...(await this.status()) });
    const answer = this.answer(req);
    if (!this.ready && (req.op === 'online' || req.op === 'offline')) this.earlyVifRequests.push(answer.catch(() => undefined));
    return answer;
  }

  private answer(req: Exclude<Request, { op: 'status' }>): Promise<Reply> {
    return this.clock.around(async () => {
      if (!(await this.whenReady())) {
        // Stopped while starting (systemd's stop also kills our ip helpers, so the start
        // fails): hang up, so that the client's retry reaches the next instance instead of
        // failing a hotplug (13.3; seen by test/template/fault-booted.test.ts).
        if (this.stopSignalled) throw new HangUp('stopped while starting');
        return reply('internal', 'the agent failed to start');
      }
      const driver = this.driver!;
      switch (req.op) {
        case 'online':
        case 'offline': {
          const r = await driver.submit({ op: req.op, vif: req.vif, ips: req.ips.join(' '), mac: req.mac, type: req.type ?? '', xenbusPath: req.xenbusPath });
          const details = { vif: req.vif, ...(r.state ? { state: r.state } : {}), ...(r.generation !== undefined ? { generation: r.generation } : {}) };
          if (r.ok) return reply('ok', `${req.vif} ${r.state ?? req.op}`, details);
          return reply(r.inputError ? 'invalid-input' : 'kernel-refused', r.error ?? `${req.op} ${req.vif} failed`, details);
        }
        case 'sync': {
          // A trigger from the watcher: what changed is re-read (the watches and a fresh start cover the rest).
          await driver.sync(req.reason);
          this.engine?.dnsMaybeChanged();
          return reply('ok', 'synced', {});
        }
        case 'reconcile': {
          await this.firewallStarting;
          const { differences } = await driver.reconcileNow();
          await this.engine?.reload();
          return reply('ok', `${differences.length} correction(s)`, { differences });
        }
      }
    });
  }

  async status(): Promise<AgentStatus> {
    const parts: Record<string, unknown> = {};
    if (this.driver && this.ready) {
      // The status must answer even while the driver waits on something (QubesDB, the kernel).
      parts.driver = await timeout(this.driver.status(), 3_000, 'driver status').catch((e) => ({ error: String((e as Error).message) }));
    }
    if (this.firewallError) parts.firewall = { error: this.firewallError };
    else if (this.engine) parts.firewall = this.engine.status();
    parts.qubesdb = { callsWaiting: this.db.inFlight };
    return {
      agent: 'qubes-net-agent',
      version: packageVersion(import.meta.url),
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      ready: this.ready,
      inFlight: this.clock.working,
      lastWorkAt: new Date(this.clock.lastWorkAt).toISOString(),
      idleExitMs: this.opts.idleExitMs,
      socket: { path: this.opts.socket, activated: this.server.activated },
      parts,
    };
  }

  // ------------------------------------------------------------------ exit

  /** The next time the agent must run again without a trigger (a firewall name's TTL), epoch ms. */
  private nextDeadline(): number | undefined {
    const times = (this.engine?.status().qubes ?? []).flatMap((q) => (q.nextRefreshAt ? [Date.parse(q.nextRefreshAt)] : []));
    return times.length ? Math.min(...times) : undefined;
  }

  exit(reason: string): Promise<number> {
    if (reason === 'SIGTERM' || reason === 'SIGINT') this.stopSignalled = true;
    this.exiting ??= (async () => {
      this.clock.stop();
      this.log.info({ reason }, reason === 'idle' ? 'idle: exiting' : 'stopping; configuration stays in place');
      sdNotify('STOPPING=1');
      // Close the listening fd first: a request arriving from here on waits in the backlog
      // (activation) and starts the next instance; none is lost.
      await this.server.stopAccepting({ unlink: reason === 'idle' || reason === 'start failed' });
      await this.server.drained();
      await this.firewallStarting;
      await this.engine?.idle();
      const deadline = this.nextDeadline();
      if (deadline !== undefined) await writeAtomic(this.opts.wakeFile, `${deadline}\n`).catch((e) => this.log.warn({ file: this.opts.wakeFile, err: String(e) }, 'cannot write wake file'));
      else await unlink(this.opts.wakeFile).catch(() => undefined);
      for (const c of this.closers.reverse()) await Promise.resolve(c()).catch((e) => this.log.warn({ err: String(e) }, 'close failed'));
      await this.db.close().catch(() => undefined);
      this.server.dropIdle();
      this.log.info({ reason, wakeAt: deadline ? new Date(deadline).toISOString() : null }, 'exited');
      this.exitResolve(0);
      return 0;
    })();
    return this.exiting;
  }
}

/** Runs the agent until it goes idle or is stopped; resolves with the exit code. */
export async function runAgent(opts: AgentOptions, log: Logger = createLogger('network-agent')): Promise<number> {
  const agent = new NetworkAgent(opts, log);
  process.on('SIGTERM', () => void agent.exit('SIGTERM'));
  process.on('SIGINT', () => void agent.exit('SIGINT'));
  process.on('SIGHUP', () => void agent.handle({ op: 'reconcile' }).then((r) => log.info({ message: r.message }, 'SIGHUP: reconciled')));
  try {
    await agent.start();
  } catch (err) {
    log.fatal({ err: forLog(String((err as Error)?.stack ?? err), 2000) }, 'start failed');
    await agent.exit('start failed');
    return 1;
  }
  return agent.done;
}

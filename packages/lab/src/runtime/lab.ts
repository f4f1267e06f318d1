// A running lab: dom0's view (the model) plus what exists on this machine for each running
// qube (its namespaces, QubesDB daemon and client, agents, vif). The primitives here are
// dom0's and the toolstack's steps (boot a domain, attach/detach a vif with its hotplug call,
// push entries); src/ops/ composes them into the operations users run.
import { mkdir, rm, writeFile, rename, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GATEWAY_MAC, createLogger, forLog, type Logger, type RunResult } from '@qubes-net/common';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { openQubesDB, type QubesDB } from '@qubes-net/qubesdb';
import {
  connectedIpsOps, firewallOps, forgetAddressOps, ownEntries, ownEntriesOps, providerPreAttachOps,
  realAddresses, vifBackendEntries,
} from '../dom0/entries.js';
import { nextExpiry } from '../dom0/firewall-rules.js';
import { cloneModel, modelToJSON, type LabModel, type QubeSpec } from '../topology/model.js';
import { resolveAgentCommands, missingAgentFiles, type AgentCommands } from './agent-commands.js';
import { LabInternet } from './internet.js';
import { applyOps, parseFeedback, readOwnManaged, waitUntil, type Feedback } from './qdb-ops.js';
import { startInQube, stopPids, type QubeProcess } from './processes.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { sendAgentRequest } from './agent-control.js';
import { watchArgs } from '@qubes-net/guest-agent/watch-args';
import { agentWatchArgs, combinedWatchArgs } from '@qubes-net/network-agent/watch-args';

/**
 * What stays resident in a qube: `guest`, the uplink's watcher (qubes-net-watch --run
 * qubes-net-guest apply eth0), and in network qubes `agent`, the watcher that starts
 * qubes-net-agent on demand (--activate on its control socket).
 */
export type AgentRole = 'guest' | 'agent';

export const DEFAULT_STATE_ROOT = '/run/qubes-net-lab';

/**
 * The network agent's V8 flags, as its unit sets them (QUBES_NET_NODE_FLAGS in
 * qubes-net-agent.service; QUBES_NET_AGENT_NODE_OPTIONS overrides them here): a small young
 * generation, a bounded heap, and --lite-mode (no optimising compilers: ~5 MB less RSS for work
 * that is small and short-lived; not --jitless, under which Debian 13's nodejs crashed the agent).
 */
export const AGENT_NODE_OPTIONS = '--max-semi-space-size=1 --max-old-space-size=64 --lite-mode';

export interface ProgressEvent {
  /** Milliseconds since the lab object was created. */
  t: number;
  qube?: string;
  step: string;
  detail?: string;
}

export interface LabOptions {
  /** Directory for state.json and the per-qube logs (default /run/qubes-net-lab/<name>). */
  stateDir?: string;
  agents?: AgentCommands;
  logger?: Logger;
  onProgress?: (e: ProgressEvent) => void;
  /** Guard for each wait on agent feedback (default 30 s; only protects against hangs). */
  waitTimeoutMs?: number;
  /** The network agents' --idle-exit (default QUBES_NET_LAB_IDLE_EXIT_MS, else 30000). */
  idleExitMs?: number;
}

export interface VifAttachment {
  provider: string;
  /** The backend's (provider's) domid and the vif name in it. */
  backendDomid: number;
  name: string;
  /** The real addresses the vif was plugged with (the xenstore `ip` entry). */
  addresses: string[];
  /** The client's network keys at plug time, to tell whether a re-plug is needed. */
  keys: string;
}

export interface RunningQube {
  name: string;
  domid: number;
  ns: Qube;
  db: QubesDB;
  qdbDaemon: QubeProcess;
  agents: Map<AgentRole, QubeProcess>;
  vif?: VifAttachment;
  logDir: string;
  startedAt: number;
  /** Times (ms) agents were restarted after exiting on their own, per role. */
  restarts: Map<AgentRole, number[]>;
}

/** Like systemd's Restart=on-failure with a start limit: at most 5 restarts a minute. */
const RESTART_DELAY_MS = 500;
const RESTART_LIMIT = 5;
const RESTART_WINDOW_MS = 60_000;

/** The client-network part of a qube's own entries (what its vif depends on). */
function networkKeysOf(model: LabModel, name: string): string {
  const e = ownEntries(model, name);
  return JSON.stringify([...e].filter(([k]) => k.startsWith('/qubes-') && !k.startsWith('/qubes-service') && !k.startsWith('/qubes-vm-')));
}

export class Lab {
  readonly model: LabModel;
  readonly stateDir: string;
  readonly agentCommands: AgentCommands;
  readonly log: Logger;
  readonly running = new Map<string, RunningQube>();
  readonly waitTimeoutMs: number;
  readonly idleExitMs: number;
  private nextDomid = 1;
  private readonly t0 = Date.now();
  private readonly onProgress: ((e: ProgressEvent) => void) | undefined;
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();
  /** Serializes operations: dom0 handles one admin call at a time per lab. */
  private queue: Promise<unknown> = Promise.resolve();
  private destroyed = false;

  private constructor(model: LabModel, readonly session: NetnsSession, readonly internet: LabInternet, opts: LabOptions, stateDir: string) {
    this.model = model;
    this.stateDir = stateDir;
    this.agentCommands = opts.agents ?? resolveAgentCommands();
    this.log = opts.logger ?? createLogger('lab');
    this.onProgress = opts.onProgress;
    this.waitTimeoutMs = opts.waitTimeoutMs ?? 30_000;
    const envIdle = process.env.QUBES_NET_LAB_IDLE_EXIT_MS;
    this.idleExitMs = opts.idleExitMs ?? (envIdle && /^\d+$/.test(envIdle) ? Number(envIdle) : 30_000);
  }

  /** Creates the lab's session and fake internet; starts no qube (see ops/lifecycle up()). */
  static async create(model: LabModel, opts: LabOptions = {}): Promise<Lab> {
    const agents = opts.agents ?? resolveAgentCommands();
    const missing = missingAgentFiles(agents);
    if (missing.length) throw new Error(`the lab needs these files (build with \`npx tsc -b\`, \`make -C native-bindings\`): ${missing.join(', ')}`);
    const stateDir = opts.stateDir ?? join(DEFAULT_STATE_ROOT, model.name);
    await mkdir(stateDir, { recursive: true, mode: 0o750 });
    const session = await NetnsSession.create(`lab-${model.name}`);
    let internet: LabInternet;
    try {
      internet = await LabInternet.start(session, model.internet);
    } catch (err) {
      await session.destroy().catch(() => {});
      throw err;
    }
    const lab = new Lab(cloneModel(model), session, internet, { ...opts, agents }, stateDir);
    lab.progress({ step: 'fake internet up', detail: internet.describe() });
    await lab.saveState();
    return lab;
  }

  progress(e: Omit<ProgressEvent, 't'>): void {
    const ev = { t: Date.now() - this.t0, ...e };
    this.log.info({ qube: e.qube, detail: e.detail }, e.step);
    this.onProgress?.(ev);
  }

  /** Runs `fn` after every operation queued before it (one operation at a time). */
  serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  spec(name: string): QubeSpec {
    const q = this.model.qubes.get(name);
    if (!q) throw new Error(`no qube named ${JSON.stringify(name)}`);
    return q;
  }

  runningQube(name: string): RunningQube {
    const r = this.running.get(name);
    if (!r) throw new Error(`qube ${name} is not running`);
    return r;
  }

  isRunning(name: string): boolean {
    return this.running.has(name);
  }

  /** Running qubes whose netvm is `provider` and whose vif is plugged into it. */
  attachedClients(provider: string): RunningQube[] {
    return [...this.running.values()].filter((r) => r.vif?.provider === provider);
  }

  // ---------------------------------------------------------------- domains

  /**
   * Creates the domain: namespaces, QubesDB daemon, dom0's entries (before anything in the qube
   * reads them), the uplink for a qube plugged into the fake internet, and the provider agents.
   * Does not plug the vif or start the guest agent (the caller orders those).
   */
  async createDomain(name: string): Promise<RunningQube> {
    const spec = this.spec(name);
    const domid = this.nextDomid++;
    this.progress({ qube: name, step: 'creating domain', detail: `domid ${domid}` });
    const logDir = join(this.stateDir, name);
    await mkdir(logDir, { recursive: true });
    const ns = await this.session.qube(name);
    let qdbDaemon: QubeProcess | undefined;
    try {
      qdbDaemon = await startInQube(ns, 'qubesdb', [...this.agentCommands.qubesdbDaemon, '--ready-fd', '3'], join(logDir, 'qubesdb.log'), { readyFd: true });
      const db = openQubesDB({ runDir: ns.hostPath('/run/qubes') });
      const rq: RunningQube = { name, domid, ns, db, qdbDaemon, agents: new Map(), logDir, startedAt: Date.now(), restarts: new Map() };
      this.running.set(name, rq);
      await applyOps(db, ownEntriesOps(this.model, name));
      this.progress({ qube: name, step: 'QubesDB written' });
      if (spec.uplink) {
        await this.internet.plug(ns);
        this.progress({ qube: name, step: 'uplink to the fake internet', detail: this.internet.describe() });
      }
      // A network qube with a netvm starts its one watcher once its uplink is there (startAgent
      // 'guest': the uplink's group and the agent's in one process); one without starts it now.
      if (spec.providesNetwork && spec.netvm === null) {
        await this.startAgent(rq, 'agent');
        await this.waitAgentReady(rq);
        this.progress({ qube: name, step: 'network agent ready (started on demand by its watcher)' });
      }
      return rq;
    } catch (err) {
      if (this.running.has(name)) await this.destroyDomain(name, { kill: true }).catch(() => {});
      else {
        await qdbDaemon?.kill().catch(() => {});
        await this.session.removeQube(name).catch(() => {});
      }
      throw err;
    }
  }

  /**
   * A clean shutdown's service stops: guest first (it takes the uplink down), then the
   * firewall, then the driver. Rules stay in the kernel until the namespace goes.
   */
  async stopAgents(name: string): Promise<void> {
    const rq = this.running.get(name);
    if (!rq) return;
    // A network qube's one watcher stands for both roles: stopped once.
    for (const p of new Set([rq.agents.get('guest'), rq.agents.get('agent')])) await p?.stop();
  }

  /** Stops (or kills) every process of the domain and removes its namespaces. */
  async destroyDomain(name: string, opts: { kill: boolean }): Promise<void> {
    const rq = this.running.get(name);
    if (!rq) return;
    if (opts.kill) await Promise.all([...rq.agents.values()].map((p) => p.kill()));
    else await this.stopAgents(name);
    await rq.db.close().catch(() => {});
    if (opts.kill) await rq.qdbDaemon.kill();
    else await rq.qdbDaemon.stop();
    this.clearExpiry(name);
    if (this.spec(name).uplink) await this.internet.unplug(rq.ns).catch(() => {});
    await this.session.removeQube(name);
    this.running.delete(name);
  }

  // ---------------------------------------------------------------- agents

  /**
   * Starts the qube's watcher for `role`. A client's `guest` role is the uplink's watcher. A
   * network qube runs one watcher for everything (docs/runtime-shape.md): the agent's group,
   * plus the uplink's group once it has an uplink; that one process stands for both roles.
   */
  async startAgent(rq: RunningQube, role: AgentRole): Promise<QubeProcess> {
    const existing = rq.agents.get(role);
    if (existing?.running) return existing;
    // veth uplinks: driver "none". INVOCATION_ID emptied: the lab's qubes are namespaces, not
    // systemd systems; a lab started from a systemd unit (a CI runner) must not have its qubes'
    // hooks create transient scopes in the host's systemd.
    const env = { QUBES_NET_QUBE: rq.name, QUBES_NET_UPLINK_DRIVERS: 'vif,none', INVOCATION_ID: '' };
    const cmds = this.agentCommands;
    const provider = this.spec(rq.name).providesNetwork;
    if (role === 'guest') {
      // As udev would on the vif's arrival: apply once; then the watcher follows QubesDB and the link.
      const applied = await rq.ns.exec(cmds.guest[0]!, [...cmds.guest.slice(1), 'apply', 'eth0'], { allowFailure: true, env });
      await appendFile(join(rq.logDir, 'guest-apply.log'), applied.stdout + applied.stderr).catch(() => undefined);
      if (applied.exitCode !== 0) this.log.warn({ qube: rq.name, code: applied.exitCode }, 'first uplink apply failed; the watcher retries on the next change');
    }
    const uplinkGroup = role === 'guest' || rq.agents.has('guest') ? watchArgs('eth0', { cli: cmds.guest }) : undefined;
    let argv: string[];
    const nodeOptions: Record<string, string> = {};
    if (!provider) {
      argv = [cmds.watch, ...uplinkGroup!];
    } else {
      // The agent's V8 settings as the unit sets them, on the agent's own command line (V8 flags
      // like --lite-mode are refused in NODE_OPTIONS): node's where the agent is node itself, the
      // installed wrapper's QUBES_NET_NODE_FLAGS otherwise. Only the agent's: the uplink group's
      // one-shot applies keep Node's defaults.
      const flags = (process.env.QUBES_NET_AGENT_NODE_OPTIONS ?? AGENT_NODE_OPTIONS).split(/\s+/).filter(Boolean);
      const agentCli = cmds.agent[0] === process.execPath ? [cmds.agent[0], ...flags, ...cmds.agent.slice(1)] : ['/usr/bin/env', `QUBES_NET_NODE_FLAGS=${flags.join(' ')}`, ...cmds.agent];
      // Two malloc arenas, as the unit sets (libnftables and koffi run calls on other threads):
      // ~3 MB less RSS for the agent (bench/network-agent).
      nodeOptions.MALLOC_ARENA_MAX = '2';
      // The agent's V8 code cache (its launcher's; systemd's CacheDirectory= under a unit): the
      // lab's own directory, shared by its qubes' agents, nothing written outside the lab.
      nodeOptions.CACHE_DIRECTORY = join(this.stateDir, 'v8-cache');
      // Every network qube of the lab filters its clients (the firewall service on, as Qubes sets it for providers).
      const agentGroup = agentWatchArgs({ cli: agentCli, uplinks: ['eth0'], runArgs: ['--idle-exit', String(this.idleExitMs), '--firewall', 'on'] });
      argv = [cmds.watch, ...(uplinkGroup ? combinedWatchArgs(agentGroup, uplinkGroup) : agentGroup)];
      // The agent-only watcher (started before the uplink existed) gives way to the combined one.
      const alone = rq.agents.get('agent');
      if (alone?.running) await alone.stop();
    }
    const proc = await startInQube(rq.ns, provider ? 'agent' : role, argv, join(rq.logDir, `${provider ? 'agent' : role}.log`), { env: { ...env, ...nodeOptions } });
    const roles: AgentRole[] = provider ? (uplinkGroup ? ['agent', 'guest'] : ['agent']) : [role];
    for (const r of roles) rq.agents.set(r, proc);
    proc.exited.then((e) => {
      if (proc.stopping) return;
      this.log.error({ qube: rq.name, agent: roles.join('+'), code: e.code, signal: e.signal, logFile: proc.logFile }, 'agent exited');
      this.restartAgentLater(rq, roles[0]!, proc);
    });
    if (provider && role === 'guest' && !existing) {
      await this.waitAgentReady(rq);
      this.progress({ qube: rq.name, step: 'network agent ready (started on demand by its watcher)' });
    }
    return proc;
  }

  /**
   * An agent that died on its own is started again, as systemd does for the agents' units;
   * the kernel state it left keeps traffic flowing meanwhile. Not when the whole domain is
   * going away (its QubesDB daemon is dead too, or the lab stopped it).
   */
  private restartAgentLater(rq: RunningQube, role: AgentRole, dead: QubeProcess): void {
    const now = Date.now();
    const recent = (rq.restarts.get(role) ?? []).filter((t) => now - t < RESTART_WINDOW_MS);
    if (recent.length >= RESTART_LIMIT) {
      this.log.error({ qube: rq.name, agent: role, restarts: recent.length }, 'agent keeps failing; not restarting it');
      return;
    }
    rq.restarts.set(role, [...recent, now]);
    const timer = setTimeout(() => {
      if (this.destroyed || this.running.get(rq.name) !== rq || !rq.qdbDaemon.running || rq.agents.get(role) !== dead) return;
      this.startAgent(rq, role).then(
        (p) => this.progress({ qube: rq.name, step: 'agent restarted', detail: `${role} pid ${p.pid}` }),
        (err) => this.log.error({ qube: rq.name, agent: role, err: String(err) }, 'agent restart failed'),
      );
    }, RESTART_DELAY_MS);
    timer.unref();
  }

  /** Asks the agent's socket for status until the agent (started by that very request) is ready. */
  async waitAgentReady(rq: RunningQube): Promise<void> {
    const watcher = rq.agents.get('agent')!;
    await waitUntil(`the network agent's control socket in ${rq.name}`, async () => {
      if (!watcher.running) throw new Error(`the agent's watcher in ${rq.name} exited (code ${watcher.exit?.code}; log ${watcher.logFile})`);
      const r = await sendAgentRequest(rq.ns, { op: 'status' }, 10_000).catch(() => undefined);
      return r?.ok === true && (r.details as { ready?: boolean }).ready === true;
    }, { timeoutMs: this.waitTimeoutMs });
  }

  // ---------------------------------------------------------------- faults

  /**
   * A QubesDB daemon restart in the qube, as qubes-db.service's Restart= gives after a crash
   * (`kill`: SIGKILL) or an administrator's restart (`stop`: SIGTERM): the new daemon starts
   * empty, then dom0 writes its keys for this qube again (its own entries and, for a network
   * qube, every attached client's entries with the firewall marker last). The agents and the
   * lab's own client reconnect by themselves; the agents' feedback keys are rewritten only
   * when they next report. Returns the new daemon's pid.
   */
  async restartQubesDB(name: string, how: 'kill' | 'stop' = 'kill'): Promise<number> {
    const rq = this.runningQube(name);
    if (how === 'kill') await rq.qdbDaemon.kill();
    else await rq.qdbDaemon.stop();
    rq.qdbDaemon = await startInQube(rq.ns, 'qubesdb', [...this.agentCommands.qubesdbDaemon, '--ready-fd', '3'], join(rq.logDir, 'qubesdb.log'), { readyFd: true });
    this.progress({ qube: name, step: 'QubesDB daemon restarted (empty)', detail: `pid ${rq.qdbDaemon.pid}` });
    await this.rewriteDom0Entries(name);
    this.progress({ qube: name, step: "dom0's keys written again" });
    await this.saveState();
    return rq.qdbDaemon.pid;
  }

  /** Everything dom0 keeps in this qube's QubesDB, written again (after a daemon restart). */
  async rewriteDom0Entries(name: string): Promise<void> {
    const rq = this.runningQube(name);
    await applyOps(rq.db, ownEntriesOps(this.model, name));
    for (const c of this.attachedClients(name)) await applyOps(rq.db, providerPreAttachOps(this.model, c.name));
    await this.writeConnectedIps(name);
  }

  /**
   * SIGKILLs a resident process of the qube (`guest`: the uplink watcher, `agent`: the agent's
   * activating watcher) and starts it again as systemd does for a failed unit with Restart=:
   * what is left in its cgroup (`cgroupPids`, e.g. the agent it had started) gets SIGTERM
   * (KillMode=control-group), SIGKILL after 10 s, and only once they are gone does the unit
   * start again, after RestartSec. Returns the new process.
   */
  async crashResident(name: string, role: AgentRole, cgroupPids: readonly number[] = []): Promise<QubeProcess> {
    const rq = this.runningQube(name);
    const p = rq.agents.get(role);
    if (!p?.running) throw new Error(`${name} has no running ${role} process`);
    p.stopping = true; // the restart below is this one, not the generic on-failure path
    p.child.kill('SIGKILL');
    await p.exited;
    this.progress({ qube: name, step: `${role} process killed (SIGKILL)`, detail: `pid ${p.pid}` });
    await stopPids(cgroupPids, 10_000);
    await sleep(RESTART_DELAY_MS);
    const back = await this.startAgent(rq, role);
    if (role === 'agent') await this.waitAgentReady(rq);
    this.progress({ qube: name, step: `${role} process started again`, detail: `pid ${back.pid}` });
    return back;
  }

  /** Stops a resident process the way `systemctl restart` does (SIGTERM, wait, start). */
  async restartResident(name: string, role: AgentRole): Promise<QubeProcess> {
    const rq = this.runningQube(name);
    await rq.agents.get(role)?.stop();
    const p = await this.startAgent(rq, role);
    if (role === 'agent') await this.waitAgentReady(rq);
    return p;
  }

  // ---------------------------------------------------------------- QubesDB pushes

  /** Rewrites the qube's own entries (removing managed keys no longer wanted). */
  async writeOwnEntries(name: string): Promise<void> {
    const rq = this.runningQube(name);
    const ops = ownEntriesOps(this.model, name, await readOwnManaged(rq.db));
    await applyOps(rq.db, ops);
  }

  async writeConnectedIps(provider: string): Promise<void> {
    const rp = this.running.get(provider);
    if (rp) await applyOps(rp.db, connectedIpsOps(this.model, provider));
  }

  /** reload_firewall_for_vm: the client's rules into its provider, marker last. */
  async pushFirewall(client: string): Promise<void> {
    const rc = this.running.get(client);
    const rp = rc?.vif ? this.running.get(rc.vif.provider) : undefined;
    if (!rc || !rp) return;
    await applyOps(rp.db, firewallOps(this.model, client));
    this.scheduleExpiry(client);
  }

  /** dom0 reloads a qube's firewall at its nearest rule expiry. */
  private scheduleExpiry(client: string): void {
    this.clearExpiry(client);
    const at = nextExpiry(this.spec(client).firewall);
    if (at === undefined) return;
    const timer = setTimeout(() => {
      this.expiryTimers.delete(client);
      this.serialize(() => this.pushFirewall(client)).catch((err) => this.log.error({ qube: client, err: String(err) }, 'firewall expiry reload failed'));
    }, Math.max(0, at * 1000 - Date.now()) + 50);
    timer.unref();
    this.expiryTimers.set(client, timer);
  }

  private clearExpiry(client: string): void {
    const t = this.expiryTimers.get(client);
    if (t) clearTimeout(t);
    this.expiryTimers.delete(client);
  }

  // ---------------------------------------------------------------- vifs

  /**
   * Plugs the client's vif into its netvm the way dom0 and the toolstack do: provider entries
   * (connected IPs, mapped IP, firewall with its marker) before the vif exists; the veth pair
   * (vif<domid>.0 in the netvm, eth0 in the client); the backend's xenstore entries; then the
   * hotplug script `online` inside the netvm, as xl devd runs it.
   */
  async attachVif(client: string): Promise<void> {
    const spec = this.spec(client);
    const rc = this.runningQube(client);
    if (spec.netvm === null || rc.vif) return;
    const rp = this.runningQube(spec.netvm);
    const vifName = `vif${rc.domid}.0`;
    await applyOps(rp.db, providerPreAttachOps(this.model, client));
    this.scheduleExpiry(client);
    const backend = vifBackendEntries(this.model, client, rp.domid, rc.domid);
    for (const [k, v] of backend.entries) await rp.ns.xenstoreWrite(`${backend.path}/${k}`, v);
    await this.session.link(rp.ns, vifName, rc.ns, 'eth0', { aMac: GATEWAY_MAC, bMac: spec.mac, up: false });
    rc.vif = { provider: rp.name, backendDomid: rp.domid, name: vifName, addresses: realAddresses(this.model, client), keys: networkKeysOf(this.model, client) };
    await this.hotplug(rp, vifName, backend.path, 'online');
    this.progress({ qube: client, step: 'vif plugged', detail: `${vifName} in ${rp.name} ↔ eth0, ${rc.vif.addresses.join(' ')}` });
  }

  /**
   * Unplugs the client's vif: the hotplug script `offline` in the netvm (unless the netvm is
   * gone or dead), the veth pair, the backend's xenstore entries, and the provider's entries
   * for the client's addresses (its rules go, so the address falls to the forward policy).
   */
  async detachVif(client: string, opts: { hotplug?: boolean } = {}): Promise<void> {
    const rc = this.running.get(client);
    const vif = rc?.vif;
    if (!rc || !vif) return;
    const rp = this.running.get(vif.provider);
    const xsPath = `/local/domain/${vif.backendDomid}/backend/vif/${rc.domid}/0`;
    if (rp) {
      if (opts.hotplug ?? true) await this.hotplug(rp, vif.name, xsPath, 'offline').catch((err) => this.log.warn({ qube: rp.name, vif: vif.name, err: String(err) }, 'hotplug offline failed'));
      await this.session.unlink(rp.ns, vif.name);
      await rp.ns.xenstoreRm(xsPath);
      for (const ip of vif.addresses) await applyOps(rp.db, forgetAddressOps(ip)).catch(() => {});
    } else {
      await this.session.unlink(rc.ns, 'eth0').catch(() => {});
    }
    rc.vif = undefined;
    this.clearExpiry(client);
    this.progress({ qube: client, step: 'vif unplugged', detail: `${vif.name} from ${vif.provider}` });
  }

  /**
   * Re-plugs an attached vif after the client's addresses or its provider's gateway changed
   * (ipv6 feature, fake IP): hotplug offline with the old addresses, provider entries for the
   * new ones, then hotplug online; the veth pair (and the client's eth0) stay.
   */
  async replugVif(client: string): Promise<void> {
    const rc = this.runningQube(client);
    const vif = rc.vif;
    if (!vif) return;
    const rp = this.runningQube(vif.provider);
    const xsPath = `/local/domain/${vif.backendDomid}/backend/vif/${rc.domid}/0`;
    await this.hotplug(rp, vif.name, xsPath, 'offline').catch((err) => this.log.warn({ qube: rp.name, vif: vif.name, err: String(err) }, 'hotplug offline failed'));
    const now = realAddresses(this.model, client);
    for (const ip of vif.addresses.filter((a) => !now.includes(a))) await applyOps(rp.db, forgetAddressOps(ip));
    await applyOps(rp.db, providerPreAttachOps(this.model, client));
    const backend = vifBackendEntries(this.model, client, rp.domid, rc.domid);
    for (const [k, v] of backend.entries) await rp.ns.xenstoreWrite(`${backend.path}/${k}`, v);
    vif.addresses = now;
    vif.keys = networkKeysOf(this.model, client);
    await this.hotplug(rp, vif.name, xsPath, 'online');
    this.progress({ qube: client, step: 'vif re-plugged', detail: `${vif.name}: ${now.join(' ')}` });
  }

  /** Whether the client's network keys changed since its vif was plugged. */
  vifOutdated(client: string): boolean {
    const vif = this.running.get(client)?.vif;
    return !!vif && vif.keys !== networkKeysOf(this.model, client);
  }

  private async hotplug(rp: RunningQube, vif: string, xenbusPath: string, command: 'online' | 'offline'): Promise<RunResult> {
    const [cmd, ...args] = this.agentCommands.vifScript;
    const res = await rp.ns.exec(cmd!, [...args, command], {
      env: { ...this.agentCommands.vifScriptEnv, vif, XENBUS_PATH: xenbusPath, command, script: cmd! },
      allowFailure: true,
      timeoutMs: this.waitTimeoutMs,
    });
    const line = JSON.stringify({ time: Date.now(), vif, command, xenbusPath, exitCode: res.exitCode, stdout: forLog(res.stdout, 2000), stderr: forLog(res.stderr, 2000) });
    await appendFile(join(rp.logDir, 'hotplug.log'), line + '\n').catch(() => {});
    if (res.exitCode !== 0) {
      throw new Error(`hotplug ${command} of ${vif} in ${rp.name} failed (exit ${res.exitCode}): ${(res.stderr || res.stdout).trim().slice(0, 500)}`);
    }
    return res;
  }

  // ---------------------------------------------------------------- feedback

  async readFeedback(db: QubesDB, key: string): Promise<Feedback | undefined> {
    return parseFeedback(await db.read(key).catch(() => undefined));
  }

  /** Waits for the guest agent's `/qubes-uplink-status` to report ok (with a generation other than `before`). */
  async waitUplink(name: string, before?: string): Promise<Feedback> {
    const rq = this.runningQube(name);
    let last: string | undefined;
    return waitUntil(`${name}'s guest agent to report its uplink configured (/qubes-uplink-status)`, async () => {
      this.assertAgentsAlive(rq);
      last = await rq.db.read('/qubes-uplink-status');
      const f = parseFeedback(last);
      return f && f.generation !== before && f.state === 'ok' ? f : undefined;
    }, { timeoutMs: this.waitTimeoutMs, lastSeen: () => last });
  }

  /** Waits for the provider's firewall to report the client's rules applied (any outcome but pending). */
  async waitFirewallApplied(client: string, before: Map<string, string | undefined> = new Map()): Promise<Map<string, Feedback>> {
    const rc = this.runningQube(client);
    const vif = rc.vif;
    if (!vif) return new Map();
    const rp = this.runningQube(vif.provider);
    const out = new Map<string, Feedback>();
    for (const ip of vif.addresses) {
      let last: string | undefined;
      const f = await waitUntil(`${rp.name}'s firewall to apply ${client}'s rules for ${ip} (/qubes-firewall-applied/${ip})`, async () => {
        this.assertAgentsAlive(rp);
        last = await rp.db.read(`/qubes-firewall-applied/${ip}`);
        const fb = parseFeedback(last);
        return fb && fb.generation !== before.get(ip) ? fb : undefined;
      }, { timeoutMs: this.waitTimeoutMs, lastSeen: () => last });
      out.set(ip, f);
    }
    return out;
  }

  /** Current firewall generations for the client's addresses (to wait for a newer one). */
  async firewallGenerations(client: string): Promise<Map<string, string | undefined>> {
    const rc = this.running.get(client);
    const rp = rc?.vif ? this.running.get(rc.vif.provider) : undefined;
    const out = new Map<string, string | undefined>();
    if (!rc?.vif || !rp) return out;
    for (const ip of realAddresses(this.model, client)) out.set(ip, (await this.readFeedback(rp.db, `/qubes-firewall-applied/${ip}`))?.generation);
    return out;
  }

  /** The guest agent's current uplink generation (to wait for a newer one). */
  async uplinkGeneration(name: string): Promise<string | undefined> {
    const rq = this.running.get(name);
    return rq ? (await this.readFeedback(rq.db, '/qubes-uplink-status'))?.generation : undefined;
  }

  /** Waits for the driver to report the vif online in the provider's QubesDB. */
  async waitVifOnline(client: string): Promise<void> {
    const rc = this.runningQube(client);
    const vif = rc.vif;
    if (!vif) return;
    const rp = this.runningQube(vif.provider);
    let last: string | undefined;
    await waitUntil(`${rp.name}'s driver to report ${vif.name} online (/qubes-vif/${vif.name}/state)`, async () => {
      this.assertAgentsAlive(rp);
      last = await rp.db.read(`/qubes-vif/${vif.name}/state`);
      if (last === 'error') throw new Error(`${rp.name}'s driver reports ${vif.name} in error: ${await rp.db.read(`/qubes-vif/${vif.name}/detail`)}`);
      return last === 'online';
    }, { timeoutMs: this.waitTimeoutMs, lastSeen: () => last });
  }

  /** A qube is ready when its vif is online, its uplink configured and its firewall applied. */
  async waitQubeReady(name: string, opts: { uplinkBefore?: string; firewallBefore?: Map<string, string | undefined> } = {}): Promise<void> {
    const rq = this.runningQube(name);
    if (!rq.vif) return;
    await this.waitVifOnline(name);
    await this.waitFirewallApplied(name, opts.firewallBefore);
    await this.waitUplink(name, opts.uplinkBefore);
  }

  private assertAgentsAlive(rq: RunningQube): void {
    for (const p of rq.agents.values()) {
      if (!p.running && !p.stopping) throw new Error(`the ${p.role} agent in ${rq.name} exited (code ${p.exit?.code}, signal ${p.exit?.signal}); see ${p.logFile}`);
    }
  }

  // ---------------------------------------------------------------- misc

  async exec(name: string, argv: readonly string[], opts: { allowFailure?: boolean; timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
    const rq = this.runningQube(name);
    return rq.ns.exec(argv[0]!, argv.slice(1) as string[], { allowFailure: opts.allowFailure ?? true, timeoutMs: opts.timeoutMs ?? 30_000, ...(opts.input !== undefined ? { input: opts.input } : {}) });
  }

  /** The state file other CLI invocations read (exec needs the namespace files). */
  async saveState(extra: Record<string, unknown> = {}): Promise<void> {
    const qubes: Record<string, unknown> = {};
    for (const rq of this.running.values()) {
      qubes[rq.name] = {
        domid: rq.domid,
        netns: rq.ns.netns,
        netnsFile: rq.ns.netnsFile,
        mntFile: rq.ns.mntFile,
        commandPrefix: rq.ns.commandPrefix(),
        vif: rq.vif ?? null,
        logDir: rq.logDir,
        processes: Object.fromEntries(([['qubesdb', rq.qdbDaemon], ...rq.agents] as Array<[string, QubeProcess]>).map(([role, p]) => [role, { pid: p.pid, log: p.logFile, running: p.running }])),
      };
    }
    const state = {
      lab: this.model.name,
      session: this.session.id,
      supervisorPid: process.pid,
      stateDir: this.stateDir,
      internet: this.internet.describe(),
      model: modelToJSON(this.model),
      running: qubes,
      ...extra,
    };
    const file = join(this.stateDir, 'state.json');
    await writeFile(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n');
    await rename(`${file}.tmp`, file);
  }

  /** Tears everything down: every qube (clients first), the fake internet, the session. */
  async destroy(opts: { keepStateDir?: boolean } = {}): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const t of this.expiryTimers.values()) clearTimeout(t);
    this.expiryTimers.clear();
    for (const rq of this.running.values()) {
      for (const p of [...rq.agents.values(), rq.qdbDaemon]) p.stopping = true;
      await rq.db.close().catch(() => {});
    }
    await Promise.all([...this.running.values()].flatMap((rq) => [...rq.agents.values(), rq.qdbDaemon].map((p) => p.kill())));
    this.running.clear();
    await this.internet.stop().catch(() => {});
    await this.session.destroy();
    if (!opts.keepStateDir) await rm(this.stateDir, { recursive: true, force: true });
    this.progress({ step: 'lab removed' });
  }
}

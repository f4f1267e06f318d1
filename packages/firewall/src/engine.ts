// The firewall's control loop: QubesDB events in, one nft transaction per qube (or per batch
// of qubes at load) out, then conntrack cuts and feedback. All work runs through one serial
// queue, so two updates of the same qube never interleave; kernel and QubesDB access come in
// through ports, so the logic is testable without either.
import { forLog, type Logger } from '@qubes-net/common';
import { NftTransaction, type NftApplyResult, type NftJson } from '@qubes-net/common/kernel';
import type { QubesDB } from '@qubes-net/qubesdb';
import { FIREWALL_PREFIX, markerTarget, parseQubeEntries, parseTarget, describeErrors, type Target } from './model/parse.js';
import { addDnsSet, addQubeRemoval, addQubeUpdate, blockAllRules, compileQube, outcomeSummary, type CompiledQube, type HostResolution } from './model/compile.js';
import { forbiddenConnections, type Connection } from './model/conntrack-match.js';
import { refreshDelayMs, failedRetryDelayMs, DEFAULT_REFRESH, type RefreshBounds } from './model/refresh.js';
import { addStaleRemoval } from './model/reconcile.js';
import { sameServers, type DnsServers } from './model/resolv-conf.js';
import type { Family } from './model/skeleton.js';
import { ensureFirewallTables, firewallTablesTransaction } from './kernel/tables.js';
import { readFamilyState } from './kernel/nft.js';
import type { ParsedQube, Rule } from './model/rules.js';
import { NameCache } from './name-cache.js';
import { createDesktopNotifier, type Alert, type AlertSink } from './notify.js';
import { clearFeedback, readHandledCounter, writeApplyFeedback } from './feedback.js';

export type ApplyResult = NftApplyResult;

/**
 * Everything the engine does to the kernel: nft through the one writer's interface (the real
 * writer, or common's FakeKernel in unit tests), and conntrack.
 */
export interface KernelPort {
  apply(tx: NftTransaction): Promise<NftApplyResult>;
  /** `nft -j list …`; undefined when the object does not exist. */
  list(what: readonly string[]): Promise<NftJson | undefined>;
  /** Connections whose original source is `src`, or all of the family without `src`. */
  listConnections(family: Family, src?: string): Promise<{ ok: boolean; conns: Connection[]; error?: string }>;
  deleteConnection(conn: Connection): Promise<{ ok: boolean; error?: string }>;
}

export interface EngineOptions {
  db: QubesDB;
  log: Logger;
  kernel: KernelPort;
  resolve(host: string, family: Family, servers: readonly string[]): Promise<HostResolution>;
  readDnsServers(): Promise<DnsServers>;
  refresh?: RefreshBounds;
  /** Qubes per nft transaction when many are applied at once. */
  batchSize?: number;
  /** Above this many qubes in one pass, conntrack is listed once for all instead of per qube. */
  bulkConntrackFrom?: number;
  now?: () => number;
  /** Called whenever a round of work has finished (the daemon refreshes its status file). */
  onSettled?: () => void;
  /**
   * Where alerts about rules not in force go (blocked or partial qubes). Default: a desktop
   * notification to QubesDB's /default-user, as upstream (createDesktopNotifier; it does
   * nothing where notify-send is not installed). false: the log only.
   */
  notify?: AlertSink | false;
  /**
   * How long a qube stays "being rewritten" (rule keys changed, marker not yet written)
   * before the engine stops waiting for its marker and applies what QubesDB holds: a marker
   * event lost with a dropped watch connection must not keep old rules in force.
   */
  writingTimeoutMs?: number;
}

export const CONNECTED_IPS = ['/connected-ips', '/connected-ips6'] as const;
export const WATCH_PATHS = [FIREWALL_PREFIX, ...CONNECTED_IPS] as const;

interface QubeState {
  target: Target;
  parsed: ParsedQube;
  compiled: CompiledQube;
  /** The rendered update transaction (to tell whether a refresh changes anything). */
  script: string;
  generation: number;
  appliedAt: number;
  resolutions: HostResolution[];
  /** The same answers by name (which names failed, for their retries). */
  resolved: ReadonlyMap<string, HostResolution>;
  timer?: NodeJS.Timeout;
  nextRefreshAt?: number;
  /** When the shortest TTL among the names that did resolve runs out. */
  okDueAt?: number;
}

export interface QubeStatus {
  ip: string;
  family: Family;
  outcome: string;
  reasons: string[];
  notes: string[];
  generation: number;
  rules: number;
  appliedAt: string;
  nextRefreshAt?: string;
  hosts: Record<string, string[]>;
  connected: boolean;
}

export interface EngineStatus {
  dnsServers: DnsServers;
  qubes: QubeStatus[];
  connectedWithoutRules: string[];
  pending: number;
  lastSync?: string;
}

type Mode = 'marker' | 'refresh';

interface Prepared {
  target: Target;
  parsed: ParsedQube;
  mode: Mode;
  /**
   * Rules not in force are announced on the desktop when dom0 wrote them (a marker), at start
   * and on reload, as upstream does each time it handles a qube; a resync for another cause
   * (watch reconnect, after a failure) or a TTL refresh announces only a changed outcome.
   */
  announce?: boolean;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  });
  await Promise.all(workers);
  return out;
}

function hostsOf(parsed: ParsedQube): string[] {
  if (!parsed.ok) return [];
  const names = parsed.rules.map((r: Rule) => (r.dst?.kind === 'host' ? r.dst.name : undefined)).filter((n): n is string => !!n);
  return [...new Set(names)];
}

export class FirewallEngine {
  private readonly db: QubesDB;
  private readonly log: Logger;
  private readonly kernel: KernelPort;
  private readonly bounds: RefreshBounds;
  private readonly batchSize: number;
  private readonly bulkFrom: number;
  private readonly now: () => number;
  private readonly names: NameCache;
  private readonly readDnsServers: () => Promise<DnsServers>;
  private readonly onSettled: (() => void) | undefined;
  private readonly alert: AlertSink | undefined;
  private dns: DnsServers = { v4: [], v6: [] };

  private readonly qubes = new Map<string, QubeState>();
  /** Qubes whose rules dom0 is rewriting (rule keys changed, marker not yet written) → since. */
  private readonly writing = new Map<string, number>();
  private readonly writingTimers = new Map<string, NodeJS.Timeout>();
  private readonly writingTimeoutMs: number;
  private readonly pending = new Map<string, Mode>();
  private syncRequested: string | undefined;
  private dnsCheckRequested = false;
  private running: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private connected = new Set<string>();
  private lastSync: number | undefined;
  private stopped = false;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(opts: EngineOptions) {
    this.db = opts.db;
    this.log = opts.log;
    this.kernel = opts.kernel;
    this.bounds = opts.refresh ?? DEFAULT_REFRESH;
    this.batchSize = opts.batchSize ?? 250;
    this.bulkFrom = opts.bulkConntrackFrom ?? 16;
    this.now = opts.now ?? Date.now;
    this.readDnsServers = opts.readDnsServers;
    this.onSettled = opts.onSettled;
    this.writingTimeoutMs = opts.writingTimeoutMs ?? 10_000;
    this.alert = opts.notify === false ? undefined : (opts.notify ?? createDesktopNotifier({ db: opts.db, log: opts.log.child({ part: 'alert' }) }));
    // Any of this VM's resolvers answers for both record types (A and AAAA).
    this.names = new NameCache((host, family) => opts.resolve(host, family, [...this.dns.v4, ...this.dns.v6]), this.bounds, this.now);
  }

  // ---- inputs ----

  /** The initial load: this VM's DNS servers into dns-addr, then every qube's rules. */
  async start(): Promise<void> {
    // Where the daemon did not do it before the hooks (the network agent), `forward`'s rules
    // are added now, at its top; a table that holds them already is left as it is.
    const tables = await ensureFirewallTables(this.kernel).catch((e): ApplyResult & { built: Family[] } => ({ ok: false, code: 'failed', error: String((e as Error)?.message ?? e), built: [] }));
    if (!tables.ok) this.log.error({ error: forLog(tables.error, 500) }, 'cannot complete the firewall tables');
    else if (tables.built.length) this.log.info({ families: tables.built }, 'forward chain rules added');
    await this.loadDnsServers(true);
    await this.readConnected();
    this.requestSync('start');
    await this.idle();
  }

  /** SIGHUP: re-read resolv.conf, forget resolved names, re-apply every qube. */
  reload(): Promise<void> {
    this.names.clear();
    // A marker missed earlier must not keep a qube's old rules: trust what QubesDB holds now.
    this.clearWriting('reload');
    this.dnsCheckRequested = true;
    this.requestSync('reload');
    return this.idle();
  }

  /**
   * resolv.conf or the uplink may have changed: if the servers did, re-resolve every name and
   * re-check flows; if not, retry the names that failed.
   */
  dnsMaybeChanged(): void {
    this.dnsCheckRequested = true;
    this.kick();
  }

  /** One path reported by the QubesDB watch. */
  onWatchEvent(path: string): void {
    if ((CONNECTED_IPS as readonly string[]).includes(path)) {
      void this.readConnected();
      return;
    }
    if (path === FIREWALL_PREFIX || path === FIREWALL_PREFIX.slice(0, -1)) {
      // The whole directory changed, or the watch reconnected and events may be lost (a
      // marker among them): "writing" states are stale, a marker present now is trusted.
      this.clearWriting('watch');
      this.requestSync('watch');
      return;
    }
    if (!path.startsWith(FIREWALL_PREFIX)) return;
    const marker = markerTarget(path);
    if (marker !== undefined) {
      this.endWriting(marker);
      this.pending.set(marker, 'marker');
      this.kick();
      return;
    }
    // A rule key or the rm of a qube's directory: dom0 is rewriting; its marker comes last.
    const addr = path.slice(FIREWALL_PREFIX.length).split('/')[0]!;
    if (addr) this.startWriting(addr);
  }

  private startWriting(addr: string): void {
    if (this.writing.has(addr) || this.stopped) return;
    this.writing.set(addr, this.now());
    const timer = setTimeout(() => {
      if (!this.writingTimers.has(addr)) return;
      this.endWriting(addr);
      this.log.warn({ ip: addr, waitedMs: this.writingTimeoutMs }, 'rules changed without a marker: applying what QubesDB holds');
      this.pending.set(addr, 'marker');
      this.kick();
    }, this.writingTimeoutMs);
    timer.unref?.();
    this.writingTimers.set(addr, timer);
  }

  private endWriting(addr: string): void {
    this.writing.delete(addr);
    clearTimeout(this.writingTimers.get(addr));
    this.writingTimers.delete(addr);
  }

  private clearWriting(reason: string): void {
    if (this.writing.size) this.log.info({ reason, qubes: [...this.writing.keys()].slice(0, 20) }, 'forgetting unfinished rewrites');
    for (const addr of [...this.writing.keys()]) this.endWriting(addr);
  }

  /** Resolves when no work is queued or running. */
  idle(): Promise<void> {
    // Retries of failed names run outside the queue and are not waited for: one may hang on a
    // dead DNS path until its deadline; its answer, when good, queues the qube.
    if (!this.running && !this.hasWork()) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    for (const addr of [...this.writing.keys()]) this.endWriting(addr);
    for (const q of this.qubes.values()) clearTimeout(q.timer);
    await this.running;
  }

  status(): EngineStatus {
    const qubes = [...this.qubes.values()].map((q): QubeStatus => {
      const s: QubeStatus = {
        ip: q.target.addr,
        family: q.target.family,
        outcome: q.compiled.outcome,
        reasons: q.compiled.reasons,
        notes: q.compiled.notes,
        generation: q.generation,
        rules: q.compiled.rules.length,
        appliedAt: new Date(q.appliedAt).toISOString(),
        hosts: Object.fromEntries(q.compiled.hosts),
        connected: this.connected.has(q.target.addr),
      };
      if (q.nextRefreshAt !== undefined) s.nextRefreshAt = new Date(q.nextRefreshAt).toISOString();
      return s;
    });
    qubes.sort((a, b) => (a.ip < b.ip ? -1 : 1));
    const st: EngineStatus = {
      dnsServers: this.dns,
      qubes,
      connectedWithoutRules: [...this.connected].filter((ip) => !this.qubes.has(ip)).sort(),
      pending: this.pending.size,
    };
    if (this.lastSync !== undefined) st.lastSync = new Date(this.lastSync).toISOString();
    return st;
  }

  // ---- the queue ----

  private requestSync(reason: string): void {
    this.syncRequested = this.syncRequested ?? reason;
    this.kick();
  }

  private hasWork(): boolean {
    return !this.stopped && (this.syncRequested !== undefined || this.dnsCheckRequested || this.pending.size > 0);
  }

  private kick(): void {
    if (this.running || this.stopped) return;
    this.running = this.loop()
      .catch((e) => {
        // Whatever was being applied may be half-known now: resynchronise everything soon.
        this.log.error({ err: forLog((e as Error)?.stack ?? e, 2000) }, 'firewall loop failed; full resync in 1 s');
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.requestSync('after failure'), 1_000);
        this.retryTimer.unref?.();
      })
      .finally(() => {
        this.running = undefined;
        if (this.hasWork()) this.kick();
        else {
          for (const w of this.idleWaiters.splice(0)) w();
          this.onSettled?.();
        }
      });
  }

  private async loop(): Promise<void> {
    while (this.hasWork()) {
      if (this.dnsCheckRequested) {
        this.dnsCheckRequested = false;
        await this.loadDnsServers(false);
      } else if (this.syncRequested !== undefined) {
        const reason = this.syncRequested;
        this.syncRequested = undefined;
        this.pending.clear();
        await this.syncAll(reason);
      } else {
        const batch = [...this.pending].slice(0, this.batchSize);
        for (const [addr] of batch) this.pending.delete(addr);
        await this.processTargets(batch);
      }
    }
  }

  // ---- DNS servers ----

  private async loadDnsServers(initial: boolean): Promise<void> {
    const servers = await this.readDnsServers();
    if (!initial && sameServers(servers, this.dns)) {
      // Same servers, but something on the DNS path or the uplink changed (this is how the
      // agent's DNS/uplink sync arrives): names that failed are worth a try now, not at the
      // end of their back-off.
      this.retryFailedNames();
      return;
    }
    const tx = addDnsSet(addDnsSet(new NftTransaction(), 4, servers.v4), 6, servers.v6);
    const res = await this.applyWithSkeletonRecovery(tx, servers);
    if (!res.ok) {
      // Not committed: this.dns keeps what the kernel holds, so the next check tries again.
      this.log.error({ error: forLog(res.error, 500), v4: servers.v4, v6: servers.v6 }, 'dns-addr update failed; retrying in 1 s');
      this.retryDnsSoon();
      return;
    }
    this.dns = servers;
    this.log.info({ v4: servers.v4, v6: servers.v6 }, initial ? 'dns servers loaded' : 'dns servers changed');
    if (initial) return;
    // New upstream DNS: names may resolve differently now, and flows to the old servers
    // that only specialtarget=dns allowed must not survive.
    this.names.clear();
    for (const q of this.qubes.values()) if (hostsOf(q.parsed).length && !this.pending.has(q.target.addr)) this.pending.set(q.target.addr, 'refresh');
    await this.cutForbidden([...this.qubes.values()].map((q) => q.compiled));
  }

  /** Retries now every name that did not resolve (fresh lookups, outside the queue). */
  private retryFailedNames(): void {
    const failing = [...this.qubes.values()].filter((q) => q.resolutions.some((r) => !r.ok));
    if (failing.length === 0) return;
    this.names.forgetFailures();
    this.log.info({ qubes: failing.length }, 'dns/uplink sync: retrying names that did not resolve');
    for (const q of failing) this.refreshDue(q.target.addr, true);
  }

  private dnsRetryTimer: NodeJS.Timeout | undefined;

  private retryDnsSoon(): void {
    if (this.stopped || this.dnsRetryTimer) return;
    this.dnsRetryTimer = setTimeout(() => {
      this.dnsRetryTimer = undefined;
      this.dnsMaybeChanged();
    }, 1_000);
    this.dnsRetryTimer.unref?.();
  }

  private async readConnected(): Promise<void> {
    try {
      const set = new Set<string>();
      for (const key of CONNECTED_IPS) {
        const v = await this.db.read(key);
        for (const ip of (v ?? '').split(' ')) if (parseTarget(ip)) set.add(ip);
      }
      this.connected = set;
    } catch (e) {
      this.log.warn({ err: forLog((e as Error).message) }, 'cannot read connected ips');
    }
  }

  // ---- full sync ----

  private async syncAll(reason: string): Promise<void> {
    let entries: Map<string, string>;
    try {
      entries = await this.db.multiread(FIREWALL_PREFIX);
    } catch (e) {
      this.log.error({ err: forLog((e as Error).message), key: FIREWALL_PREFIX }, 'cannot read firewall rules; retrying');
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.requestSync(reason), 1_000);
      this.retryTimer.unref?.();
      return;
    }
    const markers = new Set<string>();
    const perTarget = new Map<string, Map<string, string>>();
    for (const [path, value] of entries) {
      const marker = markerTarget(path);
      if (marker !== undefined) {
        markers.add(marker);
        continue;
      }
      const addr = path.slice(FIREWALL_PREFIX.length).split('/')[0]!;
      let m = perTarget.get(addr);
      if (!m) perTarget.set(addr, (m = new Map()));
      m.set(path, value);
    }
    const wanted: Target[] = [];
    for (const raw of markers) {
      const target = parseTarget(raw);
      if (!target) {
        this.log.error({ key: forLog(FIREWALL_PREFIX + raw), value: forLog(raw) }, 'invalid firewall target address ignored');
        continue;
      }
      wanted.push(target);
    }
    // Qubes being rewritten by dom0 keep their current rules until their marker arrives (or
    // the rewrite times out). At start, and after a reconnect or reload (which cleared every
    // "writing" state), a marker present is trusted.
    if (reason === 'start') this.clearWriting(reason);
    // After a watch reconnect the database may be a new, empty one (a QubesDB daemon restart)
    // that dom0 has not written again yet: a qube whose rules are in force and whose marker is
    // absent counts as being rewritten (rules kept until its marker, or removed when the
    // rewrite times out), not as removed. Removing at once cut every qube's traffic until
    // dom0's rewrite (seen by the fault suite, test/fault).
    if (reason === 'watch') {
      const present = new Set(wanted.map((t) => t.addr));
      for (const addr of this.qubes.keys()) if (!present.has(addr)) this.startWriting(addr);
    }
    const keep = new Set([...wanted.map((t) => t.addr), ...[...this.writing.keys()].filter((a) => this.qubes.has(a))]);
    await this.removeStale(keep);
    const preps: Prepared[] = wanted
      .filter((t) => !this.writing.has(t.addr))
      .map((target) => ({ target, parsed: parseQubeEntries(target, perTarget.get(target.addr) ?? new Map()), mode: 'marker' as const, announce: reason === 'start' || reason === 'reload' }));
    this.log.info({ reason, qubes: preps.length }, 'loading all rules');
    await this.applyPrepared(preps);
    this.lastSync = this.now();
  }

  /** Removes chains/elements (and feedback) of qubes no longer in QubesDB. */
  private async removeStale(keep: ReadonlySet<string>): Promise<void> {
    const tx = new NftTransaction();
    const gone = new Set<string>();
    for (const family of [4, 6] as const) {
      const state = await readFamilyState(family, this.kernel);
      if (!state.present) continue;
      addStaleRemoval(tx, family, { dispatch: state.dispatch, chains: state.chains.keys() }, keep);
      for (const addr of state.dispatch.keys()) if (!keep.has(addr) && parseTarget(addr)) gone.add(addr);
    }
    for (const addr of this.qubes.keys()) if (!keep.has(addr)) gone.add(addr);
    if (!tx.isEmpty) {
      const res = await this.kernel.apply(tx);
      if (!res.ok) this.log.error({ error: forLog(res.error, 500) }, 'removing stale rules failed');
    }
    for (const addr of gone) {
      this.forget(addr);
      await this.safeFeedback(addr, () => clearFeedback(this.db, addr));
      this.log.info({ ip: addr }, 'rules removed');
    }
  }

  private forget(addr: string): void {
    const q = this.qubes.get(addr);
    if (q) clearTimeout(q.timer);
    this.qubes.delete(addr);
  }

  // ---- per-qube events ----

  private async processTargets(batch: [string, Mode][]): Promise<void> {
    const preps: Prepared[] = [];
    for (const [raw, mode] of batch) {
      const target = parseTarget(raw);
      if (!target) {
        this.log.error({ key: forLog(FIREWALL_PREFIX + raw), value: forLog(raw) }, 'invalid firewall target address ignored');
        continue;
      }
      if (mode === 'refresh') {
        const q = this.qubes.get(target.addr);
        if (q) preps.push({ target, parsed: q.parsed, mode });
        continue;
      }
      // Rule keys changed after this marker: dom0 is writing the next version; its marker
      // (or the rewrite timeout) brings it. Applying now could apply half of it.
      if (this.writing.has(target.addr)) continue;
      try {
        const marker = await this.db.read(FIREWALL_PREFIX + target.addr);
        if (marker === undefined) {
          if (this.writing.has(target.addr)) continue;
          await this.removeQube(target);
          continue;
        }
        const entries = await this.db.multiread(`${FIREWALL_PREFIX}${target.addr}/`);
        if (this.writing.has(target.addr)) {
          this.log.info({ ip: target.addr }, 'rules changed while being read: waiting for the next marker');
          continue;
        }
        preps.push({ target, parsed: parseQubeEntries(target, entries), mode, announce: true });
      } catch (e) {
        // QubesDB unavailable: keep the current rules; the watch reconnect triggers a resync.
        this.log.error({ ip: target.addr, err: forLog((e as Error).message) }, 'cannot read rules; keeping the current ones');
      }
    }
    await this.applyPrepared(preps);
  }

  private async removeQube(target: Target): Promise<void> {
    const res = await this.kernel.apply(addQubeRemoval(new NftTransaction(), target.addr, target.family));
    if (!res.ok) {
      // Its chain may still be in force: keep our record so a full resync retries.
      this.log.error({ ip: target.addr, error: forLog(res.error, 500) }, 'removing rules failed; full resync in 1 s');
      this.resyncSoon();
      return;
    }
    this.forget(target.addr);
    await this.safeFeedback(target.addr, () => clearFeedback(this.db, target.addr));
    this.log.info({ ip: target.addr }, 'rules removed');
  }

  // ---- compile, apply, cut, report ----

  private async resolveAll(preps: readonly Prepared[]): Promise<Map<string, HostResolution>[]> {
    const wanted = new Map<string, [string, Family]>();
    for (const p of preps) for (const h of hostsOf(p.parsed)) wanted.set(`${p.target.family} ${h}`, [h, p.target.family]);
    const results = new Map<string, HostResolution>();
    await mapLimit([...wanted], 32, async ([key, [host, family]]) => {
      const r = await this.names.get(host, family).catch((e): HostResolution => ({ ok: false, error: forLog((e as Error)?.message ?? e) }));
      results.set(key, r);
      if (!r.ok) this.log.warn({ host: forLog(host), family, error: r.error, retryInMs: r.retryInMs }, 'name did not resolve');
    });
    return preps.map((p) => new Map(hostsOf(p.parsed).map((h) => [h, results.get(`${p.target.family} ${h}`)!])));
  }

  private async applyPrepared(preps: readonly Prepared[]): Promise<void> {
    if (preps.length === 0) return;
    for (const p of preps) {
      if (!p.parsed.ok && p.mode === 'marker') {
        this.log.error({ ip: p.target.addr, key: `${FIREWALL_PREFIX}${p.target.addr}/`, errors: describeErrors(p.parsed.errors).slice(0, 1000) }, 'invalid rules: blocking the qube');
      }
    }
    const resolved = await this.resolveAll(preps);
    const items = preps.map((p, i) => {
      const compiled = compileQube(p.parsed, resolved[i]!);
      const tx = addQubeUpdate(new NftTransaction(), compiled);
      return { prep: p, compiled, tx, script: tx.error ? `invalid: ${tx.error.message}` : tx.render(), resolutions: [...resolved[i]!.values()], resolved: resolved[i]! };
    });
    // A TTL refresh that changes nothing needs no transaction and no feedback.
    const todo = items.filter((it) => it.prep.mode === 'marker' || this.qubes.get(it.prep.target.addr)?.script !== it.script);
    for (const it of items) {
      if (todo.includes(it)) continue;
      const q = this.qubes.get(it.prep.target.addr);
      if (q) Object.assign(q, { resolutions: it.resolutions, resolved: it.resolved });
      this.scheduleRefresh(it.prep.target.addr, it.resolutions);
    }

    for (let i = 0; i < todo.length; i += this.batchSize) {
      const batch = todo.slice(i, i + this.batchSize);
      // Each qube's update is whole inside the batch's one transaction: all or nothing.
      const tx = new NftTransaction();
      for (const b of batch) tx.append(b.tx);
      const res = await this.applyWithSkeletonRecovery(tx);
      if (!res.ok) {
        // One qube's rules rejected by nft must not hold the others back: apply one by one.
        if (batch.length > 1) this.log.warn({ qubes: batch.length, error: forLog(res.error, 300) }, 'batch rejected; applying qube by qube');
        for (const it of batch) await this.applyOneFailClosed(it, batch.length > 1 ? undefined : res.error);
      }
    }
    await this.cutForbidden(todo.map((t) => t.compiled));
    for (const it of todo) await this.record(it.prep, it.compiled, it.script, it.resolutions, it.resolved);
  }

  /** Rules, else block-all, else no dispatch element at all (the forward policy drops). */
  private async applyOneFailClosed(it: { prep: Prepared; compiled: CompiledQube; tx: NftTransaction; script: string }, knownError?: string): Promise<void> {
    const first = knownError !== undefined ? { ok: false as const, error: knownError } : await this.kernel.apply(it.tx);
    if (first.ok) return;
    const ip = it.prep.target.addr;
    this.log.error({ ip, error: forLog(first.error, 500) }, 'nft rejected the rules: blocking the qube');
    it.compiled.outcome = 'blocked';
    it.compiled.reasons = [`nft rejected the rules: ${forLog(first.error.split('\n')[0], 200)}`];
    it.compiled.rules = blockAllRules();
    it.compiled.hosts = new Map();
    it.tx = addQubeUpdate(new NftTransaction(), it.compiled);
    it.script = it.tx.render();
    const block = await this.kernel.apply(it.tx);
    if (block.ok) return;
    const removal = await this.kernel.apply(addQubeRemoval(new NftTransaction(), ip, it.prep.target.family));
    if (removal.ok) {
      it.compiled.reasons.push('no chain: forward policy drop');
      return;
    }
    this.log.fatal({ ip, error: forLog(removal.error, 500) }, 'failed to block traffic; full resync in 1 s');
    it.compiled.reasons.push(`failed to block traffic: ${forLog(removal.error.split('\n')[0], 200)}`);
    // What the kernel holds for this qube is unknown: never let a refresh think it is current.
    it.script = 'unknown';
    this.resyncSoon();
  }

  private resyncSoon(): void {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.requestSync('after failure'), 1_000);
    this.retryTimer.unref?.();
  }

  /** Applies a transaction; if our table vanished (someone deleted it), restores it first. */
  private async applyWithSkeletonRecovery(tx: NftTransaction, dns: DnsServers = this.dns): Promise<ApplyResult> {
    const res = await this.kernel.apply(tx);
    if (res.ok || res.code === 'invalid') return res;
    const missing = [];
    for (const family of [4, 6] as const) if (!(await readFamilyState(family, this.kernel)).present) missing.push(family);
    if (missing.length === 0) return res;
    this.log.error({ families: missing }, 'firewall table missing: restoring it');
    const { tx: tables } = await firewallTablesTransaction(this.kernel);
    const skel = await this.kernel.apply(addDnsSet(addDnsSet(tables, 4, dns.v4), 6, dns.v6));
    if (!skel.ok) return skel;
    // Every qube's chain went with the table: rebuild them all after this pass.
    this.requestSync('table restored');
    return this.kernel.apply(tx);
  }

  private async cutForbidden(compiled: readonly CompiledQube[]): Promise<void> {
    if (compiled.length === 0) return;
    const bulk = compiled.length >= this.bulkFrom;
    const all = new Map<Family, Connection[]>();
    if (bulk) {
      for (const family of [4, 6] as const) {
        if (!compiled.some((c) => c.family === family)) continue;
        const res = await this.kernel.listConnections(family);
        if (!res.ok) this.log.warn({ family, error: forLog(res.error) }, 'cannot list connections');
        all.set(family, res.conns);
      }
    }
    for (const c of compiled) {
      let conns: Connection[];
      if (bulk) conns = all.get(c.family) ?? [];
      else {
        const res = await this.kernel.listConnections(c.family, c.addr);
        if (!res.ok) this.log.warn({ ip: c.addr, error: forLog(res.error) }, 'cannot list connections');
        conns = res.conns;
      }
      const servers = c.family === 4 ? this.dns.v4 : this.dns.v6;
      for (const conn of forbiddenConnections(c.rules, c.addr, conns, servers)) {
        const del = await this.kernel.deleteConnection(conn);
        const dst = conn.reply?.src ?? conn.orig.dst;
        const dport = conn.reply?.sport ?? conn.orig.dport;
        if (del.ok) this.log.info({ ip: c.addr, proto: conn.protoName, dst, dport }, 'connection cut');
        else this.log.error({ ip: c.addr, proto: conn.protoName, dst, dport, error: forLog(del.error) }, 'cannot cut connection');
      }
    }
  }

  private async record(prep: Prepared, compiled: CompiledQube, script: string, resolutions: HostResolution[], resolved: ReadonlyMap<string, HostResolution>): Promise<void> {
    const addr = prep.target.addr;
    const previous = this.qubes.get(addr);
    let generation = previous?.generation;
    if (generation === undefined) {
      try {
        generation = await readHandledCounter(this.db, addr);
      } catch {
        generation = 0;
      }
    }
    generation += 1;
    const q: QubeState = { target: prep.target, parsed: prep.parsed, compiled, script, generation, appliedAt: this.now(), resolutions, resolved };
    if (previous) clearTimeout(previous.timer);
    this.qubes.set(addr, q);
    this.scheduleRefresh(addr, resolutions);
    if (compiled.outcome !== 'ok') {
      const changed = previous?.compiled.outcome !== compiled.outcome || previous.compiled.reasons.join('\n') !== compiled.reasons.join('\n');
      if (prep.announce || changed) this.raiseAlert({ ip: addr, outcome: compiled.outcome, reason: compiled.reasons[0] ?? compiled.outcome });
    }
    const fields = { ip: addr, outcome: compiled.outcome, rules: compiled.rules.length, generation, cause: prep.mode };
    if (compiled.outcome === 'ok') this.log.info(fields, 'rules applied');
    else this.log.warn({ ...fields, reasons: compiled.reasons.join('; ').slice(0, 1000) }, 'rules applied');
    // A blocked qube's chain holds no name: like upstream (which applies a drop-only rule set),
    // its /dns/<ip>/ entries go.
    const hosts = compiled.outcome === 'blocked' ? new Map<string, string[]>() : compiled.hosts;
    await this.safeFeedback(addr, () => writeApplyFeedback(this.db, this.log, { addr, family: prep.target.family, generation: generation!, summary: outcomeSummary(compiled), hosts }));
  }

  /** Hands an alert over without waiting: the firewall never blocks on the desktop. */
  private raiseAlert(alert: Alert): void {
    try {
      this.alert?.(alert);
    } catch (e) {
      this.log.error({ ip: alert.ip, err: forLog((e as Error)?.message ?? e) }, 'alert failed');
    }
  }

  private scheduleRefresh(addr: string, resolutions: HostResolution[]): void {
    const q = this.qubes.get(addr);
    if (!q) return;
    clearTimeout(q.timer);
    q.timer = undefined;
    q.nextRefreshAt = undefined;
    const okDelay = refreshDelayMs(resolutions.filter((r) => r.ok), this.bounds);
    q.okDueAt = okDelay === undefined ? undefined : this.now() + okDelay;
    const delay = refreshDelayMs(resolutions, this.bounds);
    if (delay === undefined || this.stopped) return;
    this.setRefreshTimer(q, delay);
  }

  /** The qube's next refresh (or retry) in `delay` ms; nextRefreshAt is the agent's wake deadline. */
  private setRefreshTimer(q: QubeState, delay: number): void {
    clearTimeout(q.timer);
    q.nextRefreshAt = this.now() + delay;
    q.timer = setTimeout(() => this.refreshDue(q.target.addr), delay);
    q.timer.unref?.();
  }

  /**
   * A qube's refresh time came. A TTL that ran out: re-apply through the queue. Only failed
   * names: retry them outside the queue (a lookup on a dead DNS path would hold every other
   * qube's update up to its deadline), the next retry already scheduled from this one's start,
   * so a lookup that began before the DNS came back does not delay the one after it; the qube
   * goes through the queue once a name answers.
   */
  private refreshDue(addr: string, early = false): void {
    const q = this.qubes.get(addr);
    if (!q || this.stopped) return;
    const failed = [...q.resolved].filter(([, r]) => !r.ok).map(([h]) => h);
    if (failed.length === 0 || (q.okDueAt !== undefined && this.now() >= q.okDueAt)) {
      if (!this.pending.has(addr)) this.pending.set(addr, 'refresh');
      this.kick();
      return;
    }
    const family = q.target.family;
    let next = failedRetryDelayMs(Math.min(...failed.map((h) => this.names.failuresOf(h, family))) + 1, this.bounds);
    if (q.okDueAt !== undefined) next = Math.min(next, Math.max(0, q.okDueAt - this.now()));
    // A retry out of turn (a sync) keeps the retry already due sooner: the sync may have come
    // just before the DNS path did.
    if (early && q.nextRefreshAt !== undefined) next = Math.min(next, Math.max(0, q.nextRefreshAt - this.now()));
    this.setRefreshTimer(q, next);
    void Promise.all(failed.map((h) => this.names.probe(h, family).catch((): HostResolution => ({ ok: false, error: 'lookup failed' }))))
      .then((rs) => {
        const answered = rs.some((r) => r.ok);
        const retryInMs = rs.map((r) => (r.ok ? undefined : r.retryInMs)).find((ms) => ms !== undefined);
        this.log.debug({ ip: addr, hosts: failed.slice(0, 10).map((h) => forLog(h)), answered, ...(answered ? {} : { retryInMs }) }, 'retried names that did not resolve');
        if (answered && !this.stopped && this.qubes.get(addr) === q) {
          if (!this.pending.has(addr)) this.pending.set(addr, 'refresh');
          this.kick();
        }
      });
  }

  private async safeFeedback(addr: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.log.error({ ip: addr, err: forLog((e as Error).message) }, 'cannot write feedback');
    }
  }
}

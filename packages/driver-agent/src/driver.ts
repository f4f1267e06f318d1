// The driver: keeps the desired state in memory, turns bursts of vif events into one plan
// each and applies it (one nft transaction, one ip batch), follows the provider's QubesDB
// keys, the DNS upstream and the uplink, and reports every outcome in QubesDB.
//
// Everything that changes the kernel or the in-memory state runs through one serial queue
// (`exclusive`), so a DNS update never interleaves with a vif burst.
import { performance } from 'node:perf_hooks';
import type { Logger } from '@qubes-net/common';
import { forLog } from '@qubes-net/common';
import type { QubesDB } from '@qubes-net/qubesdb';
import { validateVifEvent, type RawVifEvent, type VifEventCheck } from './model/vif-event.js';
import { parseProviderConfig, PROVIDER_KEYS, type ProviderConfig } from './model/provider-config.js';
import { DriverState, planBatch, type EventResult, type Plan, type PlanEvent, type VifRecord } from './model/planner.js';
import { computeDnsMapping, dnsChainStatements, describeDnsRules, sameMapping, type DnsMapping } from './model/dns.js';
import { baseRulesetScript, connectedStatements, OWN_CHAINS, type Family } from './model/ruleset.js';
import { flowtableBaseStatements, flowtableDeviceStatements, flowtableDevicesFromJson, ACCEL_FLOWTABLE } from './model/flowtable.js';
import { nftListJsonFast } from './kernel/process.js';
import { vifKernelState, removalIpLines, removalSysctls, type VifFacts } from './model/vif-state.js';
import { parseFakeIp, mappedAddress, mappedKeys, fakeIpBaseStatements, type FakeIp, type MappedRaw } from './model/fake-ip.js';
import type { VifSpec } from './model/vif-event.js';
import { InputError } from './model/input-error.js';
import { reconcile } from './model/reconcile.js';
import { baseDifferences, type LoadedTables } from './model/base-check.js';
import { parseStoredVifs, recordEntries, VIF_PREFIX, DNS_UPSTREAM_KEY, vifKey } from './model/feedback.js';
import { applyNft, kernelHasFlowtables } from './kernel/nft-writer.js';
import { applyIpLines } from './kernel/ip-writer.js';
import { writeSysctl, readSysctl, vifFacts, kernelHasIPv6, interfaceExists } from './kernel/procfs.js';
import { purgeConntrack } from './kernel/conntrack.js';
import { runHooks } from './kernel/hooks.js';
import { DnsSource } from './kernel/dns-source.js';
import { observe, ownAddresses } from './kernel/observe.js';
import { notifyFirewall } from './kernel/firewall-notify.js';
import { UplinkMonitor, type LinkEvent } from './kernel/uplink-monitor.js';
import { loadFirewallSkeleton } from './firewall-skeleton.js';
import { IdleCollector } from './idle-gc.js';
import { oneShotIo, sessionIo, type KernelIo } from './kernel/kernel-io.js';

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
  /** Keep nft and ip running for per-event changes (the daemon); else one process per change. */
  persistentTools?: boolean;
}

export interface DnsState {
  mapping: DnsMapping;
  source: string;
  servers4: string[];
  rejected: Array<{ server: string; reason: string }>;
}

export interface StatusReport {
  ok: true;
  generation: number;
  vifs: Array<{ vif: string; domid: number; ips: string[]; mac: string; state: string; generation: number; detail: string }>;
  dns: { mode: string; pairs: Array<{ virtual: string; target?: string }>; upstream: string[]; source: string; rejected: Array<{ server: string; reason: string }> } | undefined;
  forwarding: { ipv4: boolean; ipv6: boolean };
  flowtables: boolean;
  firewall: boolean;
  antispoofDrops: { ip: number; ip6: number };
  kernel: { inSync: boolean; differences: string[] };
  /** The daemon's own memory (bytes), for the RSS budget. */
  memory: { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number };
}

interface Pending {
  check: VifEventCheck;
  resolve: (r: EventResult) => void;
}

const WATCHED_KEYS = Object.values(PROVIDER_KEYS);

export class Driver {
  state = new DriverState();
  provider: ProviderConfig = { virtualDns: [], connected4: [], connected6: [], firewallService: false, hardenInterfaces: false, behindQubesProvider: false };
  dns: DnsState | undefined;
  generation = 0;
  flowtables = false;
  ipv6Kernel = true;
  firewallLoaded = false;
  forwarding = { ipv4: false, ipv6: false };

  private readonly log: Logger;
  private readonly qdb: QubesDB;
  private readonly dnsSource: DnsSource;
  private monitor: UplinkMonitor | undefined;
  private pending: Pending[] = [];
  private drainScheduled = false;
  private ready = false;
  private serial: Promise<unknown> = Promise.resolve();
  private watchClose: (() => Promise<void>) | undefined;
  private providerTimer: NodeJS.Timeout | undefined;
  private uplinkTimer: NodeJS.Timeout | undefined;
  private uplinkDevices = new Set<string>();
  private stopped = false;
  /** While a burst is answered: feedback plans to write once the callers have their replies. */
  private deferFeedback: Plan[] | undefined;
  private readonly idle = new IdleCollector();
  private readonly io: KernelIo;

  constructor(private readonly opts: DriverOptions) {
    this.log = opts.log;
    this.qdb = opts.qdb;
    this.io = opts.persistentTools ? sessionIo(opts.log) : oneShotIo;
    this.dnsSource = new DnsSource({ resolvConf: opts.resolvConf, resolved: opts.resolved, ...(opts.resolvedRunDir ? { resolvedRunDir: opts.resolvedRunDir } : {}) });
  }

  /** Runs `fn` after everything queued before it: one writer of kernel and state at a time. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.serial.then(fn, fn);
    this.serial = next.catch(() => undefined);
    return next;
  }

  // ---------------------------------------------------------------- start-up

  /**
   * The daemon's start: provider settings, DNS, then the whole base ruleset with every
   * correction of set elements in one transaction, the per-vif corrections, and only then
   * forwarding. Events that arrive meanwhile wait.
   */
  async start(): Promise<void> {
    await this.exclusive(async () => {
      const t0 = performance.now();
      await this.loadProvider();
      this.ipv6Kernel = kernelHasIPv6();
      this.flowtables = await kernelHasFlowtables();
      this.log.info({ flowtables: this.flowtables, ipv6: this.ipv6Kernel }, this.flowtables ? 'flowtables available' : 'no flowtables in this kernel: forwarding without flow offload');

      const obs = await observe({ ipv6: this.ipv6Kernel });
      const stored = parseStoredVifs(await this.qdb.multiread(VIF_PREFIX));
      for (const e of stored.errors) this.log.error({ ...e.logFields() }, 'invalid vif entry');
      this.generation = stored.maxGeneration + 1;

      // Desired state from our own entries and the kernel: vifs that are gone are forgotten.
      const forget: string[] = [];
      for (const [vif, s] of stored.vifs) {
        const facts = vifFacts(vif);
        if (!facts.exists) {
          forget.push(vif);
          continue;
        }
        if (s.state === 'online' && this.provider.gateway) {
          this.state.setRecord(vif, { spec: s.spec, state: 'online', detail: s.detail, generation: s.generation, applied: await this.storedKernelState(s.spec, facts) });
        } else {
          this.state.setRecord(vif, { spec: s.spec, state: s.state === 'online' ? 'error' : s.state, detail: s.state === 'online' ? 'no valid /qubes-netvm-gateway at start' : s.detail, generation: s.generation });
        }
      }
      for (const vif of obs.kernel.vifLinks.keys()) {
        if (!this.state.vifs.has(vif)) this.log.warn({ vif }, 'vif without an entry: left blocked until its next hotplug event');
      }

      await this.computeDns(obs.ownAddresses, 'start');
      const skeleton = await this.firewallSkeletonIfEnabled();
      const fix = reconcile(this.state, obs.kernel);
      const extra: string[] = [];
      if (this.flowtables) {
        // Only the devices the flowtable lacks: naming one it already has would be refused.
        this.uplinkDevices = new Set(await this.currentUplinks());
        const present = flowtableDevicesFromJson(await nftListJsonFast(['flowtable', 'inet', 'qubes-nat-accel', ACCEL_FLOWTABLE]).catch(() => undefined));
        const want = [...this.uplinkDevices, ...this.state.online().map((r) => r.spec.vif)];
        extra.push(...flowtableBaseStatements(want.filter((d) => !present.includes(d))));
      }
      const script = baseRulesetScript({
        ipv6: this.ipv6Kernel,
        connected4: this.provider.connected4,
        connected6: this.provider.connected6,
        dns: this.dns!.mapping,
        ...(skeleton ? { firewallSkeleton: skeleton } : {}),
        extra: [...fix.nft, ...extra, ...fakeIpBaseStatements(this.state.online().flatMap((r) => (r.applied?.fakeIp ? [{ vif: r.spec.vif, fakeIp: r.applied.fakeIp }] : [])))],
      });
      await applyNft([script]);
      this.firewallLoaded = !!skeleton;
      for (const s of fix.sysctls) this.trySysctl(s, s.vif);
      const ipFailures = await applyIpLines(fix.ip);
      for (const f of ipFailures) if (!f.tolerant) this.log.error({ vif: f.vif, line: f.line, err: f.message }, 'reconcile: ip change refused');
      this.log.info({ vifs: this.state.online().length, corrections: fix.differences.length, ms: Math.round(performance.now() - t0) }, 'base ruleset loaded');
      for (const d of fix.differences) this.log.info({ difference: d }, 'reconcile correction');

      await this.setForwarding();

      for (const vif of forget) await this.qdb.rm(`${VIF_PREFIX}${vif}/`).catch((err) => this.log.error({ vif, err: String(err) }, 'qubesdb rm failed'));
      if (forget.length) this.log.info({ vifs: forget }, 'forgot vifs that no longer exist');
      for (const rec of this.state.vifs.values()) await this.writeRecord(rec);
      await this.writeDnsUpstream();
    });
    this.ready = true;
    this.idle.touch();
    this.scheduleDrain();
  }

  /** Starts following QubesDB, the DNS source and the uplink (daemon only). */
  async follow(): Promise<void> {
    await this.dnsSource.watch(() => void this.dnsChanged('resolv.conf changed').catch((err) => this.log.error({ err: String(err) }, 'dns update failed')));
    this.monitor = new UplinkMonitor((e) => this.onLinkEvent(e), (err) => this.log.warn({ err: err.message }, 'link monitor'));
    this.monitor.start();
    const w = this.qdb.watch(WATCHED_KEYS);
    this.watchClose = () => w.close();
    void (async () => {
      try {
        for await (const path of w) {
          if (this.stopped) break;
          this.log.debug({ key: path }, 'qubesdb key changed');
          clearTimeout(this.providerTimer);
          this.providerTimer = setTimeout(() => void this.exclusive(() => this.providerChanged()).catch((err) => this.log.error({ err: String(err) }, 'provider update failed')), 10);
        }
      } catch (err) {
        if (!this.stopped) this.log.error({ err: String(err) }, 'qubesdb watch ended');
      }
    })();
  }

  /**
   * One-shot mode (hotplug without a daemon): make sure the base ruleset exists, learn the
   * other vifs from QubesDB (for address ownership), nothing more.
   */
  async startOneShot(): Promise<void> {
    await this.exclusive(async () => {
      await this.loadProvider();
      this.ipv6Kernel = kernelHasIPv6();
      const stored = parseStoredVifs(await this.qdb.multiread(VIF_PREFIX));
      for (const e of stored.errors) this.log.error({ ...e.logFields() }, 'invalid vif entry');
      this.generation = stored.maxGeneration + 1;
      for (const [vif, s] of stored.vifs) {
        const facts = vifFacts(vif);
        if (s.state === 'online' && facts.exists && this.provider.gateway) {
          this.state.setRecord(vif, { spec: s.spec, state: 'online', detail: s.detail, generation: s.generation, applied: await this.storedKernelState(s.spec, facts) });
        } else if (facts.exists) {
          this.state.setRecord(vif, { spec: s.spec, state: s.state, detail: s.detail, generation: s.generation });
        }
      }
      // A one-shot run trusts nothing it did not check: the kernel is compared with the
      // stored state first (cheap next to starting Node), so a base ruleset that had to be
      // (re)created gets every stored vif's elements back in the same transaction.
      const obs = await observe({ ipv6: this.ipv6Kernel });
      const fix = reconcile(this.state, obs.kernel);
      const complete = (f: Family) => OWN_CHAINS[f].every((c) => obs.tables.chains[f]?.has(c));
      const skeleton = await this.firewallSkeletonIfEnabled();
      if (!complete('ip') || (this.ipv6Kernel && !complete('ip6')) || (skeleton && !this.firewallLoaded)) {
        await this.computeDns(obs.ownAddresses, 'hotplug');
        await applyNft([baseRulesetScript({ ipv6: this.ipv6Kernel, connected4: this.provider.connected4, connected6: this.provider.connected6, dns: this.dns!.mapping, ...(skeleton ? { firewallSkeleton: skeleton } : {}), extra: fix.nft })]);
        this.firewallLoaded = !!skeleton;
        await this.writeDnsUpstream();
        this.log.info({}, 'base ruleset loaded (no daemon running)');
      } else {
        await applyNft(fix.nft);
        this.firewallLoaded = !!skeleton;
      }
      for (const s of fix.sysctls) this.trySysctl(s, s.vif);
      await applyIpLines(fix.ip);
      for (const d of fix.differences) this.log.info({ difference: d }, 'reconcile correction');
      await this.setForwarding();
    });
    this.ready = true;
  }

  /**
   * `base-ruleset` (every qube, at boot, before any interface is configured): the base
   * tables in one transaction, with the firewall skeleton where that service is on. Touches
   * neither vif elements nor forwarding; the daemon (providers only) does the rest.
   */
  async loadBaseOnly(): Promise<void> {
    await this.exclusive(async () => {
      await this.loadProvider(false);
      this.ipv6Kernel = kernelHasIPv6();
      await this.computeDns(await ownAddresses(), 'base-ruleset');
      const skeleton = await this.firewallSkeletonIfEnabled();
      if (this.provider.firewallService && !skeleton) throw new Error('qubes-firewall service is on but its skeleton cannot be loaded');
      await applyNft([baseRulesetScript({ ipv6: this.ipv6Kernel, connected4: this.provider.connected4, connected6: this.provider.connected6, dns: this.dns!.mapping, ...(skeleton ? { firewallSkeleton: skeleton } : {}) })]);
      this.log.info({ ipv6: this.ipv6Kernel, firewall: !!skeleton, dns: this.dns!.mapping.mode }, 'base ruleset loaded');
    });
  }

  /** Loads the desired state from QubesDB without changing anything (status without a daemon). */
  async startReadOnly(): Promise<void> {
    await this.exclusive(async () => {
      await this.loadProvider();
      this.ipv6Kernel = kernelHasIPv6();
      this.flowtables = await kernelHasFlowtables();
      const stored = parseStoredVifs(await this.qdb.multiread(VIF_PREFIX));
      this.generation = stored.maxGeneration + 1;
      for (const [vif, s] of stored.vifs) {
        const facts = vifFacts(vif);
        const applied = s.state === 'online' && this.provider.gateway ? await this.storedKernelState(s.spec, facts) : undefined;
        this.state.setRecord(vif, { spec: s.spec, state: s.state, detail: s.detail, generation: s.generation, ...(applied ? { applied } : {}) });
      }
      await this.computeDns(await ownAddresses(), 'status');
      this.firewallLoaded = this.provider.firewallService;
      this.forwarding = { ipv4: readSysctl('net/ipv4/ip_forward') === '1', ipv6: readSysctl('net/ipv6/conf/all/forwarding') === '1' };
    });
  }

  async stop(): Promise<void> {
    // Nothing is removed: the kernel keeps enforcing what was configured (fail closed), and a
    // restarted driver picks it up without breaking traffic.
    this.stopped = true;
    this.idle.stop();
    clearTimeout(this.providerTimer);
    clearTimeout(this.uplinkTimer);
    this.dnsSource.close();
    this.monitor?.stop();
    await this.watchClose?.().catch(() => undefined);
    await this.serial.catch(() => undefined);
    this.io.close();
  }

  // ---------------------------------------------------------------- provider settings

  private async readProviderKeys(): Promise<Map<string, string | undefined>> {
    const raw = new Map<string, string | undefined>();
    await Promise.all(WATCHED_KEYS.map(async (k) => raw.set(k, await this.qdb.read(k))));
    return raw;
  }

  /**
   * Reads and validates the provider keys; a rejected gateway keeps the last valid one.
   * `needGateway` false (base-ruleset, which every qube runs): a qube that provides no
   * network has no gateway, and that is no error.
   */
  private async loadProvider(needGateway = true): Promise<void> {
    const { config, errors } = parseProviderConfig(await this.readProviderKeys());
    for (const e of errors) {
      if (!needGateway && e.key === PROVIDER_KEYS.gateway && e.reason.startsWith('missing')) continue;
      this.log.error({ ...e.logFields() }, 'invalid provider setting');
    }
    if (!config.gateway && this.provider.gateway) {
      this.log.error({ key: PROVIDER_KEYS.gateway, kept: this.provider.gateway }, 'keeping the last valid gateway');
      config.gateway = this.provider.gateway;
    }
    if (this.opts.firewall !== 'auto') config.firewallService = this.opts.firewall === 'on';
    this.provider = config;
  }

  /**
   * A vif can arrive before the watch event of the gateway key dom0 has just written (react to
   * state, not to the order of events): with no valid gateway in hand, read that key once more
   * before refusing the vif. Only the gateway is taken here; the rest of the provider's
   * settings follow their watch as usual.
   */
  private async refreshGatewayIfMissing(events: readonly PlanEvent[]): Promise<void> {
    if (this.provider.gateway || !events.some((e) => e.ok && e.op === 'online')) return;
    const { config } = parseProviderConfig(await this.readProviderKeys());
    if (config.gateway) this.provider = { ...this.provider, gateway: config.gateway };
  }

  private async providerChanged(): Promise<void> {
    // A restarted QubesDB daemon starts empty (like upstream's) and our client reports every
    // watched key once: put our feedback back if it is gone.
    if ((await this.qdb.read(DNS_UPSTREAM_KEY).catch(() => '')) === undefined) {
      this.log.warn({ key: DNS_UPSTREAM_KEY }, 'feedback missing from QubesDB (restarted?): writing it again');
      for (const rec of this.state.vifs.values()) await this.writeRecord(rec);
      await this.writeDnsUpstream();
    }
    const before = this.provider;
    await this.loadProvider();
    const p = this.provider;
    const stmts: string[] = [];
    if (before.connected4.join(' ') !== p.connected4.join(' ')) stmts.push(...connectedStatements('ip', p.connected4));
    if (this.ipv6Kernel && before.connected6.join(' ') !== p.connected6.join(' ')) stmts.push(...connectedStatements('ip6', p.connected6));
    if (p.firewallService && !this.firewallLoaded) {
      const sk = await this.firewallSkeletonIfEnabled();
      if (sk) {
        stmts.push(sk.trimEnd());
        this.firewallLoaded = true;
      }
    }
    if (stmts.length) {
      await applyNft(stmts);
      this.log.info({ connected4: p.connected4.length, connected6: p.connected6.length }, 'connected addresses updated');
    }
    if (before.gateway !== p.gateway || before.gateway6 !== p.gateway6 || before.hardenInterfaces !== p.hardenInterfaces) {
      this.log.info({ gateway: p.gateway, gateway6: p.gateway6 }, 'gateway changed: reconfiguring every vif');
      const events: VifEventCheck[] = this.state.online().map((r) => ({ ok: true, op: 'online', spec: r.spec }));
      await this.runBatch(events);
    }
    if (before.virtualDns.join(' ') !== p.virtualDns.join(' ') || before.behindQubesProvider !== p.behindQubesProvider) {
      await this.refreshDnsLocked('virtual DNS addresses changed');
    }
    await this.setForwarding();
  }

  private async firewallSkeletonIfEnabled(): Promise<string | undefined> {
    if (!this.provider.firewallService) return undefined;
    const sk = await loadFirewallSkeleton();
    if (!sk.ok) {
      this.log.error({ err: sk.error }, 'qubes-firewall service is on but its skeleton cannot be loaded: forwarding is not switched on');
      return undefined;
    }
    return sk.script;
  }

  /** IPv4 forwarding once the base (and, if wanted, the firewall's drop policy) is in place. */
  private async setForwarding(): Promise<void> {
    const allowed = !this.provider.firewallService || this.firewallLoaded;
    const want4 = allowed;
    const want6 = allowed && !!this.provider.gateway6 && this.ipv6Kernel;
    if (readSysctl('net/ipv4/ip_forward') !== (want4 ? '1' : '0')) {
      if (want4) {
        writeSysctl({ path: 'net/ipv4/ip_forward', value: '1' });
        this.log.info({}, 'ipv4 forwarding on');
      }
    }
    this.forwarding.ipv4 = readSysctl('net/ipv4/ip_forward') === '1';
    if (this.ipv6Kernel) {
      const cur = readSysctl('net/ipv6/conf/all/forwarding');
      if (cur !== (want6 ? '1' : '0')) {
        try {
          writeSysctl({ path: 'net/ipv6/conf/all/forwarding', value: want6 ? '1' : '0' });
          this.log.info({ gateway6: this.provider.gateway6 }, want6 ? 'ipv6 forwarding on' : 'ipv6 forwarding off');
        } catch (err) {
          this.log.error({ err: String(err) }, 'cannot change ipv6 forwarding');
        }
      }
      this.forwarding.ipv6 = readSysctl('net/ipv6/conf/all/forwarding') === '1';
    }
  }

  // ---------------------------------------------------------------- DNS

  private async computeDns(own: Set<string>, reason: string): Promise<boolean> {
    const src = await this.dnsSource.read();
    for (const e of src.errors) this.log.error({ ...e.logFields() }, 'invalid DNS source');
    for (const a of this.provider.gateway ? [this.provider.gateway] : []) own.add(a);
    const { mapping, rejected } = computeDnsMapping({ virtualDns: this.provider.virtualDns, servers4: src.servers4, ownAddresses: own, behindQubesProvider: this.provider.behindQubesProvider });
    for (const r of rejected) this.log.warn({ server: r.server, reason: r.reason, source: src.source }, 'DNS server not used');
    const changed = !this.dns || !sameMapping(this.dns.mapping, mapping);
    this.dns = { mapping, source: src.source, servers4: src.servers4, rejected };
    if (changed) this.log.info({ reason, mode: mapping.mode, upstream: mapping.upstream, source: src.source }, 'dns mapping computed');
    return changed;
  }

  /** Re-learns the upstream servers; replaces the dnat-dns chain only when the mapping changed. */
  dnsChanged(reason = 'dns-changed'): Promise<{ changed: boolean; dns: DnsState }> {
    return this.exclusive(async () => ({ changed: await this.refreshDnsLocked(reason), dns: this.dns! }));
  }

  private async refreshDnsLocked(reason: string): Promise<boolean> {
    const before = this.dns?.mapping;
    await this.computeDns(await ownAddresses(), reason);
    if (before && sameMapping(before, this.dns!.mapping)) return false;
    await this.io.nft(dnsChainStatements(this.dns!.mapping));
    this.log.info({ reason, mode: this.dns!.mapping.mode, upstream: this.dns!.mapping.upstream, rules: describeDnsRules(this.dns!.mapping) }, 'dns mapping applied');
    await this.writeDnsUpstream();
    const fw = await notifyFirewall(this.opts.firewallPidFile);
    this.log.info({ result: fw, pidFile: this.opts.firewallPidFile }, 'firewall notified of DNS change');
    return true;
  }

  private async writeDnsUpstream(): Promise<void> {
    await this.qdb.write(DNS_UPSTREAM_KEY, this.dns?.mapping.upstream.join(' ') ?? '').catch((err) => this.log.error({ err: String(err), key: DNS_UPSTREAM_KEY }, 'qubesdb write failed'));
  }

  // ---------------------------------------------------------------- uplink

  private async currentUplinks(): Promise<string[]> {
    const { readdir } = await import('node:fs/promises');
    const names = await readdir('/proc/sys/net/ipv4/conf').catch(() => [] as string[]);
    return names.filter((n) => n !== 'all' && n !== 'default' && n !== 'lo' && !/^vif\d/.test(n) && /^[A-Za-z0-9_.-]{1,15}$/.test(n));
  }

  private onLinkEvent(e: LinkEvent): void {
    if (/^vif\d/.test(e.ifname)) {
      if (e.kind === 'link' && e.deleted && this.state.vifs.has(e.ifname)) {
        this.log.info({ vif: e.ifname }, 'vif disappeared');
        void this.submit({ op: 'offline', vif: e.ifname });
      }
      return;
    }
    if (e.ifname === 'lo') return;
    clearTimeout(this.uplinkTimer);
    this.uplinkTimer = setTimeout(() => void this.exclusive(() => this.uplinkChanged(e)).catch((err) => this.log.error({ err: String(err) }, 'uplink update failed')), 50);
  }

  private async uplinkChanged(e: LinkEvent): Promise<void> {
    this.log.info({ ifname: e.ifname, kind: e.kind, deleted: e.deleted }, 'uplink changed');
    if (this.flowtables) {
      const now = new Set(await this.currentUplinks());
      const add = [...now].filter((d) => !this.uplinkDevices.has(d));
      const remove = [...this.uplinkDevices].filter((d) => !now.has(d) && interfaceExists(d));
      this.uplinkDevices = now;
      if (add.length || remove.length) await applyNft(flowtableDeviceStatements(add, remove)).catch((err) => this.log.error({ err: String(err) }, 'flowtable update failed'));
    }
    await this.refreshDnsLocked('uplink changed');
  }

  // ---------------------------------------------------------------- vif events

  /** Validates and queues one event; resolves when its burst has been applied. */
  submit(raw: RawVifEvent): Promise<EventResult> {
    const check = validateVifEvent(raw);
    return new Promise((resolve) => {
      this.pending.push({ check, resolve });
      this.scheduleDrain();
    });
  }

  private scheduleDrain(): void {
    if (this.drainScheduled || !this.ready || this.pending.length === 0) return;
    this.drainScheduled = true;
    const go = () => {
      const batch: Pending[] = [];
      const rest: Pending[] = [];
      const seen = new Set<string>();
      for (const p of this.pending) {
        const vif = p.check.ok ? p.check.spec.vif : p.check.vif;
        if (vif && seen.has(vif)) rest.push(p);
        else {
          if (vif) seen.add(vif);
          batch.push(p);
        }
      }
      this.pending = rest;
      void this.exclusive(async () => {
        this.deferFeedback = [];
        try {
          const results = await this.runBatch(batch.map((p) => p.check));
          // The callers (hotplug clients) are answered as soon as the kernel is configured;
          // the QubesDB feedback follows, still before the next burst.
          batch.forEach((p, i) => p.resolve(results[i]!));
        } finally {
          const plans = this.deferFeedback;
          this.deferFeedback = undefined;
          for (const plan of plans ?? []) await this.feedback(plan);
        }
      })
        .catch((err) => batch.forEach((p) => p.resolve({ ok: false, error: `internal error: ${String(err)}` })))
        .finally(() => {
          this.drainScheduled = false;
          this.idle.touch();
          this.scheduleDrain();
        });
    };
    if (this.opts.batchWindowMs) setTimeout(go, this.opts.batchWindowMs);
    else setImmediate(go);
  }

  /** Plans and applies a burst (caller holds the exclusive lock). Results in event order. */
  private async runBatch(events: readonly PlanEvent[]): Promise<EventResult[]> {
    if (events.length === 0) return [];
    const t0 = performance.now();
    const generation = this.generation++;
    await this.refreshGatewayIfMissing(events);
    const mapped = await this.readMapped(events.flatMap((e) => (e.ok && e.op === 'online' ? [e.spec] : [])));
    const ctx = { provider: this.provider, facts: vifFacts, generation, flowtable: this.flowtables, mapped: (ip: string) => mapped.get(ip) };
    const plan = planBatch(this.state, events, ctx);
    // Sysctls first (proxy_arp before the link comes up; in-kernel writes, no process).
    const failed = new Map<string, string>();
    for (const s of plan.sysctls) if (!this.trySysctl(s, s.vif) && !s.tolerant) failed.set(s.vif, `sysctl ${s.path}`);
    // nft and ip run side by side: whichever finishes first, a vif is never open before its
    // anti-spoofing elements exist (vif* traffic without an element is dropped), so the
    // overlap only saves a process' time.
    let purged: string[] = [];
    const [nftError, ipFailures] = await Promise.all([
      (async () => {
        const purge = await purgeConntrack(plan.purge);
        for (const e of purge.errors) this.log.error({ err: e }, 'conntrack purge failed');
        purged = purge.deleted;
        try {
          await this.io.nft(plan.nft);
          return undefined;
        } catch (err) {
          return err as Error;
        }
      })(),
      this.io.ip(plan.ip),
    ]);
    if (nftError) {
      if (events.length > 1) {
        this.log.warn({ events: events.length, err: String(nftError) }, 'batch refused by nft: applying its events one by one');
        this.generation--;
        const out: EventResult[] = [];
        for (const ev of events) out.push(...(await this.runBatch([ev])));
        return out;
      }
      // One event and nft refused it: none of its elements are in (the transaction is
      // atomic); take its ip changes back so nothing stays half-configured.
      const ev = events[0]!;
      const vif = ev.ok ? ev.spec.vif : ev.vif;
      const attempted = vif ? plan.next.vifs.get(vif)?.applied : undefined;
      if (vif && attempted && vifFacts(vif).exists) {
        await this.io.ip(removalIpLines(attempted).map((line) => ({ line, vif, tolerant: true })));
        for (const s of removalSysctls(attempted)) this.trySysctl(s, vif);
      }
      const failPlan = planBatch(this.state, [{ ok: false, ...(vif ? { vif } : {}), error: nftError }], { ...ctx, facts: () => ({ exists: false, ipv6: false }) });
      await this.io.nft(failPlan.nft).catch(() => undefined);
      this.state = failPlan.next;
      await this.feedback(failPlan);
      this.logResults(failPlan, events);
      return failPlan.results;
    }
    for (const f of ipFailures) {
      if (f.tolerant) this.log.debug({ vif: f.vif, line: f.line, err: f.message }, 'removal already done');
      else if (!failed.has(f.vif)) failed.set(f.vif, `"ip ${f.line}": ${f.message}`);
    }
    this.state = plan.next;
    let finalPlan: Plan = plan;
    if (failed.size) {
      // Roll back every vif the kernel refused: it stays unconfigured, hence blocked.
      const rollback = planBatch(this.state, [...failed].map(([vif, msg]) => ({ ok: false as const, vif, error: new Error(msg) })), { ...ctx, generation });
      await this.io.nft(rollback.nft).catch((err) => this.log.error({ err: String(err) }, 'rollback refused by nft'));
      for (const s of rollback.sysctls) this.trySysctl(s, s.vif);
      await this.io.ip(rollback.ip);
      this.state = rollback.next;
      for (const [vif, rec] of rollback.records) plan.records.set(vif, rec);
      plan.results.forEach((r, i) => {
        if (r.vif && failed.has(r.vif) && r.ok) plan.results[i] = rollback.results.find((x) => x.vif === r.vif)!;
      });
      plan.hooks = plan.hooks.filter((h) => !(h.command === 'online' && failed.has(h.vif)));
      finalPlan = plan;
    }
    const hookFailures = await runHooks(this.opts.hooksDir, finalPlan.hooks);
    for (const h of hookFailures) this.log.warn({ vif: h.vif, hook: h.hook, err: h.message }, 'network hook failed');
    await this.feedback(finalPlan);
    this.logResults(finalPlan, events);
    this.log.debug({ events: events.length, nft: plan.nft.length, ip: plan.ip.length, purged: purged.length, ms: Math.round((performance.now() - t0) * 10) / 10 }, 'batch applied');
    return finalPlan.results;
  }

  /** The provider's `/mapped-ip/<real ip>/…` values for these vifs (fake IP), by real address. */
  private async readMapped(specs: readonly VifSpec[]): Promise<Map<string, MappedRaw>> {
    const out = new Map<string, MappedRaw>();
    await Promise.all(specs.map(async (spec) => {
      const real = mappedAddress(spec);
      if (!real || out.has(real)) return;
      const keys = mappedKeys(real);
      const read = (k: string) => this.qdb.read(k).catch((err) => {
        // Unreadable: no translation, so a client with a fake IP stays blocked (fail closed).
        this.log.error({ vif: spec.vif, key: k, err: String(err) }, 'qubesdb read failed');
        return undefined;
      });
      const [visibleIp, visibleGateway] = await Promise.all([read(keys.visibleIp), read(keys.visibleGateway)]);
      out.set(real, { visibleIp, visibleGateway });
    }));
    return out;
  }

  /** A stored online vif's kernel state, with its fake-IP translation read again from QubesDB. */
  private async storedKernelState(spec: VifSpec, facts: VifFacts): Promise<ReturnType<typeof vifKernelState>> {
    const real = mappedAddress(spec);
    let fake: FakeIp | undefined;
    if (real) {
      const r = parseFakeIp(spec, (await this.readMapped([spec])).get(real), this.provider);
      if (r instanceof InputError) this.log.error({ vif: spec.vif, ...r.logFields() }, 'invalid fake-IP mapping: vif kept without translation');
      else fake = r;
    }
    return vifKernelState(spec, this.provider, facts, fake);
  }

  private trySysctl(s: { path: string; value: string }, vif: string): boolean {
    try {
      writeSysctl(s);
      return true;
    } catch (err) {
      this.log.debug({ vif, err: (err as Error).message }, 'sysctl write failed');
      return false;
    }
  }

  private logResults(plan: Plan, events: readonly PlanEvent[]): void {
    plan.results.forEach((r, i) => {
      const ev = events[i];
      if (r.ok) {
        const rec = r.vif ? plan.records.get(r.vif) : undefined;
        const ip = rec ? [...rec.spec.ipv4, ...rec.spec.ipv6] : [];
        this.log.info({ vif: r.vif, ip, domid: rec?.spec.domid, generation: r.generation, ...(rec?.detail && rec.detail !== 'online' ? { detail: rec.detail } : {}) }, r.state === 'online' ? 'vif online' : r.state === 'gone' ? 'vif gone' : 'vif offline');
      } else if (r.inputError) {
        this.log.error({ vif: r.vif, op: ev?.ok === false && 'op' in ev ? ev.op : undefined, ...r.inputError.logFields() }, 'vif rejected');
      } else {
        this.log.error({ vif: r.vif, err: forLog(r.error, 300) }, 'vif error');
      }
    });
  }

  private async feedback(plan: Plan): Promise<void> {
    if (this.deferFeedback) {
      this.deferFeedback.push(plan);
      return;
    }
    await Promise.all([...plan.records].map(async ([vif, rec]) => {
      if (rec) await this.writeRecord(rec);
      else await this.qdb.rm(`${VIF_PREFIX}${vif}/`).catch((err) => this.log.error({ vif, err: String(err) }, 'qubesdb rm failed'));
    }));
  }

  private async writeRecord(rec: VifRecord): Promise<void> {
    try {
      for (const [k, v] of recordEntries(rec)) await this.qdb.write(k, v);
    } catch (err) {
      this.log.error({ vif: rec.spec.vif, key: vifKey(rec.spec.vif, '*'), err: String(err) }, 'qubesdb write failed');
    }
  }

  // ---------------------------------------------------------------- reconcile and status

  /** Full reconciliation on demand: corrects whatever differs from the desired state. */
  reconcileNow(): Promise<{ differences: string[] }> {
    return this.exclusive(async () => {
      const obs = await observe({ ipv6: this.ipv6Kernel });
      const fix = reconcile(this.state, obs.kernel);
      const base = this.baseDifferences(obs.tables);
      if (base.length) {
        const skeleton = this.firewallLoaded ? await this.firewallSkeletonIfEnabled() : undefined;
        await applyNft([baseRulesetScript({ ipv6: this.ipv6Kernel, connected4: this.provider.connected4, connected6: this.provider.connected6, dns: this.dns!.mapping, ...(skeleton ? { firewallSkeleton: skeleton } : {}), extra: fix.nft })]);
      } else {
        await applyNft(fix.nft);
      }
      for (const s of fix.sysctls) this.trySysctl(s, s.vif);
      await applyIpLines(fix.ip);
      const differences = [...base, ...fix.differences];
      for (const d of differences) this.log.info({ difference: d }, 'reconcile correction');
      return { differences };
    });
  }

  private baseDifferences(tables: LoadedTables): string[] {
    return baseDifferences(tables, this.ipv6Kernel, this.dns?.mapping);
  }

  status(): Promise<StatusReport> {
    return this.exclusive(async () => {
      const obs = await observe({ ipv6: this.ipv6Kernel });
      const fix = reconcile(this.state, obs.kernel);
      const differences = [...this.baseDifferences(obs.tables), ...fix.differences];
      if (readSysctl('net/ipv4/ip_forward') !== '1' && this.forwarding.ipv4) differences.push('ipv4 forwarding is off');
      return {
        ok: true,
        generation: this.generation - 1,
        vifs: [...this.state.vifs.values()].sort((a, b) => a.spec.domid - b.spec.domid || a.spec.devid - b.spec.devid).map((r) => ({
          vif: r.spec.vif, domid: r.spec.domid, ips: [...r.spec.ipv4, ...r.spec.ipv6], mac: r.spec.mac ?? '', state: r.state, generation: r.generation, detail: r.detail,
        })),
        dns: this.dns ? { mode: this.dns.mapping.mode, pairs: this.dns.mapping.pairs, upstream: this.dns.mapping.upstream, source: this.dns.source, rejected: this.dns.rejected } : undefined,
        forwarding: { ...this.forwarding },
        flowtables: this.flowtables,
        firewall: this.firewallLoaded,
        antispoofDrops: obs.tables.antispoofDrops,
        kernel: { inSync: differences.length === 0, differences },
        memory: (({ rss, heapUsed, heapTotal, external, arrayBuffers }) => ({ rss, heapUsed, heapTotal, external, arrayBuffers }))(process.memoryUsage()),
      };
    });
  }
}

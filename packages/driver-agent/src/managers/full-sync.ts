// A full turn (start, a failed write, periodic, `reconcile`): everything rebuilt from the
// kernel rather than from deltas. The provider keys and DNS are read again; at start the vif
// set is rebuilt from Xen's backend entries and the kernel; the base is (re)loaded at start or
// when it differs from what the kernel holds; every element, route, address and sysctl that
// differs from the desired state is corrected; all of it in the turn's one transaction.
import { performance } from 'node:perf_hooks';
import type { Logger } from '@qubes-net/common';
import { addBase, addConnected } from '../model/ruleset.js';
import { addDnsChain } from '../model/dns.js';
import { addFakeIpBase } from '../model/fake-ip.js';
import { reconcile } from '../model/reconcile.js';
import { baseDifferences } from '../model/base-check.js';
import type { HostAccess } from '../kernel/host.js';
import { xenstoreDirFromEnv, type XenVif } from '../kernel/xen-vifs.js';
import type { ProviderManager } from './provider.js';
import type { DnsManager } from './dns.js';
import type { VifManager } from './vifs.js';
import type { Turn } from './turn.js';

export interface FullSyncContext {
  provider: ProviderManager;
  dns: DnsManager;
  vifs: VifManager;
  host: HostAccess;
  log: Logger;
  ipv6: boolean;
  xenstoreDir: string | undefined;
  /** The first full turn of this process: rebuild the vif set, load the base whatever it holds. */
  starting: boolean;
  reason: string;
  /** Called once the kernel reads' processes are spawned (the host spawns its helpers then). */
  onReadsStarted?: () => void;
}

/** Plans a full turn into `turn`; the differences it corrects (empty at start). */
export async function planFullSync(turn: Turn, c: FullSyncContext): Promise<string[]> {
  // The QubesDB, kernel and xenstore reads are independent: all started at once (the start
  // path is on the first vif's latency). The QubesDB requests go out first (socket writes, in
  // this turn's microtasks); the tools are spawned on the next loop turn, so the daemon
  // answers while each spawn holds the main thread. The firewall's forward chain is only for
  // status: one nft process fewer. Each read's failure is kept for its own await.
  const t0 = performance.now();
  const took: Record<string, number> = {};
  const timed = <T>(name: string, p: Promise<T>) => p.finally(() => (took[name] = Math.round((performance.now() - t0) * 10) / 10));
  const configRead = settle(timed('qubesdbMs', c.provider.read(true)).then(async (config) => ({ config, skeleton: await c.provider.skeleton(config) })));
  const spawned = new Promise<void>((resolve) => setImmediate(resolve));
  const obsRead = settle(spawned.then(() => timed('kernelMs', c.host.observe({ ipv6: c.ipv6, firewall: false }))));
  const xenRead = c.starting ? settle(spawned.then(() => timed('xenMs', c.host.readXenVifs(xenstoreDirFromEnv(c.xenstoreDir))))) : undefined;
  if (c.onReadsStarted) void spawned.then(c.onReadsStarted).catch((err: unknown) => c.log.error({ err: String(err) }, 'starting a helper process failed'));
  // Nothing is planned when a read failed, but every read is done before the caller goes on.
  await Promise.all([configRead, obsRead, xenRead]);
  const { config, skeleton } = unwrap(await configRead);
  const obs = unwrap(await obsRead);
  c.log.debug({ reason: c.reason, ...took }, 'full turn: reads done');
  const dnsState = await c.dns.compute(config, obs.ownAddresses, c.reason);
  let rebuilt;
  if (xenRead) {
    let xen: XenVif[] = [];
    try {
      xen = unwrap(await xenRead);
    } catch (err) {
      // Only an error when there are vifs to keep; with none in the kernel nothing is lost.
      if (obs.kernel.vifLinks.size) c.log.error({ err: String(err), vifs: obs.kernel.vifLinks.size }, 'cannot read the vif backends from xenstore: every vif stays blocked until its next hotplug event');
      else c.log.info({ err: String(err) }, 'no vif backends readable in xenstore, and no vif in the kernel');
    }
    rebuilt = await c.vifs.rebuild(config, xen, obs.kernel.vifLinks.keys(), obs.kernel.allowed.ip);
  }
  const state = rebuilt ?? c.vifs.state;
  const fix = reconcile(state, obs.kernel);
  const base = c.starting ? [] : baseDifferences(obs.tables, c.ipv6, dnsState.mapping);
  const withSkeleton = skeleton && (c.starting || !c.provider.firewallLoaded || base.length > 0) ? skeleton : undefined;
  if (c.starting || base.length) {
    addBase(turn.tx, { ipv6: c.ipv6, connected4: config.connected4, connected6: config.connected6, dns: dnsState.mapping });
  } else {
    addConnected(turn.tx, 'ip', config.connected4);
    if (c.ipv6) addConnected(turn.tx, 'ip6', config.connected6);
    addDnsChain(turn.tx, dnsState.mapping);
  }
  withSkeleton?.(turn.tx);
  if (c.starting) addFakeIpBase(turn.tx, state.online().flatMap((r) => (r.applied?.fakeIp ? [{ vif: r.spec.vif, fakeIp: r.applied.fakeIp }] : [])));
  turn.tx.append(fix.tx);
  for (const s of fix.sysctls) turn.sysctls.push({ ...s, tolerant: true });
  turn.ip.push(...fix.ip);
  await c.provider.plan(turn, { config, skeleton: withSkeleton });
  await c.dns.plan(turn, config, { full: dnsState, inputsChanged: false, reason: c.reason });
  c.vifs.planFull(turn, rebuilt, fix.purge);
  const differences = [...base, ...fix.differences];
  turn.after(() => {
    c.log.info({ reason: c.reason, vifs: state.online().length, corrections: differences.length }, c.starting ? 'base ruleset loaded' : 'full sync done');
    for (const d of differences) c.log.info({ difference: d }, 'reconcile correction');
  });
  return differences;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error }));
}

function unwrap<T>(s: Settled<T>): T {
  if (!s.ok) throw s.error;
  return s.value;
}

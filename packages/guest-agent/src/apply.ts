// One apply pass: QubesDB + kernel state → desired → plan → one ip batch, resolv.conf, the
// feedback key. Shared by `apply` (once) and `run` (on every trigger). Every step that can fail
// on bad input fails closed: the plan then only removes what is ours and takes the link down.
import type { QubesDB } from '@qubes-net/qubesdb';
import * as addr from '@qubes-net/common/addr';
import type { LogLike as Logger } from '@qubes-net/common/line-log';
import { desiredUplink, type DesiredUplink } from './model/desired.js';
import { formatUplinkStatus, type UplinkStatus } from './model/feedback.js';
import type { KernelState } from './model/kernel-state.js';
import { KEY } from './model/keys.js';
import { planUplink, sameRecord, type OwnedRecord, type UplinkPlan } from './model/plan.js';
import { parseUplinkConfig, readUplinkKeys, type ConfigOutcome } from './model/read-config.js';
import { BACKEND_MAC, chooseUplink, isUplinkCandidate, uplinkDrivers, type UplinkChoice } from './model/uplink.js';
import { linkDrivers } from './kernel/link-driver.js';
import { applyIpBatch, ipv6Usable, readKernelState, readMaxMtu } from './kernel/ip.js';
import { mtuTarget, withMtu, type MtuTarget } from './model/mtu.js';
import { DEFAULT_DRIVER_SOCKET, DEFAULT_HOOKS, notifyDriverDnsChanged, runIpChangeHooks } from './kernel/provider-hooks.js';
import { readRecord, writeRecord, DEFAULT_STATE_DIR, readMtuRecord, writeMtuRecord, removeMtuRecord } from './kernel/record.js';
import { DEFAULT_PROTECTED_DIRS, isProtectedFile, writeResolvConf } from './kernel/resolv-conf.js';
import { DEFAULT_RESOLVED_TOOLS, resolvedInUse, setLinkDns, type ResolvedTools } from './kernel/resolved.js';
import { DEFAULT_SERVICE_DIR, serviceFlagSet } from './kernel/service-flag.js';
import { EXIT } from './exit-codes.js';
import { applyViaNetworkManager } from './network-manager/apply-nm.js';
import { chooseNetworkManager, DEFAULT_NM_PATHS, type NetworkManagerPaths } from './network-manager/nmcli.js';

export interface AgentPaths {
  resolvConf: string;
  stateDir: string;
  protectedDirs: readonly string[];
  hooks: readonly string[];
  driverSocket: string;
  /** Upstream's service flag files (/run/qubes-service), read when QubesDB has no entry. */
  serviceDir: string;
  /** systemd-resolved's tools (`resolvectl dns IF …` when it is in use). */
  resolved: ResolvedTools;
  /** NetworkManager's nmcli and keyfile directory (the uplink of a qube with its service). */
  networkManager?: NetworkManagerPaths;
}

export const DEFAULT_PATHS: AgentPaths = {
  resolvConf: '/etc/resolv.conf',
  stateDir: DEFAULT_STATE_DIR,
  protectedDirs: DEFAULT_PROTECTED_DIRS,
  hooks: DEFAULT_HOOKS,
  driverSocket: DEFAULT_DRIVER_SOCKET,
  serviceDir: DEFAULT_SERVICE_DIR,
  resolved: DEFAULT_RESOLVED_TOOLS,
  networkManager: DEFAULT_NM_PATHS,
};

/** The services the uplink depends on, by QubesDB key (the flag file's name is the last part). */
const SERVICE_KEYS: readonly string[] = [KEY.disableDnsServer, KEY.disableDefaultRoute];

/** A service without a QubesDB entry is on when its flag file exists (upstream's qsvc). */
async function addServiceFlags(keys: Map<string, string>, dir: string): Promise<void> {
  await Promise.all(SERVICE_KEYS.filter((k) => !keys.has(k)).map(async (k) => {
    if (await serviceFlagSet(dir, k.slice(k.lastIndexOf('/') + 1))) keys.set(k, '1');
  }));
}

/** Batches per apply before giving up on convergence (a second one is rare, a third would be a bug). */
const MAX_ROUNDS = 3;

export { EXIT } from './exit-codes.js';

export interface ApplyContext {
  db: QubesDB;
  log: Logger;
  paths: AgentPaths;
  /** The uplink given on the command line; otherwise found by /qubes-mac, else eth0. */
  iface?: string;
  generation: () => string;
  /** Log an apply that changed nothing at debug level only (the run mode's link-event passes). */
  quietWhenUnchanged?: boolean;
  /**
   * Write the feedback key even when nothing changed and the status is the same as last time
   * (default true; the run mode's link-event and retry passes pass false).
   */
  alwaysWriteStatus?: boolean;
  /** The last status written by this context, kept up to date by applyOnce. */
  lastStatus?: string;
  /** The QubesDB problems last logged by this context (so they are not repeated each pass). */
  lastProblems?: string;
  /**
   * Whether this link was taken down by a `remove` request and must stay so until the next
   * apply request (the run mode: its own link event must not bring a removed uplink back).
   */
  isRemoved?: (ifname: string, ifindex: number) => boolean;
}

export interface ApplyResult {
  ifname: string;
  status: UplinkStatus;
  detail: string;
  /** Something was changed in the kernel or in resolv.conf. */
  changed: boolean;
  /** The interface exists. */
  linkPresent: boolean;
  providesNetwork: boolean;
  exitCode: number;
  outcome: ConfigOutcome;
}

/** Everything the pure part decided, for `status` and for tests. */
export interface Evaluation {
  choice: UplinkChoice;
  outcome: ConfigOutcome;
  desired: DesiredUplink;
  plan: UplinkPlan;
  ipv6: boolean;
  owned: OwnedRecord | undefined;
  /** The chosen link exists but is not a Xen uplink: its driver (left alone). */
  notUplink?: string;
  /** The MTU planned and its record (only for a valid configuration on an existing link). */
  mtu?: MtuTarget;
}

/** Reads QubesDB and the kernel and computes the plan, without changing anything. */
export async function evaluate(db: QubesDB, paths: AgentPaths, iface: string | undefined, preRead?: Promise<KernelState>): Promise<Evaluation & { state: KernelState }> {
  const [keys, state] = await Promise.all([readUplinkKeys(db), preRead ?? readKernelState()]);
  await addServiceFlags(keys, paths.serviceDir ?? DEFAULT_SERVICE_DIR);
  const allowed = uplinkDrivers(process.env.QUBES_NET_UPLINK_DRIVERS);
  const drivers = await linkDrivers(state.links.filter((l) => l.ifname !== 'lo').map((l) => l.ifname));
  const eligible = (l: { ifname: string; mac: string | undefined }): boolean => isUplinkCandidate(l, drivers.get(l.ifname) ?? 'none', allowed);
  const choice = chooseUplink(state.links, keys.get(KEY.mac), iface, eligible);
  const link = state.links.find((l) => l.ifname === choice.ifname);
  const notUplink = link && !eligible(link) ? (drivers.get(link.ifname) ?? 'none') : undefined;
  const parsed = parseUplinkConfig(keys, link?.mac);
  const wantsIpv6 = parsed.kind === 'ok' && parsed.config.ip6 !== undefined;
  const mtuRaw = keys.get(KEY.netMtu);
  const [ipv6, owned, maxMtu, mtuRecord] = await Promise.all([
    wantsIpv6 && link ? ipv6Usable(choice.ifname) : Promise.resolve(false),
    readRecord(paths.stateDir, choice.ifname),
    mtuRaw !== undefined && mtuRaw !== '' && link ? readMaxMtu(choice.ifname) : Promise.resolve(undefined),
    readMtuRecord(paths.stateDir, choice.ifname),
  ]);
  // The MTU's bounds depend on IPv6 being configured and on the link: checked once both are known.
  const outcome = withMtu(parsed, mtuRaw, { ipv6, maxMtu });
  const desired = desiredUplink(choice.ifname, outcome, { ipv6 });
  // The MTU: the requested one, or the link's own back once the key is gone.
  const mtu = outcome.kind === 'ok' && link ? mtuTarget(outcome.config.mtu, mtuRecord, link) : undefined;
  if (mtu?.mtu !== undefined) desired.mtu = mtu.mtu;
  const plan = planUplink(state, desired, owned);
  return { choice, outcome, desired, plan, ipv6, owned, state, ...(notUplink !== undefined ? { notUplink } : {}), ...(mtu ? { mtu } : {}) };
}

/**
 * Whether running these lines can make the kernel remove more than they say: deleting an
 * address (the last IPv4 one flushes the link's routes and neighbours; a primary takes its
 * secondaries along) or taking the link down (drops IPv6 addresses and routes). Only then is
 * the state read back; adding things has no such effects.
 */
function hasKernelSideEffects(lines: readonly string[]): boolean {
  return lines.some((l) => l.startsWith('address del ') || (l.startsWith('link set ') && l.endsWith(' down')));
}

function describeConfig(outcome: ConfigOutcome & { kind: 'ok' }, ipv6: boolean): string {
  const c = outcome.config;
  return `${c.ip}/${c.prefix}${c.ip6 && ipv6 ? ` ${c.ip6}/${c.prefix6}` : ''}`;
}

/**
 * Logs what is wrong with QubesDB's values. The run mode re-evaluates on link events and
 * retries: a problem already reported by this context goes to debug level, so an
 * unchanged bad value is one error line, not one per pass.
 */
function logOutcome(log: Logger, ev: Evaluation, ctx: ApplyContext): void {
  const ifname = ev.choice.ifname;
  const lines: [level: 'error' | 'warn', fields: Record<string, unknown>, msg: string][] = [];
  if (ev.choice.badMac !== undefined) {
    lines.push(['error', { key: KEY.mac, value: addr.forLog(ev.choice.badMac), ifname }, 'qubesdb value invalid, using eth0 as the uplink']);
  }
  if (ev.outcome.kind === 'invalid') {
    for (const issue of ev.outcome.issues) {
      lines.push(['error', { key: issue.key, value: addr.forLog(issue.value ?? ''), reason: issue.reason, ifname }, 'uplink config invalid']);
    }
  } else if (ev.outcome.kind === 'unconfigured') {
    lines.push(['error', { key: ev.outcome.issue.key, reason: ev.outcome.issue.reason, ifname }, 'uplink unconfigured']);
  } else if (ev.outcome.config.ip6 !== undefined && !ev.ipv6 && ev.plan.ifindex !== undefined) {
    lines.push(['warn', { key: KEY.ip6, ip: ev.outcome.config.ip6, ifname }, 'IPv6 is disabled on the uplink, configuring IPv4 only']);
  }
  if (ev.plan.ifindex === undefined) lines.push(['warn', { ifname, by: ev.choice.by }, 'uplink interface missing']);
  const signature = JSON.stringify(lines);
  const repeated = signature === ctx.lastProblems;
  ctx.lastProblems = signature;
  for (const [level, fields, msg] of lines) {
    if (repeated) log.debug(fields, msg);
    else log[level](fields, msg);
  }
}

export async function applyOnce(ctx: ApplyContext, preRead?: Promise<KernelState>): Promise<ApplyResult> {
  const { db, log, paths } = ctx;
  const ev = await evaluate(db, paths, ctx.iface, preRead);
  const { choice, outcome, desired, plan } = ev;
  const ifname = choice.ifname;
  if (plan.ifindex !== undefined && ctx.isRemoved?.(ifname, plan.ifindex)) {
    log.debug({ ifname }, 'uplink removed on request, left alone until the next apply request');
    return { ifname, status: 'unconfigured', detail: `${ifname} removed`, changed: false, linkPresent: true, providesNetwork: outcome.providesNetwork, exitCode: EXIT.ok, outcome };
  }
  if (ev.notUplink !== undefined) {
    // Upstream's udev rule only fires for Xen frontends; this guards every other way in.
    const detail = `${ifname} is not a Xen uplink (driver ${ev.notUplink}${ev.state.links.find((l) => l.ifname === ifname)?.mac === BACKEND_MAC ? ', backend MAC' : ''}; QUBES_NET_UPLINK_DRIVERS=${uplinkDrivers(process.env.QUBES_NET_UPLINK_DRIVERS).join(',')})`;
    log.error({ ifname, driver: ev.notUplink, by: choice.by }, 'not an uplink, left alone');
    return { ifname, status: 'error', detail, changed: false, linkPresent: true, providesNetwork: outcome.providesNetwork, exitCode: EXIT.kernel, outcome };
  }
  logOutcome(log, ev, ctx);

  let status: UplinkStatus;
  let detail: string;
  let exitCode: number;
  let changed = false;

  const nm = plan.ifindex === undefined ? undefined : await chooseNetworkManager(db, paths.serviceDir ?? DEFAULT_SERVICE_DIR, paths.networkManager ?? DEFAULT_NM_PATHS);
  if (nm && !nm.use && nm.serviceOn) log.info({ ifname, reason: nm.reason }, 'NetworkManager path not taken');

  if (plan.ifindex === undefined) {
    status = 'unconfigured';
    detail = `${ifname} interface missing`;
    exitCode = EXIT.kernel;
  } else if (nm?.use) {
    // NetworkManager owns addresses, routes, MTU and resolv.conf (network-manager/apply-nm.ts).
    ({ status, detail, changed, exitCode } = await applyViaNetworkManager({
      ifname, state: ev.state, outcome, desired, ipv6: ev.ipv6, paths: paths.networkManager ?? DEFAULT_NM_PATHS, log,
    }));
    if (changed || !ctx.quietWhenUnchanged) log.info({ ifname, status, detail, changed }, 'uplink handed to NetworkManager');
  } else {
    // Kernel: record first (so a crash mid-way still knows every address that may be ours),
    // then the batch, then the final record. Then read back: the kernel has side effects of
    // its own (removing the last IPv4 address flushes the link's routes, a link going down
    // drops IPv6 addresses), so plan again until nothing is left to do (bounded).
    let kernelError: string | undefined;
    let owned = ev.owned;
    let current = plan;
    const allChanges = [...plan.changes];
    const mtuRec = ev.mtu?.record;
    if (mtuRec?.op === 'write') await writeMtuRecord(paths.stateDir, ifname, mtuRec.value);
    for (let round = 0; current.lines.length > 0; round++) {
      if (round === MAX_ROUNDS) {
        kernelError = `not converged after ${MAX_ROUNDS} rounds: ${current.lines[0]}`;
        break;
      }
      if (!sameRecord(owned, current.recordBefore)) await writeRecord(paths.stateDir, current.recordBefore!);
      const res = await applyIpBatch(current.lines);
      changed = true;
      if (!res.ok) {
        kernelError = res.error.split('\n')[0] || 'ip -batch failed';
        break;
      }
      await writeRecord(paths.stateDir, current.recordAfter!);
      owned = current.recordAfter;
      if (!hasKernelSideEffects(current.lines)) break;
      current = planUplink(await readKernelState(), desired, owned);
      allChanges.push(...current.changes);
    }
    if (!changed && !sameRecord(owned, plan.recordAfter)) await writeRecord(paths.stateDir, plan.recordAfter!);
    if (mtuRec?.op === 'remove' && kernelError === undefined) await removeMtuRecord(paths.stateDir, ifname);

    let resolvError: string | undefined;
    if (desired.resolvConf.action === 'write') {
      try {
        const prot = await isProtectedFile(paths.resolvConf, paths.protectedDirs);
        if (prot.protected) {
          log.info({ path: paths.resolvConf, listedIn: prot.listedIn, ifname }, 'resolv.conf is protected, left alone');
        } else {
          const how = await writeResolvConf(paths.resolvConf, desired.resolvConf.content);
          if (how !== 'unchanged') {
            changed = true;
            // disable-dns-server empties the file: no server in it.
            const servers = outcome.kind === 'ok' && !outcome.config.disableDnsServer ? outcome.config.dns : [];
            if (how === 'written-in-place') log.warn({ path: paths.resolvConf, dns: servers, ifname }, 'resolv.conf written in place (cannot rename onto it: bind mount)');
            else log.info({ path: paths.resolvConf, dns: servers, replacedSymlink: how === 'replaced-symlink', ifname }, 'resolv.conf written');
          }
        }
      } catch (err) {
        resolvError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        log.error({ path: paths.resolvConf, error: (err as Error).message, ifname }, 'resolv.conf write failed');
      }
    }

    // Upstream gives resolved the servers on every setup-ip run, protected resolv.conf or not.
    if (desired.resolvConf.action === 'write' && outcome.kind === 'ok' && !outcome.config.disableDnsServer && kernelError === undefined) {
      await tellResolved(paths.resolved ?? DEFAULT_RESOLVED_TOOLS, ifname, outcome.config.dns, log);
    }

    const changes = allChanges.map((c) => `${c.op} ${c.what} ${c.detail}`);
    if (kernelError !== undefined) {
      status = 'error';
      detail = `${ifname} kernel refused the change: ${kernelError}`;
      exitCode = EXIT.kernel;
      log.error({ ifname, error: kernelError, changes }, 'uplink apply failed');
    } else if (outcome.kind === 'ok') {
      const ip = outcome.config.ip;
      status = resolvError ? 'error' : 'ok';
      detail = resolvError ? `${ifname} resolv.conf: ${resolvError}` : `${ifname} ${describeConfig(outcome, ev.ipv6)}`;
      exitCode = resolvError ? EXIT.kernel : EXIT.ok;
      const fields = { ifname, ip, ip6: ev.ipv6 ? outcome.config.ip6 : undefined, gateway: outcome.config.gateway, mtu: outcome.config.mtu, changed, changes };
      if (changed || !ctx.quietWhenUnchanged) log.info(fields, 'uplink configured');
      else log.debug(fields, 'uplink already configured');
    } else if (outcome.kind === 'invalid') {
      const first = outcome.issues[0]!;
      status = 'error';
      detail = `${ifname} ${first.key}: ${first.reason}${outcome.issues.length > 1 ? ` (+${outcome.issues.length - 1} more)` : ''}`;
      exitCode = EXIT.invalidConfig;
      if (changed) log.warn({ ifname, changes }, 'uplink deconfigured (invalid QubesDB values)');
    } else {
      status = 'unconfigured';
      detail = `${ifname} ${outcome.issue.key} missing`;
      exitCode = EXIT.ok;
      if (changed) log.info({ ifname, changes }, 'uplink deconfigured (no address assigned)');
    }
  }

  const statusKey = `${status} ${detail}`;
  if (changed || ctx.alwaysWriteStatus !== false || ctx.lastStatus !== statusKey) {
    try {
      await db.write(KEY.uplinkStatus, formatUplinkStatus(ctx.generation(), status, detail));
      // Remembered only once QubesDB took it: a failed write is tried again on the next pass,
      // even when nothing else changed by then.
      ctx.lastStatus = statusKey;
    } catch (err) {
      log.warn({ key: KEY.uplinkStatus, error: (err as Error).message }, 'qubesdb feedback write failed');
    }
  }
  return { ifname, status, detail, changed, linkPresent: plan.ifindex !== undefined, providesNetwork: outcome.providesNetwork, exitCode, outcome };
}

/** `resolvectl dns IF …` when systemd-resolved is in use; its failure is logged, never fatal. */
async function tellResolved(tools: ResolvedTools, ifname: string, servers: readonly string[], log: Logger): Promise<void> {
  const use = await resolvedInUse(tools);
  if (!use.use) {
    log.debug({ ifname, reason: use.reason }, 'systemd-resolved not told');
    return;
  }
  const res = await setLinkDns(tools, ifname, servers);
  if (res.ok) log.info({ ifname, dns: servers }, 'systemd-resolved given the link\'s DNS servers');
  else log.error({ ifname, dns: servers, error: res.error }, 'resolvectl dns failed');
}

/** After a change in a qube that serves others: tell the driver, run the user's hooks. */
export async function runProviderHooks(paths: AgentPaths, log: Logger): Promise<void> {
  const [driver, hooks] = await Promise.all([notifyDriverDnsChanged(paths.driverSocket), runIpChangeHooks(paths.hooks)]);
  if (driver.sent) log.info({ socket: paths.driverSocket, reply: addr.forLog(driver.reply) }, 'driver told to re-learn DNS');
  else log.debug({ socket: paths.driverSocket, reason: driver.reason }, 'driver not notified');
  for (const h of hooks) {
    if (h.code === 0) log.info({ path: h.path }, 'ip change hook ran');
    else log.error({ path: h.path, code: h.code, stderr: addr.forLog(h.stderr, 200) }, 'ip change hook failed');
  }
}

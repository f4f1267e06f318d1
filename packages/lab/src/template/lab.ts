// The booted-template lab: each qube is the Debian 13 template with our .deb installed, booted
// by systemd-nspawn in a network namespace the lab made, on a copy-on-write layer of its own.
// The lab plays dom0 and Xen around it, as in the namespace lab: it runs each qube's QubesDB
// daemon (its socket directory bound at /run/qubes), writes dom0's entries, plugs vifs (veth
// pairs) and runs the hotplug script `vif-route-qubes` inside the netvm's container as xl devd
// does. Everything inside a qube is the package's: its units started by the template's
// systemd in boot order, logging to the qube's journald.
//
// Stand-ins for what a container lacks, each doing what the real piece would:
//  - qubes-sysinit's /run/qubes-service/<name> flags: the lab fills that directory from dom0's
//    /qubes-service/ entries before the boot (bound into the container);
//  - udev: no udev runs in a container; when the client's eth0 appears, the lab runs exactly
//    what the package's rule runs (`systemctl --no-block restart qubes-net-uplink@eth0.service`).
import { appendFile, copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { isIP } from 'node:net';
import { GATEWAY_MAC, forLog, type RunResult } from '@qubes-net/common';
import { INTERNET, NetnsSession, XENSTORE_DIR, configureUplink, type Qube } from '@qubes-net/netns';
import { openQubesDB, type QubesDB } from '@qubes-net/qubesdb';
import { connectedIpsOps, firewallOps, forgetAddressOps, ownEntries, ownEntriesOps, providerPreAttachOps, realAddresses, vifBackendEntries } from '../dom0/entries.js';
import { parseFirewallRule } from '../dom0/firewall-rules.js';
import { startOrder, type LabModel, type QubeSpec } from '../topology/model.js';
import { resolveAgentCommands } from '../runtime/agent-commands.js';
import { LabInternet } from '../runtime/internet.js';
import { applyOps, parseFeedback, readOwnManaged, waitUntil, type Feedback } from '../runtime/qdb-ops.js';
import { startInQube, type QubeProcess } from '../runtime/processes.js';
import { Container } from './container.js';
import { ensureTemplateImage, type TemplateImage } from './image.js';
import { instantiateRoot, type RootInstance, type RootLog } from './root.js';

export const TEMPLATE_NAMES = ['debian-13'] as const;
export type TemplateName = (typeof TEMPLATE_NAMES)[number];

/** sys-net's NIC to the fake internet. */
export const UPLINK_NIC = 'ens6';

/** The hotplug script's path in the template, where the package installs it. */
const VIF_SCRIPT = '/etc/xen/scripts/vif-route-qubes';

/** qubes-sysinit's default services per /qubes-vm-type (reference 3.8). */
const DEFAULT_SERVICES: Record<string, readonly string[]> = {
  NetVM: ['network-manager', 'qubes-network', 'qubes-update-check', 'qubes-updates-proxy', 'meminfo-writer', 'qubes-firewall', 'software-rendering'],
  ProxyVM: ['qubes-network', 'qubes-firewall', 'qubes-update-check', 'meminfo-writer', 'software-rendering'],
  AppVM: ['qubes-update-check', 'meminfo-writer', 'tracker', 'evolution-data-server', 'software-rendering'],
};
const SERVICE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;

/** The /run/qubes-service flags qubes-sysinit makes: defaults of the VM type, then "1"/"0" overrides. */
export function serviceFlags(entries: ReadonlyMap<string, string>): string[] {
  const on = new Set(DEFAULT_SERVICES[entries.get('/qubes-vm-type') ?? 'AppVM'] ?? []);
  for (const [k, v] of entries) {
    if (!k.startsWith('/qubes-service/')) continue;
    const name = k.slice('/qubes-service/'.length);
    if (!SERVICE_NAME.test(name)) continue;
    if (v === '1') on.add(name);
    else if (v === '0') on.delete(name);
  }
  return [...on].sort();
}

/**
 * The qube's eth0 is a veth here, not Xen's netfront (driver "vif"): the guest agent, which
 * leaves non-Xen interfaces alone, is told to accept a device-less one too. Every unit gets it
 * through the service manager's default environment, written into the qube's own layer.
 */
async function writeLabManagerConfig(root: string): Promise<void> {
  const dir = join(root, 'etc', 'systemd', 'system.conf.d');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, '50-qubes-net-lab.conf'), '# qubes-net-lab: the uplink is a veth pair standing in for Xen\'s vif\n[Manager]\nDefaultEnvironment=QUBES_NET_UPLINK_DRIVERS=vif,none\n');
}

export interface TemplateLabOptions {
  /** Our .deb (packaging's `npm run package` output). */
  deb: string;
  stateDir?: string;
  log?: RootLog;
  /** Guard for each wait (boot, feedback): only protects against hangs. */
  waitTimeoutMs?: number;
  /** A qube whose start fails stays up for inspection until `down`. */
  keepFailed?: boolean;
  /** A cached layer over the template image that every qube boots (e.g. NetworkManager's). */
  imageLayer?: (image: TemplateImage, log: RootLog) => Promise<TemplateImage>;
}

export interface BootFigures {
  /** Container start until systemd reports the boot finished. */
  bootMs?: number;
  /** Container start until the uplink is configured (client) or the first vif is served (network qube). */
  networkMs?: number;
}

export interface TemplateQube {
  name: string;
  spec: QubeSpec;
  domid: number;
  ns: Qube;
  db: QubesDB;
  qdbDaemon: QubeProcess;
  instance: RootInstance;
  container: Container;
  logDir: string;
  vif?: { provider: string; name: string; addresses: string[] };
  figures: BootFigures;
}

export class TemplateLab {
  readonly qubes = new Map<string, TemplateQube>();
  private nextDomid = 1;
  private readonly log: RootLog;
  private readonly waitMs: number;
  private readonly keepFailed: boolean;

  private constructor(
    readonly model: LabModel,
    readonly session: NetnsSession,
    readonly internet: LabInternet,
    readonly image: TemplateImage,
    readonly stateDir: string,
    private readonly ownStateDir: boolean,
    opts: TemplateLabOptions,
  ) {
    this.log = opts.log ?? (() => {});
    this.waitMs = opts.waitTimeoutMs ?? 120_000;
    this.keepFailed = opts.keepFailed ?? false;
  }

  /** Builds (or finds) the template image, makes the session and the fake internet. */
  static async create(model: LabModel, opts: TemplateLabOptions): Promise<TemplateLab> {
    const baseImage = await ensureTemplateImage({ deb: opts.deb, ...(opts.log ? { log: opts.log } : {}) });
    const image = opts.imageLayer ? await opts.imageLayer(baseImage, opts.log ?? (() => {})) : baseImage;
    const stateDir = opts.stateDir ?? join('/run/qubes-net-lab', `${model.name}-template`);
    const ownStateDir = opts.stateDir === undefined;
    await mkdir(stateDir, { recursive: true, mode: 0o750 });
    const session = await NetnsSession.create(`tlab-${model.name}`);
    try {
      const internet = await LabInternet.start(session, model.internet);
      return new TemplateLab(model, session, internet, image, stateDir, ownStateDir, opts);
    } catch (err) {
      await session.destroy().catch(() => {});
      throw err;
    }
  }

  spec(name: string): QubeSpec {
    const q = this.model.qubes.get(name);
    if (!q) throw new Error(`no qube named ${JSON.stringify(name)}`);
    return q;
  }

  qube(name: string): TemplateQube {
    const q = this.qubes.get(name);
    if (!q) throw new Error(`qube ${name} is not running`);
    return q;
  }

  /** Starts the named qubes (default: every autostart qube), netvms first. */
  async up(names?: readonly string[]): Promise<void> {
    const wanted = names ?? [...this.model.qubes.values()].filter((q) => q.autostart).map((q) => q.name);
    for (const n of startOrder(this.model, wanted)) {
      if (!this.qubes.has(n)) await this.boot(n);
    }
  }

  /**
   * One qube: namespace, QubesDB daemon with dom0's entries, uplink or vif, then the container's
   * boot; returns once its network is up (uplink configured, firewall applied, vif online).
   */
  async boot(name: string): Promise<TemplateQube> {
    const spec = this.spec(name);
    if (spec.netvm !== null && !this.qubes.has(spec.netvm)) throw new Error(`cannot start ${name}: its netvm ${spec.netvm} is not running`);
    const domid = this.nextDomid++;
    const logDir = join(this.stateDir, name);
    await mkdir(logDir, { recursive: true });
    const ns = await this.session.qube(name);
    const cleanups: Array<() => Promise<unknown>> = [() => this.session.removeQube(name)];
    const undo = async (): Promise<void> => {
      for (const c of cleanups.reverse()) await c().catch(() => {});
    };
    try {
      const agents = resolveAgentCommands();
      const qdbDaemon = await startInQube(ns, 'qubesdb', [...agents.qubesdbDaemon, '--ready-fd', '3'], join(logDir, 'qubesdb.log'), { readyFd: true });
      cleanups.push(() => qdbDaemon.stop());
      const db = openQubesDB({ runDir: ns.hostPath('/run/qubes') });
      cleanups.push(() => db.close());
      await applyOps(db, ownEntriesOps(this.model, name));
      // Bind sources must exist before nspawn starts (the fake xenstore's directory is made lazily).
      for (const p of ['/run/qubes', XENSTORE_DIR, '/rw']) await mkdir(ns.hostPath(p), { recursive: true });
      const services = join(logDir, 'qubes-service');
      await mkdir(services, { recursive: true });
      for (const svc of serviceFlags(ownEntries(this.model, name))) await writeFile(join(services, svc), '');
      if (spec.uplink) {
        // The NIC under a PCI name, as sys-net's passed-through NIC has: eth0 belongs to the
        // Xen uplink, which the package's units manage (and deconfigure when dom0 gave none).
        await this.internet.net.connectUplink(ns, UPLINK_NIC);
        cleanups.push(() => this.internet.net.disconnectUplink());
        await configureUplink(ns, UPLINK_NIC, { ipv6: INTERNET.netvm6, dns: [...this.internet.dnsServers] });
      }
      const instance = await instantiateRoot(this.image.dir, `${this.session.id}-${name}`.replace(/[^a-z0-9._-]/g, '-'));
      cleanups.push(() => instance.remove());
      await writeLabManagerConfig(instance.dir);
      // sys-net's resolv.conf as its DHCP client leaves it: a regular file of the qube's own
      // (a file bound from the host would hide in-place rewrites from inotify on /etc).
      if (spec.uplink) await writeFile(join(instance.dir, 'etc', 'resolv.conf'), this.internet.dnsServers.map((d) => `nameserver ${d}\n`).join(''));
      const container = Container.start({
        machine: `${this.session.id}-${name}`.slice(0, 64),
        hostname: name,
        root: instance.dir,
        netnsFile: ns.netnsFile,
        logFile: join(logDir, 'console.log'),
        binds: [
          { host: ns.hostPath('/run/qubes'), inside: '/run/qubes' },
          { host: ns.hostPath(XENSTORE_DIR), inside: XENSTORE_DIR },
          { host: services, inside: '/run/qubes-service' },
          { host: ns.hostPath('/rw'), inside: '/rw' },
        ],
      });
      cleanups.push(() => container.kill());
      const q: TemplateQube = { name, spec, domid, ns, db, qdbDaemon, instance, container, logDir, figures: {} };
      this.qubes.set(name, q);
      cleanups.push(async () => { this.qubes.delete(name); });
      if (spec.netvm !== null) await this.attachVif(q);
      const state = await container.waitBooted(this.waitMs);
      q.figures.bootMs = Date.now() - container.startedAt;
      this.log('qube booted', { qube: name, state, ms: q.figures.bootMs });
      if (q.vif) {
        await this.udevUplink(q, 'add');
        await this.pushFirewall(name);
        await this.waitNetwork(q);
      }
      // A network qube counts when it serves its first vif (set in waitNetwork); a qube with
      // neither vif nor clients is networked once booted.
      if (!q.vif && !spec.providesNetwork) q.figures.networkMs = q.figures.bootMs;
      await this.saveState();
      return q;
    } catch (err) {
      // Kept for inspection (`down` still removes it: it stays registered in this.qubes).
      if (!this.keepFailed) await undo();
      throw err;
    }
  }

  /**
   * `qvm-prefs CLIENT netvm NETVM` on a running client, as dom0 and Xen do it: hotplug offline
   * in the old netvm, the vif goes (udev's remove in the client), the client's entries are
   * rewritten, a new vif in the new netvm (hotplug online, udev's add), the firewall pushed.
   * A network qube's own clients keep their vifs into it, as on Qubes (reference §4.6: a
   * ProxyVM's eth0 is re-plugged, its clients are not touched).
   */
  async setNetvm(client: string, netvm: string): Promise<void> {
    const q = this.qube(client);
    const target = this.qube(netvm);
    if (!target.spec.providesNetwork) throw new Error(`${netvm} does not provide network`);
    const uplinkBefore = parseFeedback(await q.db.read('/qubes-uplink-status').catch(() => undefined))?.generation;
    const oldProvider = q.vif?.provider;
    if (q.vif) {
      const old = this.qube(q.vif.provider);
      const xsPath = `/local/domain/${old.domid}/backend/vif/${q.domid}/0`;
      await this.hotplug(old, q.vif.name, xsPath, 'offline');
      await this.session.unlink(old.ns, q.vif.name);
      await old.ns.xenstoreRm(xsPath);
      for (const ip of q.vif.addresses) await applyOps(old.db, forgetAddressOps(ip));
      await this.udevUplink(q, 'remove');
      q.vif = undefined;
    }
    this.spec(client).netvm = netvm;
    // dom0 rewrites the old netvm's /connected-ips, which no longer lists the client (its
    // element stayed in the old netvm's `connected` set; found by test/template/fault-booted).
    if (oldProvider) await applyOps(this.qube(oldProvider).db, connectedIpsOps(this.model, oldProvider));
    await applyOps(q.db, ownEntriesOps(this.model, client, await readOwnManaged(q.db)));
    await this.attachVif(q);
    await this.udevUplink(q, 'add');
    await this.pushFirewall(client);
    await this.waitNetwork(q, uplinkBefore);
    await this.saveState();
  }

  /** dom0's and Xen's side of plugging the client's vif into its netvm, hotplug script included. */
  private async attachVif(q: TemplateQube): Promise<void> {
    const rp = this.qube(q.spec.netvm!);
    const vifName = `vif${q.domid}.0`;
    await applyOps(rp.db, providerPreAttachOps(this.model, q.name));
    const backend = vifBackendEntries(this.model, q.name, rp.domid, q.domid);
    for (const [k, v] of backend.entries) await rp.ns.xenstoreWrite(`${backend.path}/${k}`, v);
    await this.session.link(rp.ns, vifName, q.ns, 'eth0', { aMac: GATEWAY_MAC, bMac: q.spec.mac, up: false });
    q.vif = { provider: rp.name, name: vifName, addresses: realAddresses(this.model, q.name) };
    await this.hotplug(rp, vifName, backend.path, 'online');
  }

  /** What xl devd does: the hotplug script in the backend's container, vif and XENBUS_PATH set. */
  private async hotplug(rp: TemplateQube, vif: string, xenbusPath: string, command: 'online' | 'offline'): Promise<RunResult> {
    const res = await rp.container.exec([VIF_SCRIPT, command], {
      env: { vif, XENBUS_PATH: xenbusPath, command, script: VIF_SCRIPT },
      allowFailure: true,
      timeoutMs: this.waitMs,
    });
    await appendFile(join(rp.logDir, 'hotplug.log'), JSON.stringify({ time: Date.now(), vif, command, exitCode: res.exitCode, stdout: forLog(res.stdout, 2000), stderr: forLog(res.stderr, 2000) }) + '\n').catch(() => {});
    if (res.exitCode !== 0) throw new Error(`hotplug ${command} of ${vif} in ${rp.name} failed (exit ${res.exitCode}): ${(res.stderr || res.stdout).trim().slice(0, 500)}`);
    return res;
  }

  /** The udev rule's action for the client's uplink, run as the rule would run it. */
  private async udevUplink(q: TemplateQube, action: 'add' | 'remove'): Promise<void> {
    const verb = action === 'add' ? ['restart', '--job-mode=replace'] : ['stop', '--job-mode=replace'];
    await q.container.exec(['systemctl', '--no-block', ...verb, `${await this.uplinkUnit(q)}@eth0.service`]);
  }

  /**
   * The unit the template's udev rule starts for the uplink: upstream's name when our package
   * is an overlay on qubes-core-agent-networking, ours when it ships its own uplink unit.
   */
  private async uplinkUnit(q: TemplateQube): Promise<string> {
    const ours = await q.container.exec(['test', '-e', '/usr/lib/systemd/system/qubes-net-uplink@.service'], { allowFailure: true });
    return ours.exitCode === 0 ? 'qubes-net-uplink' : 'qubes-network-uplink';
  }

  /** dom0's reload_firewall_for_vm: the client's rules into its netvm's QubesDB. */
  async pushFirewall(client: string): Promise<void> {
    const q = this.qube(client);
    if (!q.vif) return;
    await applyOps(this.qube(q.vif.provider).db, firewallOps(this.model, client));
  }

  /** `qvm-firewall CLIENT` with new rules (strings as in topology files), waits until applied. */
  async setFirewall(client: string, rules: readonly string[]): Promise<void> {
    const q = this.qube(client);
    const before = await this.firewallGenerations(q);
    this.spec(client).firewall = rules.map((r) => parseFirewallRule(r));
    await this.pushFirewall(client);
    await this.waitFirewall(q, before);
  }

  private async feedback(db: QubesDB, key: string): Promise<Feedback | undefined> {
    return parseFeedback(await db.read(key).catch(() => undefined));
  }

  private async firewallGenerations(q: TemplateQube): Promise<Map<string, string | undefined>> {
    const out = new Map<string, string | undefined>();
    if (!q.vif) return out;
    const rp = this.qube(q.vif.provider);
    for (const ip of q.vif.addresses) out.set(ip, (await this.feedback(rp.db, `/qubes-firewall-applied/${ip}`))?.generation);
    return out;
  }

  private async waitFirewall(q: TemplateQube, before = new Map<string, string | undefined>()): Promise<void> {
    if (!q.vif) return;
    const rp = this.qube(q.vif.provider);
    for (const ip of q.vif.addresses) {
      await waitUntil(`${rp.name}'s firewall to apply ${q.name}'s rules for ${ip}`, async () => {
        const f = await this.feedback(rp.db, `/qubes-firewall-applied/${ip}`);
        return f && f.generation !== before.get(ip) ? f : undefined;
      }, { timeoutMs: this.waitMs });
    }
  }

  /** Vif online in the netvm, firewall applied, uplink configured in the client. */
  private async waitNetwork(q: TemplateQube, uplinkBefore?: string): Promise<void> {
    const rp = this.qube(q.vif!.provider);
    const vif = q.vif!.name;
    let last: string | undefined;
    await waitUntil(`${rp.name}'s driver to report ${vif} online`, async () => {
      last = await rp.db.read(`/qubes-vif/${vif}/state`).catch(() => undefined);
      return last === 'online';
    }, { timeoutMs: this.waitMs, lastSeen: () => last });
    rp.figures.networkMs ??= Date.now() - rp.container.startedAt;
    await this.waitFirewall(q);
    await waitUntil(`${q.name}'s uplink configured (/qubes-uplink-status)`, async () => {
      last = await q.db.read('/qubes-uplink-status').catch(() => undefined);
      const f = parseFeedback(last);
      return f?.state === 'ok' && (uplinkBefore === undefined || f.generation !== uplinkBefore);
    }, { timeoutMs: this.waitMs, lastSeen: () => last });
    q.figures.networkMs = Date.now() - q.container.startedAt;
  }

  /**
   * sys-net's upstream DNS servers change, as a DHCP renewal would: its resolv.conf is
   * rewritten in place from inside; the package's watcher must notice.
   */
  async setUpstreamDns(servers: readonly string[]): Promise<void> {
    const uplink = [...this.qubes.values()].find((q) => q.spec.uplink);
    if (!uplink) throw new Error('no running qube is plugged into the fake internet');
    for (const s of servers) if (isIP(s) === 0) throw new Error(`not an IP address: ${JSON.stringify(s)}`);
    // Written from inside, as NetworkManager or dhclient would.
    await uplink.container.exec(['sh', '-c', 'cat > /etc/resolv.conf'], { input: servers.map((s) => `nameserver ${s}\n`).join('') });
  }

  /**
   * `apt-get install` of a .deb inside the running qube, as a user upgrades a template-based
   * qube: the maintainer scripts run against the live systemd. The file goes into the qube's own
   * layer (its /tmp is a tmpfs the host does not see).
   */
  async installDeb(name: string, deb: string): Promise<RunResult> {
    const q = this.qube(name);
    const dir = join(q.instance.dir, 'var', 'cache', 'qubes-net-lab-install');
    await mkdir(dir, { recursive: true });
    await copyFile(deb, join(dir, basename(deb)));
    return q.container.exec(['apt-get', 'install', '-y', '--no-install-recommends', '-o', 'Dpkg::Use-Pty=0', `/var/cache/qubes-net-lab-install/${basename(deb)}`], {
      env: { DEBIAN_FRONTEND: 'noninteractive' }, timeoutMs: this.waitMs, allowFailure: true,
    });
  }

  /** Runs ARGV inside the qube's container. */
  exec(name: string, argv: readonly string[], opts: { allowFailure?: boolean; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> {
    return this.qube(name).container.exec(argv, { allowFailure: opts.allowFailure ?? true, timeoutMs: opts.timeoutMs ?? 30_000, ...(opts.env ? { env: opts.env } : {}) });
  }

  /**
   * Memory (bytes) of each networking unit in the qube, by its cgroup: memory.current where the
   * container's cgroup tree has the memory controller; otherwise (this host: cgroup v1, so the
   * container's cgroup2 has no controllers) the summed RSS of the processes in the unit's cgroup.
   * Units with no process (a oneshot, an agent that exited idle) count 0 or are absent.
   */
  async unitMemory(name: string): Promise<Record<string, { bytes: number; source: 'memory.current' | 'rss' }>> {
    const q = this.qube(name);
    const script = [
      'cd /sys/fs/cgroup/system.slice || exit 0',
      'for u in qubes* system-qubes*; do [ -d "$u" ] || continue',
      '  if [ -f "$u/memory.current" ]; then echo "$u current $(cat "$u/memory.current")"; continue; fi',
      '  kb=0; for p in $(find "$u" -name cgroup.procs -exec cat {} +); do',
      '    r=$(awk \'/^VmRSS:/ { print $2 }\' /proc/$p/status 2>/dev/null); kb=$((kb + ${r:-0})); done',
      '  echo "$u rss $((kb * 1024))"',
      'done',
    ].join('\n');
    const r = await q.container.exec(['sh', '-c', script], { allowFailure: true });
    const out: Record<string, { bytes: number; source: 'memory.current' | 'rss' }> = {};
    for (const line of r.stdout.split('\n')) {
      const m = /^(\S+) (current|rss) (\d+)$/.exec(line.trim());
      if (m) out[m[1]!.replace(/\\x2d/g, '-')] = { bytes: Number(m[3]), source: m[2] === 'current' ? 'memory.current' : 'rss' };
    }
    return out;
  }

  async status(): Promise<unknown> {
    const qubes = [];
    for (const q of this.qubes.values()) {
      qubes.push({
        name: q.name, domid: q.domid, machine: q.container.machine, leaderPid: q.container.leaderPid(), root: q.instance.dir,
        vif: q.vif, figures: q.figures, unitMemory: q.container.running ? await this.unitMemory(q.name).catch(() => ({})) : {},
      });
    }
    return { template: 'debian-13', image: this.image.dir, debs: this.image.debs, session: this.session.id, qubes };
  }

  private async saveState(): Promise<void> {
    const state = {
      session: this.session.id,
      image: this.image.dir,
      qubes: [...this.qubes.values()].map((q) => ({ name: q.name, nspawnPid: q.container.child.pid, leaderPid: q.container.leaderPid(), root: q.instance.dir, netns: q.ns.netns })),
    };
    await writeFile(join(this.stateDir, 'state.json'), JSON.stringify(state, null, 2) + '\n').catch(() => {});
  }

  /** Powers every container off (clients first), then removes instances, namespaces, the internet. */
  async down(): Promise<void> {
    const order = startOrder(this.model, [...this.qubes.keys()]).reverse();
    for (const n of order) {
      const q = this.qubes.get(n);
      if (!q) continue;
      await q.container.stop().catch(() => q.container.kill());
      await q.db.close().catch(() => {});
      await q.qdbDaemon.stop().catch(() => {});
      await q.instance.remove().catch((err) => this.log('instance removal failed', { qube: n, err: String(err) }));
      this.qubes.delete(n);
    }
    await this.internet.stop().catch(() => {});
    await this.session.destroy();
    // The default state directory (logs, consoles) is ours to remove; a caller's stays.
    if (this.ownStateDir) await rm(this.stateDir, { recursive: true, force: true });
  }
}

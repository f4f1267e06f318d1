// A provider ("netvm") with an uplink into the fake internet, the real QubesDB daemon inside
// it, the real driver daemon (qubes-net-driver run) inside it, and client qubes on vifs whose
// own eth0 is configured by the real guest agent. Vif events go through the real C hotplug
// client with the fake xenstore tools, like xl devd would run vif-route-qubes.
import { mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ipJson, nftListJson } from '@qubes-net/common';
import { openQubesDB, type QubesDB } from '@qubes-net/qubesdb';
import { NetnsSession, startFakeInternet, configureUplink, INTERNET, type Qube, type FakeInternet } from '@qubes-net/netns';
import { startQubesDB, type RunningQubesDB } from '../helpers/qubesdb.js';
import { waitFor } from '../helpers/wait.js';
import { spawnAgent, type AgentProcess, type LogLine } from '../helpers/agent-process.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const DRIVER_CLI = join(repoRoot, 'packages', 'driver-agent', 'dist', 'cli.js');
export const GUEST_CLI = join(repoRoot, 'packages', 'guest-agent', 'dist', 'cli.js');
export const HOTPLUG = join(repoRoot, 'native-bindings', 'build', 'qubes-net-hotplug');
export const VIF_SCRIPT = join(repoRoot, 'packages', 'driver-agent', 'scripts', 'vif-route-qubes');

export const CLIENT_MAC = '00:16:3e:5e:6c:00';
export const GATEWAY = '10.137.0.2';
export const GATEWAY6 = 'fd09:24ef:4179::a89:2';
/** resolv.conf of the driver in these tests: in the qube's private /run, so it can be replaced by rename. */
export const RESOLV = '/run/qn-drv/resolv.conf';
/** Inside the netvm: a wrapper standing in for the installed /usr/bin/qubes-net-driver. */
export const CLI_WRAPPER = '/run/qn-drv/qubes-net-driver';

export type { LogLine };

export interface Client {
  name: string;
  qube: Qube;
  vif: string;
  domid: number;
  ip: string;
  ip6: string;
  qdb: RunningQubesDB;
  db: QubesDB;
}

export type Daemon = AgentProcess;

export function provider(over: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    '/qubes-vm-type': 'NetVM',
    '/qubes-netvm-network': GATEWAY,
    '/qubes-netvm-gateway': GATEWAY,
    '/qubes-netvm-gateway6': GATEWAY6,
    '/qubes-netvm-netmask': '255.255.255.255',
    '/qubes-netvm-primary-dns': '10.139.1.1',
    '/qubes-netvm-secondary-dns': '10.139.1.2',
    '/connected-ips': '',
    '/connected-ips6': '',
    '/qubes-service/qubes-firewall': '0',
    ...over,
  };
}

export class DriverLab {
  daemon: Daemon | undefined;
  readonly clients = new Map<string, Client>();

  private constructor(
    readonly session: NetnsSession,
    readonly internet: FakeInternet,
    readonly netvm: Qube,
    readonly qdb: RunningQubesDB,
    readonly db: QubesDB,
  ) {}

  static async create(label: string, opts: { keys?: Record<string, string | undefined>; ipv6Uplink?: boolean } = {}): Promise<DriverLab> {
    const session = await NetnsSession.create(label);
    try {
      const [internet, netvm] = await Promise.all([startFakeInternet(session), session.qube('netvm')]);
      await internet.connectUplink(netvm, 'eth0');
      await configureUplink(netvm, 'eth0', opts.ipv6Uplink === false ? {} : { ipv6: INTERNET.netvm6 });
      const qdb = await startQubesDB({ qube: netvm });
      const lab = new DriverLab(session, internet, netvm, qdb, openQubesDB({ runDir: qdb.runDir }));
      await lab.writeKeys(provider(opts.keys));
      await mkdir(netvm.hostPath(dirname(RESOLV)), { recursive: true });
      await lab.setResolv(['198.51.100.53', '198.51.100.54']);
      // What packaging installs as /usr/bin/qubes-net-driver: the CLI the C client execs when no daemon runs.
      await writeFile(netvm.hostPath(CLI_WRAPPER), `#!/bin/sh\nexec "$QN_NODE" ${JSON.stringify(DRIVER_CLI)} "$@"\n`, { mode: 0o755 });
      return lab;
    } catch (err) {
      await session.destroy().catch(() => undefined);
      throw err;
    }
  }

  async destroy(): Promise<void> {
    await this.stopDaemon().catch(() => undefined);
    for (const c of this.clients.values()) {
      await c.db.close().catch(() => undefined);
      await c.qdb.stop().catch(() => undefined);
    }
    await this.db.close().catch(() => undefined);
    await this.qdb.stop().catch(() => undefined);
    await this.session.destroy();
  }

  async writeKeys(keys: Record<string, string | undefined>): Promise<void> {
    for (const [k, v] of Object.entries(keys)) {
      if (v === undefined) await this.db.rm(k);
      else await this.db.write(k, v);
    }
  }

  /** Writes the driver's resolv.conf in place. */
  async setResolv(servers: string[], extra = ''): Promise<void> {
    await writeFile(this.netvm.hostPath(RESOLV), servers.map((s) => `nameserver ${s}\n`).join('') + extra);
  }

  /** Replaces the driver's resolv.conf the way DHCP clients do: a new file renamed over it. */
  async replaceResolv(text: string): Promise<void> {
    await writeFile(this.netvm.hostPath(RESOLV + '.new'), text);
    await this.netvm.exec('mv', [RESOLV + '.new', RESOLV]);
  }

  startDaemon(args: string[] = []): Daemon {
    this.daemon = spawnAgent(this.netvm, [DRIVER_CLI, 'run', '--resolv-conf', RESOLV, ...args]);
    return this.daemon;
  }

  async startDaemonReady(args: string[] = []): Promise<Daemon> {
    const d = this.startDaemon(args);
    await waitFor('driver ready', () => {
      if (d.child.exitCode !== null) throw new Error(`driver exited ${d.child.exitCode}: ${this.netvm.outputOf(d.child).stderr}`);
      return d.logs.some((l) => l.msg === 'driver ready');
    });
    return d;
  }

  async stopDaemon(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const d = this.daemon;
    if (!d) return null;
    this.daemon = undefined;
    if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill(signal);
    return d.exited;
  }

  logs(msg?: string): LogLine[] {
    return (this.daemon?.logs ?? []).filter((l) => msg === undefined || l.msg === msg);
  }

  /** A client qube on vif<domid>.0, its eth0 configured by the guest agent from its own QubesDB. */
  async addClient(name: string, domid: number, opts: { ip?: string; ip6?: string | null } = {}): Promise<Client> {
    const vif = `vif${domid}.0`;
    const ip = opts.ip ?? `10.137.0.${domid}`;
    const ip6 = opts.ip6 === null ? '' : opts.ip6 ?? `fd09:24ef:4179::a89:${domid.toString(16)}`;
    const qube = await this.session.qube(name);
    await this.session.link(this.netvm, vif, qube, 'eth0', { aMac: 'fe:ff:ff:ff:ff:ff', bMac: CLIENT_MAC, up: false });
    const qdb = await startQubesDB({ qube });
    const db = openQubesDB({ runDir: qdb.runDir });
    const keys: Record<string, string> = {
      '/qubes-vm-type': 'AppVM', '/qubes-mac': CLIENT_MAC, '/qubes-ip': ip, '/qubes-netmask': '255.255.255.255', '/qubes-gateway': GATEWAY,
      '/qubes-primary-dns': '10.139.1.1', '/qubes-secondary-dns': '10.139.1.2',
    };
    if (ip6) Object.assign(keys, { '/qubes-ip6': ip6, '/qubes-gateway6': GATEWAY6 });
    for (const [k, v] of Object.entries(keys)) await db.write(k, v);
    // eth0 is a veth (driver "none"), which the guest agent only takes as an uplink when told.
    const res = await qube.exec(process.execPath, [GUEST_CLI, 'apply'], { allowFailure: true, env: { QUBES_NET_UPLINK_DRIVERS: 'vif,none' } });
    if (res.exitCode !== 0) throw new Error(`guest agent apply in ${name} failed (${res.exitCode}): ${res.stdout}${res.stderr}`);
    const c: Client = { name, qube, vif, domid, ip, ip6, qdb, db };
    this.clients.set(name, c);
    await this.setXenstore(c);
    return c;
  }

  xenbusPath(domid: number): string {
    return `/local/domain/1/backend/vif/${domid}/0`;
  }

  async setXenstore(c: { domid: number; ip: string; ip6: string }, over: { ip?: string; mac?: string } = {}): Promise<void> {
    const base = this.xenbusPath(c.domid);
    await this.netvm.xenstoreWrite(`${base}/ip`, over.ip ?? [c.ip, c.ip6].filter(Boolean).join(' '));
    await this.netvm.xenstoreWrite(`${base}/mac`, over.mac ?? CLIENT_MAC);
    await this.netvm.xenstoreWrite(`${base}/type`, 'vif');
  }

  /** Runs the hotplug script as xl devd does (vif-route-qubes → C client → daemon or CLI). */
  async hotplug(command: string, vif: string, domid: number, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
    const r = await this.netvm.exec(VIF_SCRIPT, [command], {
      allowFailure: true,
      env: { vif, XENBUS_PATH: this.xenbusPath(domid), QUBES_NET_HOTPLUG: HOTPLUG, QUBES_NET_DRIVER_CLI: CLI_WRAPPER, QN_NODE: process.execPath, ...env },
    });
    return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  }

  async online(c: Client): Promise<void> {
    const r = await this.hotplug('online', c.vif, c.domid);
    if (r.code !== 0) throw new Error(`hotplug online ${c.vif} failed (${r.code}): ${r.stderr}${r.stdout}`);
  }

  async vifEntry(vif: string): Promise<Record<string, string>> {
    const m = await this.db.multiread(`/qubes-vif/${vif}/`);
    return Object.fromEntries([...m].map(([k, v]) => [k.slice(`/qubes-vif/${vif}/`.length), v]));
  }

  /** Waits for the vif's QubesDB entry (written right after the hotplug reply) to show `state`. */
  async waitEntry(vif: string, state: string): Promise<Record<string, string>> {
    return waitFor(`/qubes-vif/${vif}/state = ${state}`, async () => {
      const e = await this.vifEntry(vif);
      return e.state === state ? e : undefined;
    });
  }

  /** `qubes-net-driver status --json` run inside the netvm. */
  async status(): Promise<any> {
    const r = await this.netvm.exec(process.execPath, [DRIVER_CLI, 'status', '--json', '--resolv-conf', RESOLV]);
    return JSON.parse(r.stdout);
  }

  async cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const r = await this.netvm.exec(process.execPath, [DRIVER_CLI, ...args], { allowFailure: true });
    return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  }

  /** The netvm's nft table as JSON (undefined when missing). */
  table(family: 'ip' | 'ip6' | 'inet', table = 'qubes'): Promise<{ nftables: Record<string, any>[] } | undefined> {
    return nftListJson(['table', family, table], { netns: this.netvm.netns });
  }

  async setElements(family: 'ip' | 'ip6', set: string): Promise<string[]> {
    const doc = await nftListJson(['set', family, 'qubes', set], { netns: this.netvm.netns });
    const elems = doc?.nftables.find((x) => x.set)?.set.elem ?? [];
    return elems.map((e: any) => (typeof e === 'object' && Array.isArray(e.concat) ? e.concat.join(' ') : String(e))).sort();
  }

  async counter(family: 'ip' | 'ip6', chain: string): Promise<number> {
    const doc = await nftListJson(['chain', family, 'qubes', chain], { netns: this.netvm.netns });
    let n = 0;
    for (const item of doc?.nftables ?? []) for (const e of item.rule?.expr ?? []) if (e.counter) n += Number(e.counter.packets);
    return n;
  }

  /** Routes, addresses and permanent neighbours on one netvm interface, as sorted strings. */
  async vifKernel(vif: string): Promise<{ routes: string[]; addrs: string[]; neigh: string[]; group: string | undefined; up: boolean }> {
    const ns = { netns: this.netvm.netns };
    const [links, r4, r6, neigh] = await Promise.all([
      ipJson<any[]>(['addr', 'show'], ns),
      ipJson<any[]>(['-4', 'route', 'show', 'table', 'main'], ns),
      ipJson<any[]>(['-6', 'route', 'show', 'table', 'main'], ns),
      ipJson<any[]>(['neigh', 'show', 'nud', 'permanent'], ns),
    ]);
    const link = links.find((l) => l.ifname === vif);
    return {
      routes: [...r4, ...r6].filter((r) => r.dev === vif && r.protocol !== 'kernel').map((r) => `${r.dst} metric ${r.metric ?? 0}`).sort(),
      addrs: (link?.addr_info ?? []).filter((a: any) => a.scope !== 'link').map((a: any) => `${a.local}/${a.prefixlen}`).sort(),
      neigh: neigh.filter((n) => n.dev === vif).map((n) => `${n.dst} ${n.lladdr}`).sort(),
      group: link?.group,
      up: !!link?.flags?.includes('UP'),
    };
  }

  socketExists(): boolean {
    return existsSync(this.netvm.hostPath('/run/qubes-net/driver.sock'));
  }
}

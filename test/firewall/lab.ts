// A small Qubes-like network for the firewall's namespace tests: a netvm running our QubesDB
// daemon, the driver agent (vifs, anti-spoofing, NAT, DNS DNAT, the firewall skeleton before
// forwarding) and `qubes-net-firewall run`; client qubes behind it on vifs brought up through
// the driver's hotplug path; the fake internet (@qubes-net/netns) on its uplink. Clients
// configure their own side by hand (address, routes): what they send is the point here.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetnsSession, startFakeInternet, configureUplink, type Qube, type FakeInternet } from '@qubes-net/netns';
import { openQubesDB, type QubesDB } from '@qubes-net/qubesdb';
import { startQubesDB, type RunningQubesDB } from '../helpers/qubesdb.js';
import { waitFor } from '../helpers/wait.js';
import { spawnAgent, type AgentProcess, type LogLine } from '../helpers/agent-process.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const FIREWALL_CLI = join(repoRoot, 'packages', 'firewall', 'dist', 'cli.js');
export const DRIVER_CLI = join(repoRoot, 'packages', 'driver-agent', 'dist', 'cli.js');

export const C1 = '10.137.0.7';
export const C1_V6 = 'fd09:24ef:4179::a89:7';
export const C2 = '10.137.0.8';
export const GATEWAY = '10.138.0.1';
export const GATEWAY6 = 'fd09:24ef:4179::a8a:1';
/** The virtual DNS addresses clients use; the driver DNATs them to the netvm's resolvers. */
export const VDNS1 = '10.139.1.1';
export const VDNS2 = '10.139.1.2';
/** The fake internet (see @qubes-net/netns internet-plan). */
export const WEB = '203.0.113.80';
export const OTHER = '203.0.113.81';
export const WEB6 = '2001:db8:80::80';
export const DNS1 = '198.51.100.53';
export const DNS2 = '198.51.100.54';

export type Process = AgentProcess;

async function waitLog(what: string, q: Qube, p: Process, msg: string, timeoutMs = 60_000): Promise<LogLine> {
  return waitFor(what, () => {
    if (p.child.exitCode !== null) throw new Error(`${what}: process exited ${p.child.exitCode}: ${q.outputOf(p.child).stderr} ${JSON.stringify(p.logs.slice(-5))}`);
    return p.logs.find((l) => l.msg === msg);
  }, { timeoutMs });
}

export class FirewallLab {
  firewall: Process | undefined;
  driver: Process | undefined;
  readonly clients = new Map<string, { qube: Qube; ipv4: string; ipv6?: string }>();
  private domid = 20;

  private constructor(
    readonly session: NetnsSession,
    readonly internet: FakeInternet,
    readonly netvm: Qube,
    readonly qdb: RunningQubesDB,
    readonly db: QubesDB,
  ) {}

  static async create(label: string): Promise<FirewallLab> {
    const session = await NetnsSession.create(label);
    try {
      // IPv6 is routed, not NATed, so the internet routes the clients' prefix back.
      const internet = await startFakeInternet(session, { routesBack: ['fd09::/16'] });
      const netvm = await session.qube('netvm');
      await internet.connectUplink(netvm, 'eth0');
      await configureUplink(netvm, 'eth0', { ipv6: '2001:db8:0:1::2/64' });
      const qdb = await startQubesDB({ qube: netvm });
      const db = openQubesDB({ runDir: qdb.runDir });
      for (const [k, v] of Object.entries({
        '/qubes-netvm-gateway': GATEWAY,
        '/qubes-netvm-gateway6': GATEWAY6,
        '/qubes-netvm-primary-dns': VDNS1,
        '/qubes-netvm-secondary-dns': VDNS2,
        '/connected-ips': '',
        '/connected-ips6': '',
        '/qubes-service/qubes-firewall': '1',
      })) await db.write(k, v);
      const lab = new FirewallLab(session, internet, netvm, qdb, db);
      await lab.startDriver();
      return lab;
    } catch (e) {
      await session.destroy();
      throw e;
    }
  }

  async startDriver(): Promise<void> {
    const p = spawnAgent(this.netvm, [DRIVER_CLI, 'run'], { QUBES_NET_LOG_LEVEL: 'info' });
    this.driver = p;
    await waitLog('driver ready', this.netvm, p, 'driver ready');
  }

  /**
   * A client qube on a new vif of the netvm, brought online through the driver's hotplug path
   * (xenstore entries, `qubes-net-driver hotplug online`), with its own side configured.
   */
  async addClient(name: string, ipv4: string, ipv6?: string): Promise<Qube> {
    const domid = this.domid++;
    const q = await this.session.qube(name);
    const vif = `vif${domid}.0`;
    const mac = `00:16:3e:5e:6c:${domid.toString(16).padStart(2, '0')}`;
    await this.session.link(this.netvm, vif, q, 'eth0', { aMac: 'fe:ff:ff:ff:ff:ff', bMac: mac });
    const connected4 = [...[...this.clients.values()].map((c) => c.ipv4), ipv4];
    const connected6 = [...[...this.clients.values()].flatMap((c) => (c.ipv6 ? [c.ipv6] : [])), ...(ipv6 ? [ipv6] : [])];
    await this.db.write('/connected-ips', connected4.join(' '));
    await this.db.write('/connected-ips6', connected6.join(' '));
    const backend = `/local/domain/0/backend/vif/${domid}/0`;
    await this.netvm.xenstoreWrite(`${backend}/ip`, [ipv4, ...(ipv6 ? [ipv6] : [])].join(' '));
    await this.netvm.xenstoreWrite(`${backend}/mac`, mac);
    const hp = await this.netvm.exec(process.execPath, [DRIVER_CLI, 'hotplug', 'online'], { env: { vif, XENBUS_PATH: backend }, allowFailure: true });
    if (hp.exitCode !== 0) throw new Error(`hotplug online ${vif}: ${hp.stderr}`);
    const lines = ['link set lo up', `addr add ${ipv4}/32 dev eth0`, `route add ${GATEWAY} dev eth0`, `route add default via ${GATEWAY} dev eth0`];
    if (ipv6) lines.push(`addr add ${ipv6}/128 dev eth0 nodad`, `route add ${GATEWAY6} dev eth0`, `route add ::/0 via ${GATEWAY6} dev eth0`);
    await q.exec('ip', ['-batch', '-'], { input: lines.join('\n') + '\n' });
    this.clients.set(name, { qube: q, ipv4, ...(ipv6 ? { ipv6 } : {}) });
    return q;
  }

  client(name: string): Qube {
    return this.clients.get(name)!.qube;
  }

  /** Starts `qubes-net-firewall run` in the netvm and waits for READY. */
  async startFirewall(extra: string[] = ['--no-hooks'], env: Record<string, string> = {}): Promise<Process> {
    const p = spawnAgent(this.netvm, [FIREWALL_CLI, 'run', '--min-refresh-s', '1', '--retry-refresh-s', '1', ...extra], env);
    this.firewall = p;
    await waitLog('firewall ready', this.netvm, p, 'firewall ready');
    return p;
  }

  async stopFirewall(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const fw = this.firewall;
    if (!fw) return null;
    this.firewall = undefined;
    if (fw.child.exitCode !== null || fw.child.signalCode !== null) return fw.child.exitCode;
    fw.child.kill(signal);
    return fw.exited;
  }

  /** The generation in /qubes-firewall-applied/<ip> (0 when absent). */
  async generation(ip: string): Promise<number> {
    const v = await this.db.read(`/qubes-firewall-applied/${ip}`);
    return v ? Number(v.split(' ')[0]) : 0;
  }

  /** dom0's write sequence, then waits for the firewall's feedback; returns the outcome line. */
  async setRules(ip: string, rules: Record<string, string>): Promise<string> {
    const before = await this.generation(ip);
    await this.writeRules(ip, rules);
    return waitFor(`rules of ${ip} applied`, async () => {
      const v = await this.db.read(`/qubes-firewall-applied/${ip}`);
      return v && Number(v.split(' ')[0]) > before ? v : undefined;
    });
  }

  /** dom0's sequence: rm the rules directory, write policy and rules, the marker last. */
  async writeRules(ip: string, rules: Record<string, string>): Promise<void> {
    await this.db.rm(`/qubes-firewall/${ip}/`);
    for (const [k, v] of Object.entries(rules)) await this.db.write(`/qubes-firewall/${ip}/${k}`, v);
    await this.db.write(`/qubes-firewall/${ip}`, '');
  }

  // ---- probes: real traffic from a client qube ----

  async ping(q: Qube, addr: string): Promise<boolean> {
    return (await q.exec('qn-ping', ['-c', '1', '-W', '1000', addr], { allowFailure: true })).exitCode === 0;
  }

  async http(q: Qube, host: string): Promise<boolean> {
    const url = `http://${host.includes(':') ? `[${host}]` : host}/`;
    return (await q.exec('curl', ['-sS', '-o', '/dev/null', '--max-time', '3', url], { allowFailure: true })).exitCode === 0;
  }

  /** A short exchange with a line-echo port. */
  async tcp(q: Qube, host: string, port: number): Promise<boolean> {
    return (await q.exec('qn-tcp-hold', [host, String(port), '--duration', '300', '--stall', '1000'], { allowFailure: true })).exitCode === 0;
  }

  async dns(q: Qube, server: string, name = 'www.example.test'): Promise<boolean> {
    const r = await q.exec('qn-dns-query', [server, name, '--timeout', '1000'], { allowFailure: true });
    return r.exitCode === 0 && JSON.parse(r.stdout).rcode === 'NOERROR';
  }

  /** A held TCP connection to a line-echo port, with its events. */
  hold(q: Qube, host: string, port: number, stallMs = 1500) {
    const child = q.spawn('qn-tcp-hold', [host, String(port), '--interval', '50', '--stall', String(stallMs)]);
    const events: any[] = [];
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) if (l) events.push(JSON.parse(l));
    });
    return { child, events, echoes: () => events.filter((e) => e.event === 'echo').length, broken: () => events.some((e) => e.event === 'broken') };
  }

  async nft(args: string[]): Promise<string> {
    return (await this.netvm.exec('nft', args)).stdout;
  }

  async writeNetvmFile(path: string, text: string, mode = 0o644): Promise<void> {
    const host = this.netvm.hostPath(path);
    await mkdir(dirname(host), { recursive: true });
    await writeFile(host, text, { mode });
  }

  async destroy(): Promise<void> {
    await this.stopFirewall('SIGKILL').catch(() => undefined);
    this.driver?.child.kill('SIGKILL');
    await this.db.close().catch(() => undefined);
    await this.qdb.stop().catch(() => undefined);
    await this.internet.stop().catch(() => undefined);
    await this.session.destroy();
  }
}

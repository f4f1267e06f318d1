// The fake internet: a qube named `internet` holding DNS servers (dnsmasq, one per address),
// an HTTP server and TCP line-echo services, reached through one veth `uplink0` that
// connectUplink() plugs into the netvm. Only documentation address ranges are used, and
// nothing is linked to the host: the "internet" is just another namespace.
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { ipBatch } from '@qubes-net/common';
import { createVethPair, type LinkOptions } from './link.js';
import { DEFAULT_HOSTS, INTERNET, dnsServers, dnsmasqArgs, hostsFile, parseQueryLog, serviceAddresses, type DnsLogEntry, type HostEntry } from './internet-plan.js';
import { pollUntil } from './poll.js';
import type { Qube } from './qube.js';
import type { NetnsSession } from './session.js';

export interface FakeInternetOptions {
  /** Qube name (default 'internet'). */
  name?: string;
  /** Extra names served by the DNS servers (added to DEFAULT_HOSTS). */
  hosts?: HostEntry[];
  /**
   * Prefixes the internet routes back to the netvm (via its default uplink addresses
   * 192.0.2.2 / 2001:db8:0:1::2), e.g. for un-NATed IPv6. Default none: like the real
   * internet, only the uplink subnet is reachable, so traffic must be masqueraded.
   */
  routesBack?: string[];
}

export interface ServiceConnection {
  service: 'http' | 'echo';
  local: string;
  remote: string;
}

/** Directory of the fake internet's files inside its qube. */
const DATA_DIR = '/run/qubes-net-internet';

export class FakeInternet {
  readonly uplinkIf = INTERNET.uplinkIf;
  readonly addresses = INTERNET;
  readonly dnsServers: string[] = dnsServers();
  private readonly dns = new Map<string, ChildProcess>();
  private services: ChildProcess | undefined;
  private readonly conns: ServiceConnection[] = [];
  private uplinkPeer: { qube: Qube; ifname: string } | undefined;

  constructor(
    readonly session: NetnsSession,
    readonly qube: Qube,
    private hosts: HostEntry[],
    private readonly routesBack: string[],
  ) {}

  private logFile(server: string): string {
    return `${DATA_DIR}/dns-${server}.log`;
  }

  /** Sets addresses and starts every server. Called by startFakeInternet(). */
  async start(): Promise<void> {
    await mkdir(this.qube.hostPath(DATA_DIR), { recursive: true });
    await writeFile(this.qube.hostPath(`${DATA_DIR}/hosts`), hostsFile(this.hosts));
    const lines = serviceAddresses().map((a) => (a.includes(':') ? `addr add ${a}/128 dev lo nodad` : `addr add ${a}/32 dev lo`));
    const res = await ipBatch(lines, { netns: this.qube.netns });
    if (!res.ok) throw new Error(`fake internet addresses: ${res.stderr.trim()}`);
    await Promise.all([this.startDns(), this.startServices()]);
  }

  private async startServices(): Promise<void> {
    const addrArgs = [INTERNET.web4, INTERNET.other4, INTERNET.web6, INTERNET.other6].flatMap((a) => ['--addr', a]);
    const child = this.qube.spawn('qn-services', [...addrArgs, '--http-port', String(INTERNET.httpPort), ...INTERNET.echoPorts.flatMap((p) => ['--echo-port', String(p)])], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.services = child;
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const ready = new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        let ev: { event?: string; service?: 'http' | 'echo'; local?: string; remote?: string };
        try {
          ev = JSON.parse(line);
        } catch {
          return;
        }
        if (ev.event === 'listening') resolve();
        else if (ev.event === 'conn' && ev.service && ev.local && ev.remote) this.conns.push({ service: ev.service, local: ev.local, remote: ev.remote });
      });
      child.once('exit', (code) => reject(new Error(`qn-services exited (${code}): ${stderr.trim()}`)));
      child.once('error', reject);
    });
    await ready;
  }

  /** Starts the DNS server(s) at `server` (default: all), waiting until each listens. */
  async startDns(server?: string): Promise<void> {
    const targets = server ? [this.checkServer(server)] : this.dnsServers;
    await Promise.all(targets.map(async (s) => {
      if (this.dns.get(s)?.exitCode === null) return;
      const child = this.qube.spawn('dnsmasq', dnsmasqArgs(s, { hosts: `${DATA_DIR}/hosts`, log: this.logFile(s) }), { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d) => (stderr += d));
      this.dns.set(s, child);
      const local = s.includes(':') ? `[${s}]:53` : `${s}:53`;
      await pollUntil(`dnsmasq on ${s}`, async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`dnsmasq for ${s} exited: ${stderr.trim()}`);
        const { stdout } = await this.qube.exec('ss', ['-H', '-uln']);
        return stdout.split('\n').some((line) => line.split(/\s+/).includes(local));
      });
    }));
  }

  /** Stops the DNS server(s) at `server` (default: all); queries to it then time out. */
  async stopDns(server?: string): Promise<void> {
    const targets = server ? [this.checkServer(server)] : [...this.dns.keys()];
    await Promise.all(targets.map(async (s) => {
      const child = this.dns.get(s);
      this.dns.delete(s);
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    }));
  }

  async restartDns(server?: string): Promise<void> {
    await this.stopDns(server);
    await this.startDns(server);
  }

  private checkServer(server: string): string {
    if (!this.dnsServers.includes(server)) throw new Error(`${server} is not a fake internet DNS server (${this.dnsServers.join(', ')})`);
    return server;
  }

  /** The names the DNS servers answer for now. */
  hostEntries(): HostEntry[] {
    return this.hosts.map((h) => ({ name: h.name, addresses: [...h.addresses] }));
  }

  /**
   * Replaces the served names with DEFAULT_HOSTS plus `extra` (e.g. to make a name the
   * firewall resolved point elsewhere). Running servers reload on SIGHUP; resolves once every
   * one of them has re-read the file.
   */
  async setHosts(extra: HostEntry[]): Promise<void> {
    const hosts = [...DEFAULT_HOSTS, ...extra];
    const text = hostsFile(hosts);
    this.hosts = hosts;
    // In place: a rename would not change what dnsmasq re-reads (same path), but keep one inode anyway.
    await writeFile(this.qube.hostPath(`${DATA_DIR}/hosts`), text);
    const running = [...this.dns.entries()].filter(([, c]) => c.exitCode === null && c.signalCode === null);
    const reads = async (s: string) => (await readFile(this.qube.hostPath(this.logFile(s)), 'utf8').catch(() => '')).split(`read ${DATA_DIR}/hosts`).length;
    const before = new Map(await Promise.all(running.map(async ([s]) => [s, await reads(s)] as const)));
    for (const [, child] of running) child.kill('SIGHUP');
    await Promise.all(running.map(([s]) => pollUntil(`dnsmasq on ${s} reloaded`, async () => (await reads(s)) > before.get(s)!)));
  }

  /** Queries seen by one server (default: all servers together), oldest first. */
  async queryLog(server?: string): Promise<(DnsLogEntry & { server: string })[]> {
    const out: (DnsLogEntry & { server: string })[] = [];
    for (const s of server ? [this.checkServer(server)] : this.dnsServers) {
      const text = await readFile(this.qube.hostPath(this.logFile(s)), 'utf8').catch(() => '');
      out.push(...parseQueryLog(text).map((e) => ({ ...e, server: s })));
    }
    return out;
  }

  /** How many queries reached `server` (default all), optionally only for `name`. */
  async queryCount(server?: string, name?: string): Promise<number> {
    return (await this.queryLog(server)).filter((e) => name === undefined || e.name === name).length;
  }

  /** Forgets the query logs (dnsmasq appends, so truncating in place is safe). */
  async clearQueryLog(): Promise<void> {
    await Promise.all(this.dnsServers.map((s) => truncate(this.qube.hostPath(this.logFile(s))).catch(() => {})));
  }

  /** Connections accepted so far by the HTTP and echo services (`remote` shows what source address arrived). */
  connections(): ServiceConnection[] {
    return [...this.conns];
  }

  /**
   * Plugs the netvm in: veth `uplink0` here ↔ `ifname` in the netvm (default eth0). The
   * internet side gets 192.0.2.1/24 and 2001:db8:0:1::1/64; the netvm side gets nothing
   * (configureUplink() or the guest agent under test does that). One uplink per internet.
   */
  async connectUplink(netvm: Qube, ifname = 'eth0', opts: Pick<LinkOptions, 'bMac' | 'mtu'> = {}): Promise<void> {
    if (this.uplinkPeer) throw new Error(`the fake internet is already connected to ${this.uplinkPeer.qube.name}`);
    await createVethPair(this.qube.netns, this.uplinkIf, netvm.netns, ifname, { up: true, ...(opts.bMac ? { bMac: opts.bMac } : {}), ...(opts.mtu ? { mtu: opts.mtu } : {}) });
    this.uplinkPeer = { qube: netvm, ifname };
    const lines = [`addr add ${INTERNET.uplink4} dev ${this.uplinkIf}`, `addr add ${INTERNET.uplink6} dev ${this.uplinkIf} nodad`];
    for (const prefix of this.routesBack) {
      lines.push(prefix.includes(':') ? `route replace ${prefix} via ${INTERNET.netvm6.split('/')[0]} dev ${this.uplinkIf}` : `route replace ${prefix} via ${INTERNET.netvm4.split('/')[0]} dev ${this.uplinkIf}`);
    }
    const res = await ipBatch(lines, { netns: this.qube.netns });
    if (!res.ok) throw new Error(`fake internet uplink: ${res.stderr.trim()}`);
  }

  /** Removes the uplink veth (the netvm loses its uplink interface). */
  async disconnectUplink(): Promise<void> {
    if (!this.uplinkPeer) return;
    await this.session.unlink(this.qube, this.uplinkIf);
    this.uplinkPeer = undefined;
  }

  /** Stops every server and removes the internet qube. */
  async stop(): Promise<void> {
    await this.stopDns();
    this.services?.kill('SIGTERM');
    await this.session.removeQube(this.qube.name);
  }
}

const PREFIX_RE = /^[0-9a-fA-F.:]+\/\d{1,3}$/;

/** Creates the internet qube and starts its servers; see FakeInternet. */
export async function startFakeInternet(session: NetnsSession, opts: FakeInternetOptions = {}): Promise<FakeInternet> {
  for (const p of opts.routesBack ?? []) if (!PREFIX_RE.test(p)) throw new Error(`invalid route prefix ${JSON.stringify(p)}`);
  const hosts = [...DEFAULT_HOSTS, ...(opts.hosts ?? [])];
  hostsFile(hosts); // validate before creating anything
  const qube = await session.qube(opts.name ?? 'internet');
  const net = new FakeInternet(session, qube, hosts, opts.routesBack ?? []);
  try {
    await net.start();
  } catch (err) {
    await session.removeQube(qube.name).catch(() => {});
    throw err;
  }
  return net;
}

// The lab's outside world: @qubes-net/netns's fake internet (dnsmasq for example.test, HTTP
// and echo services, documentation addresses only, no route beyond it), plugged into the
// uplink qube's eth0 the way a real sys-net's NIC and DHCP would be.
import { writeFile } from 'node:fs/promises';
import { parseIPv4, parseIPv6 } from '@qubes-net/common';
import { INTERNET, configureUplink, startFakeInternet, type FakeInternet, type NetnsSession, type Qube } from '@qubes-net/netns';
import type { InternetSpec } from '../topology/model.js';

/** Name of the internet's namespace qube (reserved: no topology qube may use it). */
export const INTERNET_QUBE = 'internet';

export class LabInternet {
  private plugged: Qube | undefined;
  private dns: string[];
  private readonly ipv4: boolean;

  private constructor(readonly net: FakeInternet, private readonly spec: InternetSpec) {
    this.dns = spec.dns ?? (spec.ipv4 === false ? [...INTERNET.dns6] : [...INTERNET.dns4]);
    this.ipv4 = spec.ipv4 !== false;
  }

  static async start(session: NetnsSession, spec: InternetSpec): Promise<LabInternet> {
    return new LabInternet(await startFakeInternet(session, { name: INTERNET_QUBE }), spec);
  }

  get addresses(): typeof INTERNET {
    return INTERNET;
  }

  /** The DNS servers the uplink qube's resolv.conf lists. */
  get dnsServers(): readonly string[] {
    return this.dns;
  }

  describe(): string {
    return `gateway ${INTERNET.gateway4}, DNS ${this.dns.join(' ')}, HTTP ${INTERNET.web4} (www.example.test)`;
  }

  /** Plugs `netvm`'s eth0 into the internet and configures it as DHCP would (v4 and v6). */
  async plug(netvm: Qube): Promise<void> {
    if (this.plugged) throw new Error(`the fake internet is already plugged into ${this.plugged.name}: only one uplink qube`);
    await this.net.connectUplink(netvm, 'eth0', this.spec.mtu ? { mtu: this.spec.mtu } : {});
    this.plugged = netvm;
    await configureUplink(netvm, 'eth0', { ipv6: INTERNET.netvm6, dns: this.dns, ...(this.ipv4 ? {} : { ipv4: false as const }) });
  }

  async unplug(netvm: Qube): Promise<void> {
    if (this.plugged !== netvm) return;
    await this.net.disconnectUplink();
    this.plugged = undefined;
  }

  /**
   * Changes the upstream DNS servers: the uplink qube's resolv.conf is rewritten (in place:
   * it is a bind mount) as a DHCP renewal would. Servers the fake internet does not run get
   * no answer (a dead upstream), which is a legitimate scenario.
   */
  async setDns(servers: readonly string[]): Promise<void> {
    for (const s of servers) if (!parseIPv4(s) && !parseIPv6(s)) throw new Error(`not an IP address: ${JSON.stringify(s)}`);
    this.dns = [...servers];
    await this.net.startDns();
    if (this.plugged) await writeFile(this.plugged.hostPath('/etc/resolv.conf'), servers.map((s) => `nameserver ${s}\n`).join(''));
  }

  async stop(): Promise<void> {
    await this.net.stop();
  }
}

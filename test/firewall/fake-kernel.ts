// The engine's kernel in unit tests: common's FakeKernel (nft semantics, all-or-nothing
// transactions) plus an in-memory conntrack table, with short accessors for the firewall's
// tables. Real behaviour is tested in namespaces.
import { FakeKernel } from '@qubes-net/common/kernel';
import { firewallTable, DISPATCH_MAP, DNS_SET, type KernelPort, type Connection, type Family } from '@qubes-net/firewall';

export class FirewallFakeKernel extends FakeKernel implements KernelPort {
  readonly deleted: Connection[] = [];
  connections: Connection[] = [];

  async listConnections(family: Family, src?: string) {
    return { ok: true, conns: this.connections.filter((c) => c.family === family && (!src || c.orig.src === src)) };
  }

  async deleteConnection(conn: Connection) {
    this.deleted.push(conn);
    this.connections = this.connections.filter((c) => c !== conn);
    return { ok: true };
  }

  /** The rules of a chain of our table (with their comments), or undefined if missing. */
  chain(family: Family, name: string): string[] | undefined {
    return this.rules(firewallTable(family), name);
  }

  /** Source address → chain of the dispatch map. */
  dispatch(family: Family): Map<string, string> {
    const els = this.elements(firewallTable(family), DISPATCH_MAP) ?? [];
    return new Map(els.map((e) => /^(\S+) : jump (\S+)$/.exec(e)!.slice(1) as [string, string]));
  }

  dnsAddr(family: Family): string[] {
    return this.elements(firewallTable(family), DNS_SET) ?? [];
  }

  present(family: Family): boolean {
    return this.table(firewallTable(family)) !== undefined;
  }
}

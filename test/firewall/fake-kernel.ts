// A small in-memory stand-in for the kernel, for unit tests of the engine's logic only: it
// follows the few nft commands the engine emits (tables, qbs- chains, dispatch elements,
// dns-addr) closely enough to check what would be in place, and fails like nft does when a
// transaction refers to something missing. Real behaviour is tested in namespaces.
import type { KernelPort, Connection, Family } from '@qubes-net/firewall';

interface FamilyTables {
  present: boolean;
  chains: Map<string, string[]>;
  dispatch: Map<string, string>;
  dnsAddr: string[];
}

export class FakeKernel implements KernelPort {
  readonly tables: Record<Family, FamilyTables> = {
    4: { present: false, chains: new Map(), dispatch: new Map(), dnsAddr: [] },
    6: { present: false, chains: new Map(), dispatch: new Map(), dnsAddr: [] },
  };
  readonly scripts: string[] = [];
  readonly deleted: Connection[] = [];
  connections: Connection[] = [];
  /** A script containing this text is rejected (like nft rejecting a rule). */
  rejectIf: ((script: string) => boolean) | undefined;

  async apply(script: string): Promise<{ ok: true } | { ok: false; error: string }> {
    this.scripts.push(script);
    if (this.rejectIf?.(script)) return { ok: false, error: 'Error: Could not process rule: Operation not supported' };
    // Transaction: work on a copy, commit only if every line succeeds.
    const copy = structuredClone(this.tables);
    for (const line of script.split('\n')) {
      if (!line.trim()) continue;
      const err = this.exec(copy, line);
      if (err) return { ok: false, error: `Error: ${err}\n${line}` };
    }
    Object.assign(this.tables, copy);
    return { ok: true };
  }

  private exec(t: Record<Family, FamilyTables>, line: string): string | undefined {
    const m = /^(add|flush|delete) (table|chain|set|map|rule|element) (ip6?) qubes-firewall ?(\S*)(.*)$/.exec(line);
    if (!m) return `unsupported line`;
    const [, verb, what, fam, name, rest] = m as unknown as [string, string, string, string, string, string];
    const f = t[fam === 'ip' ? 4 : 6];
    if (what === 'table' && verb === 'add') {
      f.present = true;
      return undefined;
    }
    if (!f.present) return 'No such file or directory (table)';
    if (what === 'chain') {
      if (verb === 'add') {
        if (!f.chains.has(name)) f.chains.set(name, []);
      } else if (!f.chains.has(name)) return 'No such file or directory (chain)';
      else if (verb === 'flush') f.chains.set(name, []);
      else {
        if ([...f.dispatch.values()].includes(name)) return 'Device or resource busy';
        f.chains.delete(name);
      }
      return undefined;
    }
    if (what === 'rule') {
      const c = f.chains.get(name);
      if (!c) return 'No such file or directory (rule chain)';
      c.push(rest.trim());
      return undefined;
    }
    if (what === 'element' && name === 'dispatch') {
      const el = /\{ (\S+)(?: : jump (\S+))? \}/.exec(rest);
      if (!el) return 'bad element';
      if (verb === 'add') {
        if (!f.chains.has(el[2]!)) return 'No such file or directory (jump target)';
        f.dispatch.set(el[1]!, el[2]!);
      } else if (!f.dispatch.delete(el[1]!)) return 'No such file or directory (element)';
      return undefined;
    }
    if (name === 'dns-addr') {
      if (verb === 'flush') f.dnsAddr = [];
      else if (what === 'element') f.dnsAddr.push(...(/\{ (.*) \}/.exec(rest)?.[1] ?? '').split(', '));
      return undefined;
    }
    return undefined;
  }

  async readState(family: Family) {
    const f = this.tables[family];
    return { present: f.present, dispatch: new Map(f.dispatch), chains: [...f.chains.keys()] };
  }

  async listConnections(family: Family, src?: string) {
    return { ok: true, conns: this.connections.filter((c) => c.family === family && (!src || c.orig.src === src)) };
  }

  async deleteConnection(conn: Connection) {
    this.deleted.push(conn);
    this.connections = this.connections.filter((c) => c !== conn);
    return { ok: true };
  }

  /** The rule bodies of a qube's chain. */
  chain(family: Family, name: string): string[] | undefined {
    return this.tables[family].chains.get(name);
  }
}

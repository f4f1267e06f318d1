// An in-memory nftables for unit tests of planners and managers, without root: it applies
// the typed operations of an NftTransaction with nft's semantics where they matter for our
// code (a transaction is all or nothing; a missing table, chain, set or element is an error;
// a chain still referenced or holding rules cannot be deleted; a map element cannot change
// its value by `add`; an element must match the set's type) and dumps sorted state.
// Rule expressions are kept as text; references in them (@set, jump/goto chain) are checked.
import type { NftApplyOptions, NftApplyResult, NftJson, NftWriter } from './nft-writer.js';
import type { NftFamily, NftBaseChain, NftDataType, NftElementValue, NftOp, NftSetFlag, NftTableRef, NftTransaction } from './nft-transaction.js';
import { renderOp } from './nft-transaction.js';

export interface FakeRule {
  handle: number;
  expr: string;
  comment?: string;
}

export interface FakeChain {
  name: string;
  base?: NftBaseChain;
  rules: FakeRule[];
}

export interface FakeSet {
  name: string;
  kind: 'set' | 'map';
  keyType: readonly NftDataType[];
  valueType?: NftDataType | 'verdict';
  flags: readonly NftSetFlag[];
  /** Key text → value text ('' for a set). */
  elements: Map<string, string>;
}

export interface FakeTable {
  family: NftFamily;
  name: string;
  chains: Map<string, FakeChain>;
  sets: Map<string, FakeSet>;
  nextHandle: number;
}

type State = Map<string, FakeTable>;

const key = (t: NftTableRef) => `${t.family} ${t.name}`;

class OpError extends Error {}

function cloneState(s: State): State {
  const out: State = new Map();
  for (const [k, t] of s) {
    out.set(k, {
      family: t.family,
      name: t.name,
      nextHandle: t.nextHandle,
      chains: new Map([...t.chains].map(([n, c]) => [n, { name: c.name, ...(c.base ? { base: { ...c.base } } : {}), rules: c.rules.map((r) => ({ ...r })) }])),
      sets: new Map([...t.sets].map(([n, st]) => [n, { ...st, elements: new Map(st.elements) }])),
    });
  }
  return out;
}

function partMatches(type: NftDataType, part: NftElementValue['parts'][number]): boolean {
  switch (type) {
    case 'ipv4_addr':
      return part.kind === 'ipv4';
    case 'ipv6_addr':
      return part.kind === 'ipv6';
    case 'ifname':
      return part.kind === 'ifname';
    case 'inet_service':
    case 'mark':
    case 'inet_proto':
    case 'iface_index':
      return part.kind === 'number';
    default:
      return true;
  }
}

/** Chains a rule expression or verdict jumps to. */
function jumpTargets(text: string): string[] {
  return [...text.matchAll(/\b(?:jump|goto) ([A-Za-z_][A-Za-z0-9_.-]*)/g)].map((m) => m[1]!);
}

function setRefs(text: string): string[] {
  return [...text.matchAll(/@([A-Za-z_][A-Za-z0-9_.-]*)/g)].map((m) => m[1]!);
}

export class FakeKernel implements NftWriter {
  private state: State = new Map();
  /** Every transaction applied (accepted or not), as rendered text. */
  readonly applied: string[] = [];
  /** Make the next applies fail as nft would (fault injection): return an error text to reject. */
  rejectIf: ((text: string) => string | undefined) | undefined;

  async apply(tx: NftTransaction, opts: NftApplyOptions = {}): Promise<NftApplyResult> {
    return this.applySync(tx, opts);
  }

  /** The same as apply(), synchronously. With `check`, nothing is kept. */
  applySync(tx: NftTransaction, opts: NftApplyOptions = {}): NftApplyResult {
    if (tx.error) return { ok: false, code: 'invalid', error: tx.error.message };
    const text = tx.render();
    this.applied.push(text);
    const injected = this.rejectIf?.(text);
    if (injected) return { ok: false, code: 'rejected', error: injected };
    const next = cloneState(this.state);
    for (const op of tx.ops) {
      try {
        this.exec(next, op);
      } catch (e) {
        if (!(e instanceof OpError)) throw e;
        return { ok: false, code: 'rejected', error: `Error: ${e.message}\n${renderOp(op)}` };
      }
    }
    if (!opts.check) this.state = next;
    return { ok: true };
  }

  private exec(s: State, op: NftOp): void {
    const k = key(op.table);
    if (op.kind === 'table') {
      if (op.verb === 'add') {
        if (!s.has(k)) s.set(k, { family: op.table.family, name: op.table.name, chains: new Map(), sets: new Map(), nextHandle: 1 });
        return;
      }
      const t = s.get(k);
      if (!t) throw new OpError(`Could not process rule: No such file or directory (table ${k})`);
      if (op.verb === 'delete') s.delete(k);
      else for (const c of t.chains.values()) c.rules = [];
      return;
    }
    const t = s.get(k);
    if (!t) throw new OpError(`Could not process rule: No such file or directory (table ${k})`);
    switch (op.kind) {
      case 'chain': {
        const c = t.chains.get(op.chain);
        if (op.verb === 'add') {
          if (!c) {
            t.chains.set(op.chain, { name: op.chain, ...(op.base ? { base: { ...op.base } } : {}), rules: [] });
            t.nextHandle++;
          } else if (op.base) {
            const b = c.base;
            if (!b || b.type !== op.base.type || b.hook !== op.base.hook || String(b.priority) !== String(op.base.priority) || b.device !== op.base.device) {
              throw new OpError(`Could not process rule: Device or resource busy (chain ${op.chain} exists with another type, hook or priority)`);
            }
            if (op.base.policy) b.policy = op.base.policy;
          }
          return;
        }
        if (!c) throw new OpError(`Could not process rule: No such file or directory (chain ${op.chain})`);
        if (op.verb === 'flush') {
          c.rules = [];
          return;
        }
        if (c.rules.length) throw new OpError(`Could not process rule: Device or resource busy (chain ${op.chain} has rules)`);
        if (this.chainReferenced(t, op.chain)) throw new OpError(`Could not process rule: Device or resource busy (chain ${op.chain} is referenced)`);
        t.chains.delete(op.chain);
        return;
      }
      case 'set':
      case 'map': {
        const st = t.sets.get(op.set);
        if (op.verb === 'add') {
          if (st) {
            if (st.kind !== op.kind || st.keyType.join(' . ') !== op.keyType.join(' . ') || st.valueType !== op.valueType) {
              throw new OpError(`Could not process rule: File exists (${op.kind} ${op.set} exists with another type)`);
            }
            this.addElements(t, st, op.elements);
            return;
          }
          const created: FakeSet = { name: op.set, kind: op.kind, keyType: op.keyType, ...(op.valueType ? { valueType: op.valueType } : {}), flags: op.flags, elements: new Map() };
          t.sets.set(op.set, created);
          this.addElements(t, created, op.elements);
          return;
        }
        if (!st || st.kind !== op.kind) throw new OpError(`Could not process rule: No such file or directory (${op.kind} ${op.set})`);
        if (op.verb === 'flush') {
          st.elements.clear();
          return;
        }
        for (const c of t.chains.values()) {
          if (c.rules.some((r) => setRefs(r.expr).includes(op.set))) throw new OpError(`Could not process rule: Device or resource busy (${op.kind} ${op.set} is used by a rule)`);
        }
        t.sets.delete(op.set);
        return;
      }
      case 'element': {
        const st = t.sets.get(op.set);
        if (!st) throw new OpError(`Could not process rule: No such file or directory (set ${op.set})`);
        if (op.verb === 'add') {
          this.addElements(t, st, op.elements);
          return;
        }
        for (const e of op.elements) {
          if (!st.elements.delete(e.key)) throw new OpError(`Could not process rule: No such file or directory (element ${e.key} of ${op.set})`);
        }
        return;
      }
      case 'rule': {
        const c = t.chains.get(op.chain);
        if (!c) throw new OpError(`Could not process rule: No such file or directory (chain ${op.chain})`);
        if (op.verb === 'delete') {
          const i = c.rules.findIndex((r) => r.handle === op.handle);
          if (i < 0) throw new OpError(`Could not process rule: No such file or directory (rule handle ${op.handle})`);
          c.rules.splice(i, 1);
          return;
        }
        for (const target of jumpTargets(op.expr)) {
          if (!t.chains.has(target)) throw new OpError(`Could not process rule: No such file or directory (jump target ${target})`);
        }
        for (const ref of setRefs(op.expr)) {
          if (!t.sets.has(ref)) throw new OpError(`Could not process rule: No such file or directory (set ${ref})`);
        }
        const rule: FakeRule = { handle: t.nextHandle++, expr: op.expr, ...(op.comment !== undefined ? { comment: op.comment } : {}) };
        let at = op.verb === 'insert' ? 0 : c.rules.length;
        if (op.position !== undefined) {
          const i = c.rules.findIndex((r) => r.handle === op.position);
          if (i < 0) throw new OpError(`Could not process rule: No such file or directory (rule handle ${op.position})`);
          at = op.verb === 'insert' ? i : i + 1;
        }
        c.rules.splice(at, 0, rule);
        return;
      }
    }
  }

  private addElements(t: FakeTable, st: FakeSet, elements: readonly NftElementValue[]): void {
    for (const e of elements) {
      if (e.parts.length !== st.keyType.length || e.parts.some((p, i) => !partMatches(st.keyType[i]!, p))) {
        throw new OpError(`Error: element ${e.key} does not match the type ${st.keyType.join(' . ')} of ${st.name}`);
      }
      if (e.parts.some((p) => p.prefix !== undefined) && !st.flags.includes('interval')) {
        throw new OpError(`Error: set ${st.name} has no interval flag for ${e.key}`);
      }
      const value = e.value ?? '';
      if (st.kind === 'map' && value === '') throw new OpError(`Error: map element ${e.key} of ${st.name} has no value`);
      if (st.kind === 'set' && value !== '') throw new OpError(`Error: set ${st.name} takes no value for ${e.key}`);
      for (const target of jumpTargets(value)) {
        if (!t.chains.has(target)) throw new OpError(`Could not process rule: No such file or directory (jump target ${target})`);
      }
      const old = st.elements.get(e.key);
      if (old !== undefined && old !== value) throw new OpError(`Could not process rule: File exists (element ${e.key} of ${st.name} has another value)`);
      st.elements.set(e.key, value);
    }
  }

  private chainReferenced(t: FakeTable, chain: string): boolean {
    for (const c of t.chains.values()) if (c.rules.some((r) => jumpTargets(r.expr).includes(chain))) return true;
    for (const st of t.sets.values()) for (const v of st.elements.values()) if (jumpTargets(v).includes(chain)) return true;
    return false;
  }

  // ---- reading -------------------------------------------------------------------------

  /** A table, or undefined (a read-only view: do not modify). */
  table(t: NftTableRef): FakeTable | undefined {
    return this.state.get(key(t));
  }

  /** Rule texts (with ` comment "…"` when set) of a chain, or undefined if missing. */
  rules(t: NftTableRef, chain: string): string[] | undefined {
    return this.table(t)?.chains.get(chain)?.rules.map((r) => r.expr + (r.comment !== undefined ? ` comment "${r.comment}"` : ''));
  }

  /** Elements of a set ('key') or map ('key : value'), sorted; undefined if missing. */
  elements(t: NftTableRef, set: string): string[] | undefined {
    const st = this.table(t)?.sets.get(set);
    if (!st) return undefined;
    return [...st.elements].map(([k, v]) => (v ? `${k} : ${v}` : k)).sort();
  }

  /** The whole state as sorted text: tables, then sets and chains by name; rules in order. */
  dump(): string {
    const lines: string[] = [];
    for (const k of [...this.state.keys()].sort()) {
      const t = this.state.get(k)!;
      lines.push(`table ${k}`);
      for (const n of [...t.sets.keys()].sort()) {
        const st = t.sets.get(n)!;
        const type = st.keyType.join(' . ') + (st.kind === 'map' ? ` : ${st.valueType}` : '');
        lines.push(`  ${st.kind} ${n} { type ${type}${st.flags.length ? `; flags ${st.flags.join(', ')}` : ''} }`);
        for (const e of this.elements(t, n)!) lines.push(`    ${e}`);
      }
      for (const n of [...t.chains.keys()].sort()) {
        const c = t.chains.get(n)!;
        const b = c.base;
        lines.push(`  chain ${n}${b ? ` { type ${b.type} hook ${b.hook}${b.device ? ` device "${b.device}"` : ''} priority ${b.priority}; policy ${b.policy ?? 'accept'} }` : ''}`);
        for (const r of this.rules(t, n)!) lines.push(`    ${r}`);
      }
    }
    return lines.join('\n') + (lines.length ? '\n' : '');
  }

  /**
   * A subset of `nft -j -a list` output: `ruleset`, `table FAMILY NAME`, `tables`. Chains and
   * sets come with their names, types and elements; rules with handle and comment and the
   * expression as text (`expr_text`), not nft's expression JSON.
   */
  async list(what: readonly string[]): Promise<NftJson | undefined> {
    let tables: FakeTable[];
    if (what[0] === 'ruleset' || what[0] === 'tables') tables = [...this.state.keys()].sort().map((k) => this.state.get(k)!);
    else if (what[0] === 'table' && what.length === 3) {
      const t = this.state.get(`${what[1]} ${what[2]}`);
      if (!t) return undefined;
      tables = [t];
    } else throw new Error(`FakeKernel.list: unsupported ${what.join(' ')}`);
    const out: Record<string, any>[] = [{ metainfo: { json_schema_version: 1 } }];
    for (const t of tables) {
      out.push({ table: { family: t.family, name: t.name } });
      if (what[0] === 'tables') continue;
      for (const st of t.sets.values()) {
        const base = { family: t.family, name: st.name, table: t.name, type: st.keyType.length === 1 ? st.keyType[0] : { typeof: st.keyType } };
        const elem = [...st.elements].map(([k, v]) => {
          const kj = elemJson(k);
          if (st.kind === 'set') return kj;
          const j = /^(jump|goto) (.+)$/.exec(v);
          return [kj, j ? { [j[1]!]: { target: j[2] } } : elemJson(v)];
        });
        out.push({ [st.kind]: { ...base, ...(st.kind === 'map' ? { map: st.valueType } : {}), ...(st.flags.length ? { flags: [...st.flags] } : {}), ...(elem.length ? { elem } : {}) } });
      }
      for (const c of t.chains.values()) {
        const b = c.base;
        out.push({ chain: { family: t.family, table: t.name, name: c.name, ...(b ? { type: b.type, hook: b.hook, prio: b.priority, policy: b.policy ?? 'accept', ...(b.device ? { dev: b.device } : {}) } : {}) } });
      }
      for (const c of t.chains.values()) {
        for (const r of c.rules) out.push({ rule: { family: t.family, table: t.name, chain: c.name, handle: r.handle, ...(r.comment !== undefined ? { comment: r.comment } : {}), expr_text: r.expr } });
      }
    }
    return { nftables: out };
  }
}

function elemJson(text: string): unknown {
  if (text.includes(' . ')) return { concat: text.split(' . ').map(elemJson) };
  if (text.startsWith('"')) return text.slice(1, -1);
  const m = /^(.+)\/(\d+)$/.exec(text);
  if (m) return { prefix: { addr: m[1], len: Number(m[2]) } };
  if (/^\d+$/.test(text)) return Number(text);
  return text;
}

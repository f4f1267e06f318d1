// A typed nftables transaction: every change a package makes to nftables is added here as an
// object, checked when it is added, and rendered to nft's text syntax in one place. The
// kernel applies the rendered text as one batch (all or nothing).
//
// Why check at add time: values come from QubesDB, xenstore and DNS, which are untrusted. A
// newline, `;` or `#` in a name or element would start a new nft command or hide the rest of
// the line; a quote would end a quoted string early. Everything that reaches the text is a
// name from a small charset, a canonical address (common/addr.ts), a number, a quoted string
// from a small charset, or a rule expression whose characters are checked the same way.
// The first error is kept (with the operation that caused it) and reported by render() and by
// every writer's apply(): callers build a whole transaction and check once.
import { parseIPv4, parseIPv6 } from '../addr.js';

export type NftFamily = 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev';
const FAMILIES: ReadonlySet<string> = new Set(['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev']);

/** A table: `family name`. */
export interface NftTableRef {
  readonly family: NftFamily;
  readonly name: string;
}

export type NftChainType = 'filter' | 'nat' | 'route';
export type NftHook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting' | 'ingress' | 'egress';
export type NftPolicy = 'accept' | 'drop';

/** What makes a chain a base chain. `priority` is a number or nft's named form ('filter + 10'). */
export interface NftBaseChain {
  type: NftChainType;
  hook: NftHook;
  priority: number | string;
  policy?: NftPolicy;
  /** For netdev ingress/egress chains: the interface. */
  device?: string;
}

/** One part of an element key: an address, a prefix (`a/len`), a number or an interface name. */
export type NftAtom = string | number;
/** A verdict as a map value. */
export type NftVerdict = 'accept' | 'drop' | 'continue' | 'return' | { jump: string } | { goto: string };
/**
 * A set or map element: an atom, or `{ key, value }` for maps. An array key is a
 * concatenation (`"vif3.0" . 10.137.0.5`).
 */
export type NftElement = NftAtom | readonly NftAtom[] | { key: NftAtom | readonly NftAtom[]; value?: NftAtom | NftVerdict };

export type NftSetFlag = 'interval' | 'timeout' | 'constant' | 'dynamic';

export interface NftSetSpec {
  /** Data type, or several for a concatenation: 'ipv4_addr', ['ifname', 'ipv6_addr']. */
  type: NftDataType | readonly NftDataType[];
  flags?: readonly NftSetFlag[];
  elements?: readonly NftElement[];
}

export interface NftMapSpec extends NftSetSpec {
  /** The value type: 'verdict' for a verdict map (dispatch), or a data type (DNAT targets). */
  value: NftDataType | 'verdict';
}

export type NftDataType = 'ipv4_addr' | 'ipv6_addr' | 'ether_addr' | 'inet_proto' | 'inet_service' | 'mark' | 'ifname' | 'iface_index';
const DATA_TYPES: ReadonlySet<string> = new Set(['ipv4_addr', 'ipv6_addr', 'ether_addr', 'inet_proto', 'inet_service', 'mark', 'ifname', 'iface_index']);

/** The normalised form of one element, as the fake kernel keeps it and the text shows it. */
export interface NftElementValue {
  /** Canonical text of the key ('10.137.0.5', '"vif3.0" . 10.137.0.5', '10.0.0.0/8'). */
  key: string;
  /** Canonical text of the value ('jump qbs-10-137-0-5', '10.139.1.1'), if a map element. */
  value?: string;
  /** The key's parts and their kinds, for type checks. */
  parts: readonly { kind: 'ipv4' | 'ipv6' | 'number' | 'ifname'; text: string; prefix?: number }[];
}

/** One operation of a transaction, already validated and normalised. */
export type NftOp =
  | { verb: 'add' | 'delete' | 'flush'; kind: 'table'; table: NftTableRef }
  | { verb: 'add'; kind: 'chain'; table: NftTableRef; chain: string; base?: NftBaseChain }
  | { verb: 'delete' | 'flush'; kind: 'chain'; table: NftTableRef; chain: string }
  | { verb: 'add'; kind: 'set' | 'map'; table: NftTableRef; set: string; keyType: readonly NftDataType[]; valueType?: NftDataType | 'verdict'; flags: readonly NftSetFlag[]; elements: readonly NftElementValue[] }
  | { verb: 'delete' | 'flush'; kind: 'set' | 'map'; table: NftTableRef; set: string }
  | { verb: 'add' | 'delete'; kind: 'element'; table: NftTableRef; set: string; elements: readonly NftElementValue[] }
  | { verb: 'add' | 'insert'; kind: 'rule'; table: NftTableRef; chain: string; expr: string; comment?: string; position?: number }
  | { verb: 'delete'; kind: 'rule'; table: NftTableRef; chain: string; handle: number };

/** A validation error: which operation (index, rendered as far as possible) and why. */
export class NftValidationError extends Error {
  readonly code = 'nft-invalid';
  constructor(readonly opIndex: number, readonly op: string, readonly reason: string) {
    super(`nft transaction op ${opIndex} (${op}): ${reason}`);
    this.name = 'NftValidationError';
  }
}

// nft identifiers start with a letter or '_'; we allow '-' and '.' after it (qbs-10-137-0-5,
// in-vif3.0) and nothing else.
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,62}$/;
// Interface names: the kernel's limit is 15 bytes; no '/', no whitespace, no quotes. They must
// start with a letter, so that nothing that looks like a (malformed) address or number is
// taken for one.
const IFNAME_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,14}$/;
// Text inside a quoted string (comments, interface patterns like "vif*").
const QUOTED_RE = /^[A-Za-z0-9_.:@/*+ -]{0,128}$/;
// A rule expression outside quoted strings: nft's operators and set syntax, no ';', '#', '$',
// quote, backslash or control character.
const EXPR_RE = /^[A-Za-z0-9_.:/@,{}()[\]!=<>+*&|^~ -]+$/;
const PRIORITY_RE = /^(raw|mangle|dstnat|filter|security|srcnat|out|-?\d{1,5})( [+-] \d{1,5})?$/;
const HOOKS: ReadonlySet<string> = new Set(['prerouting', 'input', 'forward', 'output', 'postrouting', 'ingress', 'egress']);

// Words nft's scanner takes as keywords (found by probing nft 1.0.6): as a table, chain or set
// name they are a syntax error, and names cannot be quoted in 1.0.6. Refused when added, so
// the error names the culprit instead of an nft syntax error later.
const RESERVED: ReadonlySet<string> = new Set(
  ('dnat snat masquerade redirect accept drop reject return jump goto continue queue counter log limit table chain set map ' +
    'element rule flush delete add insert replace ip ip6 inet arp bridge netdev meta ct tcp udp icmp th policy priority hook type ' +
    'dynamic interval timeout constant flags elements comment handle position vmap iif oif iifname oifname mark ether vlan fib rt ' +
    'socket tproxy monitor list reset rename describe import export define include quota synproxy secmark flowtable devices ' +
    'device offload notrack nftrace sctp dccp esp ah icmpv6 udplite comp frag hbh mh dst exthdr numgen jhash symhash osf ipsec ' +
    'ruleset meter create get dup fwd update typeof size auto-merge gc-interval redefine undefine all random igmp cgroup cpu day ' +
    'hour time ecn').split(' '),
);

function checkName(what: string, name: string): void {
  if (typeof name !== 'string' || !NAME_RE.test(name)) throw new Error(`invalid ${what} name ${JSON.stringify(String(name)).slice(0, 80)}`);
  if (RESERVED.has(name)) throw new Error(`${what} name ${JSON.stringify(name)} is an nft keyword`);
}

function checkTable(t: NftTableRef): NftTableRef {
  if (!t || !FAMILIES.has(t.family)) throw new Error(`invalid table family ${JSON.stringify(t?.family)}`);
  checkName('table', t.name);
  return { family: t.family, name: t.name };
}

/** Quotes text for nft ("vif*", comments); throws on anything outside the charset. */
export function nftQuoted(text: string): string {
  if (typeof text !== 'string' || !QUOTED_RE.test(text)) throw new Error(`refusing to quote ${JSON.stringify(String(text)).slice(0, 80)} for nft`);
  return `"${text}"`;
}

/**
 * Checks a rule expression and returns it normalised (single spaces). Quoted strings are
 * allowed with the quoted charset; everything else must match the expression charset.
 */
export function checkRuleExpr(expr: string | readonly string[]): string {
  const text = typeof expr === 'string' ? expr : expr.join(' ');
  if (typeof text !== 'string' || text.length === 0 || text.length > 8192) throw new Error('empty or oversized rule expression');
  let rest = '';
  let i = 0;
  while (i < text.length) {
    const q = text.indexOf('"', i);
    if (q < 0) {
      rest += text.slice(i);
      break;
    }
    rest += text.slice(i, q) + ' ';
    const end = text.indexOf('"', q + 1);
    if (end < 0) throw new Error('unterminated quoted string in rule expression');
    nftQuoted(text.slice(q + 1, end));
    i = end + 1;
  }
  if (!EXPR_RE.test(rest.replace(/ +/g, ' ').trim() || ' ')) throw new Error(`rule expression has characters nft must not see: ${JSON.stringify(text).slice(0, 120)}`);
  return text.trim().replace(/ {2,}/g, ' ');
}

function atom(value: NftAtom): NftElementValue['parts'][number] {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(`invalid number ${value}`);
    return { kind: 'number', text: String(value) };
  }
  if (typeof value !== 'string') throw new Error(`invalid element part ${JSON.stringify(value)}`);
  const slash = value.indexOf('/');
  const addr = slash < 0 ? value : value.slice(0, slash);
  const v4 = parseIPv4(addr);
  const v6 = v4 ? undefined : parseIPv6(addr);
  if (v4 || v6) {
    const max = v4 ? 32 : 128;
    let prefix: number | undefined;
    if (slash >= 0) {
      const p = value.slice(slash + 1);
      if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > max) throw new Error(`invalid prefix in ${JSON.stringify(value)}`);
      prefix = Number(p);
    }
    const canon = v4 ?? v6!;
    const full = prefix === undefined || prefix === max;
    return { kind: v4 ? 'ipv4' : 'ipv6', text: full ? canon : `${canon}/${prefix}`, ...(full ? {} : { prefix }) };
  }
  if (/^(0|[1-9]\d{0,9})$/.test(value)) return { kind: 'number', text: value };
  if (IFNAME_RE.test(value)) return { kind: 'ifname', text: `"${value}"` };
  throw new Error(`invalid element ${JSON.stringify(value).slice(0, 80)}`);
}

function verdictText(v: NftVerdict): string {
  if (typeof v === 'string') return v;
  if ('jump' in v) {
    checkName('chain', v.jump);
    return `jump ${v.jump}`;
  }
  checkName('chain', v.goto);
  return `goto ${v.goto}`;
}

const VERDICTS: ReadonlySet<string> = new Set(['accept', 'drop', 'continue', 'return']);

/** Normalises one element (throws on anything invalid). */
export function nftElement(el: NftElement): NftElementValue {
  const isObj = typeof el === 'object' && el !== null && !Array.isArray(el);
  const key = isObj ? (el as { key: NftAtom | readonly NftAtom[] }).key : (el as NftAtom | readonly NftAtom[]);
  const rawValue = isObj ? (el as { value?: NftAtom | NftVerdict }).value : undefined;
  const parts = (Array.isArray(key) ? key : [key]).map((k) => atom(k as NftAtom));
  if (parts.length === 0 || parts.length > 4) throw new Error('element key must have 1 to 4 parts');
  let value: string | undefined;
  if (rawValue !== undefined) {
    if (typeof rawValue === 'object' || (typeof rawValue === 'string' && VERDICTS.has(rawValue))) value = verdictText(rawValue as NftVerdict);
    else value = atom(rawValue).text;
  }
  return { key: parts.map((p) => p.text).join(' . '), ...(value !== undefined ? { value } : {}), parts };
}

function elementsText(els: readonly NftElementValue[], withValues: boolean): string {
  return `{ ${els.map((e) => (withValues && e.value !== undefined ? `${e.key} : ${e.value}` : e.key)).join(', ')} }`;
}

function tableText(t: NftTableRef): string {
  return `${t.family} ${t.name}`;
}

/** Renders one operation as one line of nft text. */
export function renderOp(op: NftOp): string {
  const t = tableText(op.table);
  switch (op.kind) {
    case 'table':
      return `${op.verb} table ${t}`;
    case 'chain': {
      if (op.verb !== 'add' || !op.base) return `${op.verb} chain ${t} ${op.chain}`;
      const b = op.base;
      const dev = b.device !== undefined ? ` device ${nftQuoted(b.device)}` : '';
      const policy = b.policy ? ` policy ${b.policy};` : '';
      return `add chain ${t} ${op.chain} { type ${b.type} hook ${b.hook}${dev} priority ${b.priority};${policy} }`;
    }
    case 'set':
    case 'map': {
      if (op.verb !== 'add') return `${op.verb} ${op.kind} ${t} ${op.set}`;
      const type = op.keyType.join(' . ') + (op.kind === 'map' ? ` : ${op.valueType}` : '');
      const flags = op.flags.length ? ` flags ${op.flags.join(', ')};` : '';
      const els = op.elements.length ? ` elements = ${elementsText(op.elements, op.kind === 'map')};` : '';
      return `add ${op.kind} ${t} ${op.set} { type ${type};${flags}${els} }`;
    }
    case 'element':
      return `${op.verb} element ${t} ${op.set} ${elementsText(op.elements, op.verb === 'add')}`;
    case 'rule': {
      if (op.verb === 'delete') return `delete rule ${t} ${op.chain} handle ${op.handle}`;
      const pos = op.position !== undefined ? ` position ${op.position}` : '';
      const comment = op.comment !== undefined ? ` comment ${nftQuoted(op.comment)}` : '';
      return `${op.verb} rule ${t} ${op.chain}${pos} ${op.expr}${comment}`;
    }
  }
}

function keyTypes(type: NftDataType | readonly NftDataType[]): NftDataType[] {
  const list = (Array.isArray(type) ? type : [type]) as NftDataType[];
  if (list.length === 0 || list.length > 4) throw new Error('set type must have 1 to 4 parts');
  for (const t of list) if (!DATA_TYPES.has(t)) throw new Error(`invalid set data type ${JSON.stringify(t)}`);
  return list;
}

function checkFlags(flags: readonly NftSetFlag[] | undefined): NftSetFlag[] {
  const out = [...(flags ?? [])];
  for (const f of out) if (!['interval', 'timeout', 'constant', 'dynamic'].includes(f)) throw new Error(`invalid set flag ${JSON.stringify(f)}`);
  return out;
}

function checkBase(b: NftBaseChain): NftBaseChain {
  if (!['filter', 'nat', 'route'].includes(b.type)) throw new Error(`invalid chain type ${JSON.stringify(b.type)}`);
  if (!HOOKS.has(b.hook)) throw new Error(`invalid hook ${JSON.stringify(b.hook)}`);
  const prio = typeof b.priority === 'number' ? b.priority : String(b.priority);
  if (typeof prio === 'number' ? !Number.isSafeInteger(prio) || Math.abs(prio) > 99999 : !PRIORITY_RE.test(prio)) {
    throw new Error(`invalid priority ${JSON.stringify(b.priority)}`);
  }
  if (b.policy !== undefined && b.policy !== 'accept' && b.policy !== 'drop') throw new Error(`invalid policy ${JSON.stringify(b.policy)}`);
  if (b.device !== undefined && !IFNAME_RE.test(b.device)) throw new Error(`invalid device ${JSON.stringify(b.device)}`);
  return { type: b.type, hook: b.hook, priority: prio, ...(b.policy ? { policy: b.policy } : {}), ...(b.device !== undefined ? { device: b.device } : {}) };
}

export interface NftRuleOptions {
  comment?: string;
  /** `add rule … position HANDLE` (after that rule) or, with insert, before it. */
  position?: number;
  /** `insert rule` (at the top of the chain, or before `position`). */
  insert?: boolean;
}

/**
 * A transaction under construction. Methods return `this` so calls chain; an invalid
 * argument does not throw: it is kept as the transaction's error (the first one wins) and the
 * operation is left out, so that apply() refuses the whole transaction.
 */
export class NftTransaction {
  private readonly list: NftOp[] = [];
  private firstError: NftValidationError | undefined;
  private attempted = 0;

  /** The operations, in order (read-only view for writers and the fake kernel). */
  get ops(): readonly NftOp[] {
    return this.list;
  }

  /** The first validation error, if any. */
  get error(): NftValidationError | undefined {
    return this.firstError;
  }

  get size(): number {
    return this.list.length;
  }

  get isEmpty(): boolean {
    return this.list.length === 0 && !this.firstError;
  }

  private push(describe: string, build: () => NftOp | NftOp[]): this {
    const index = this.attempted++;
    try {
      const ops = build();
      for (const op of Array.isArray(ops) ? ops : [ops]) this.list.push(op);
    } catch (e) {
      this.firstError ??= new NftValidationError(index, describe, String((e as Error)?.message ?? e));
    }
    return this;
  }

  addTable(table: NftTableRef): this {
    return this.push('add table', () => ({ verb: 'add', kind: 'table', table: checkTable(table) }));
  }

  deleteTable(table: NftTableRef): this {
    return this.push('delete table', () => ({ verb: 'delete', kind: 'table', table: checkTable(table) }));
  }

  flushTable(table: NftTableRef): this {
    return this.push('flush table', () => ({ verb: 'flush', kind: 'table', table: checkTable(table) }));
  }

  /** Deletes the table whether or not it exists (nft 1.0.6 has no `destroy`: add, then delete). */
  destroyTable(table: NftTableRef): this {
    return this.push('destroy table', () => {
      const t = checkTable(table);
      return [{ verb: 'add', kind: 'table', table: t }, { verb: 'delete', kind: 'table', table: t }];
    });
  }

  /** Adds a chain (a base chain with `base`); adding an existing chain is a no-op. */
  addChain(table: NftTableRef, chain: string, base?: NftBaseChain): this {
    return this.push(`add chain ${chain}`, () => {
      checkName('chain', chain);
      return { verb: 'add', kind: 'chain', table: checkTable(table), chain, ...(base ? { base: checkBase(base) } : {}) };
    });
  }

  flushChain(table: NftTableRef, chain: string): this {
    return this.push(`flush chain ${chain}`, () => {
      checkName('chain', chain);
      return { verb: 'flush', kind: 'chain', table: checkTable(table), chain };
    });
  }

  deleteChain(table: NftTableRef, chain: string): this {
    return this.push(`delete chain ${chain}`, () => {
      checkName('chain', chain);
      return { verb: 'delete', kind: 'chain', table: checkTable(table), chain };
    });
  }

  /**
   * Deletes a regular chain whether or not it exists, with its rules: add, flush, delete.
   * (Still fails, as it must, while a rule or map element jumps to it.)
   */
  destroyChain(table: NftTableRef, chain: string): this {
    return this.push(`destroy chain ${chain}`, () => {
      checkName('chain', chain);
      const t = checkTable(table);
      return [
        { verb: 'add', kind: 'chain', table: t, chain },
        { verb: 'flush', kind: 'chain', table: t, chain },
        { verb: 'delete', kind: 'chain', table: t, chain },
      ];
    });
  }

  addSet(table: NftTableRef, set: string, spec: NftSetSpec): this {
    return this.push(`add set ${set}`, () => {
      checkName('set', set);
      return { verb: 'add', kind: 'set', table: checkTable(table), set, keyType: keyTypes(spec.type), flags: checkFlags(spec.flags), elements: (spec.elements ?? []).map(nftElement) };
    });
  }

  addMap(table: NftTableRef, map: string, spec: NftMapSpec): this {
    return this.push(`add map ${map}`, () => {
      checkName('map', map);
      if (spec.value !== 'verdict') keyTypes(spec.value);
      const elements = (spec.elements ?? []).map(nftElement);
      for (const e of elements) if (e.value === undefined) throw new Error(`map element ${e.key} has no value`);
      return { verb: 'add', kind: 'map', table: checkTable(table), set: map, keyType: keyTypes(spec.type), valueType: spec.value, flags: checkFlags(spec.flags), elements };
    });
  }

  flushSet(table: NftTableRef, set: string, kind: 'set' | 'map' = 'set'): this {
    return this.push(`flush ${kind} ${set}`, () => {
      checkName(kind, set);
      return { verb: 'flush', kind, table: checkTable(table), set };
    });
  }

  deleteSet(table: NftTableRef, set: string, kind: 'set' | 'map' = 'set'): this {
    return this.push(`delete ${kind} ${set}`, () => {
      checkName(kind, set);
      return { verb: 'delete', kind, table: checkTable(table), set };
    });
  }

  /** Adds elements to a set or map (map elements need a value). An empty list adds nothing. */
  addElements(table: NftTableRef, set: string, elements: readonly NftElement[]): this {
    if (elements.length === 0) return this;
    return this.push(`add element ${set}`, () => {
      checkName('set', set);
      return { verb: 'add', kind: 'element', table: checkTable(table), set, elements: elements.map(nftElement) };
    });
  }

  /** Deletes elements (by key); each must exist, or the whole transaction fails. */
  deleteElements(table: NftTableRef, set: string, elements: readonly NftElement[]): this {
    if (elements.length === 0) return this;
    return this.push(`delete element ${set}`, () => {
      checkName('set', set);
      return { verb: 'delete', kind: 'element', table: checkTable(table), set, elements: elements.map(nftElement) };
    });
  }

  /**
   * Deletes elements whether or not they exist: add, then delete. Map elements need their
   * value for the add (an element present with another value makes the add fail, as it should:
   * the caller's idea of the map is wrong).
   */
  destroyElements(table: NftTableRef, set: string, elements: readonly NftElement[]): this {
    if (elements.length === 0) return this;
    return this.push(`destroy element ${set}`, () => {
      checkName('set', set);
      const t = checkTable(table);
      const els = elements.map(nftElement);
      return [
        { verb: 'add', kind: 'element', table: t, set, elements: els },
        { verb: 'delete', kind: 'element', table: t, set, elements: els },
      ];
    });
  }

  /** Appends a rule (expression checked, see checkRuleExpr); `insert` puts it first. */
  addRule(table: NftTableRef, chain: string, expr: string | readonly string[], opts: NftRuleOptions = {}): this {
    return this.push(`add rule ${chain}`, () => {
      checkName('chain', chain);
      if (opts.position !== undefined && (!Number.isSafeInteger(opts.position) || opts.position < 1)) throw new Error(`invalid rule position ${opts.position}`);
      if (opts.comment !== undefined) nftQuoted(opts.comment);
      return {
        verb: opts.insert ? 'insert' : 'add',
        kind: 'rule',
        table: checkTable(table),
        chain,
        expr: checkRuleExpr(expr),
        ...(opts.comment !== undefined ? { comment: opts.comment } : {}),
        ...(opts.position !== undefined ? { position: opts.position } : {}),
      };
    });
  }

  deleteRule(table: NftTableRef, chain: string, handle: number): this {
    return this.push(`delete rule ${chain}`, () => {
      checkName('chain', chain);
      if (!Number.isSafeInteger(handle) || handle < 1) throw new Error(`invalid rule handle ${handle}`);
      return { verb: 'delete', kind: 'rule', table: checkTable(table), chain, handle };
    });
  }

  /** Appends every operation of `other` (and its error, if this one has none). */
  append(other: NftTransaction): this {
    if (other.error) this.firstError ??= other.error;
    for (const op of other.ops) this.list.push(op);
    this.attempted += other.attempted;
    return this;
  }

  /** nft text, one operation per line. Throws the first validation error, if any. */
  render(): string {
    if (this.firstError) throw this.firstError;
    return this.list.map(renderOp).join('\n') + (this.list.length ? '\n' : '');
  }
}

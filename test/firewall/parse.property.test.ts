// Property tests: whatever dom0 (or an attacker who got into its database) writes, the parser
// returns a value and never throws; well-formed rules always parse, and their compiled text
// only ever contains what the grammar allows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseRule, parseQubeEntries, compileQube, qubeUpdateScript, type Target } from '@qubes-net/firewall';

const V4: Target = { addr: '10.137.0.7', family: 4 };
const V6: Target = { addr: 'fd09:24ef:4179::a89:7', family: 6 };

const tokenChars = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789=-./: _\u0000\n\u00e9'.split(''));
const optionNames = fc.constantFrom('action', 'proto', 'dst4', 'dst6', 'dsthost', 'dstports', 'specialtarget', 'icmptype', 'expire', 'comment', '');
const optionValues = fc.oneof(
  fc.constantFrom('accept', 'drop', 'tcp', 'udp', 'icmp', 'dns', '80-80', '90-80', '0-65535', '65536-65536', '1.2.3.4/24', 'fd00::/8', 'a.test', '8', '256', ''),
  fc.string({ unit: tokenChars, maxLength: 20 }),
);
/** Strings that look almost like rules, so that deep branches are reached. */
const ruleLike = fc.array(fc.tuple(optionNames, fc.constantFrom('=', '', '=='), optionValues), { maxLength: 8 }).chain((tokens) =>
  fc.constantFrom(' ', '  ').map((sep) => tokens.map(([k, eq, v]) => `${k}${eq}${v}`).join(sep)),
);
const anyString = fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 200 }), ruleLike);

test('parseRule never throws and always returns a typed result', () => {
  fc.assert(
    fc.property(anyString, fc.constantFrom(4 as const, 6 as const), (value, family) => {
      const r = parseRule('0000', value, family);
      assert.equal(typeof r.ok, 'boolean');
      if (!r.ok) {
        assert.ok(r.errors.length > 0);
        for (const e of r.errors) assert.equal(typeof e.kind, 'string');
      }
    }),
    { numRuns: 3000 },
  );
});

test('parseQubeEntries never throws on arbitrary key sets', () => {
  const key = fc.oneof(fc.constantFrom('policy', '0000', '0001', '9999', '000', 'x', ''), fc.string({ maxLength: 10 }));
  fc.assert(
    fc.property(fc.array(fc.tuple(key, anyString), { maxLength: 10 }), fc.constantFrom(V4, V6), (pairs, target) => {
      const m = new Map(pairs.map(([k, v]) => [`/qubes-firewall/${target.addr}/${k}`, v]));
      const p = parseQubeEntries(target, m);
      assert.equal(typeof p.ok, 'boolean');
      // Whatever came in, the compiled chain is either the rules or a reject-all.
      const c = compileQube(p, new Map());
      assert.ok(c.rules.length > 0);
      assert.equal(p.ok ? c.outcome !== 'blocked' : c.outcome === 'blocked', true);
    }),
    { numRuns: 2000 },
  );
});

/** Well-formed rules as dom0 writes them (key order included). */
const validRule = fc.record({
  action: fc.constantFrom('accept', 'drop'),
  dst: fc.option(fc.oneof(
    fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 32 })).map(([a, b, p]) => `dst4=${a}.${b}.0.1/${p}`),
    fc.constantFrom('dsthost=example.test', 'dsthost=a-b_c.example.test'),
  ), { nil: undefined }),
  proto: fc.option(fc.constantFrom('tcp', 'udp', 'icmp'), { nil: undefined }),
  dns: fc.boolean(),
  ports: fc.option(fc.tuple(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 })).map(([a, b]) => [Math.min(a, b), Math.max(a, b)]), { nil: undefined }),
  icmptype: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }),
}).map((r) => {
  const parts = [`action=${r.action}`];
  if (r.dst) parts.push(r.dst);
  if (r.proto) parts.push(`proto=${r.proto}`);
  if (r.dns && r.proto !== 'icmp') parts.push('specialtarget=dns');
  if (r.ports && r.proto !== 'icmp') parts.push(`dstports=${r.ports[0]}-${r.ports[1]}`);
  if (r.icmptype !== undefined && r.proto === 'icmp') parts.push(`icmptype=${r.icmptype}`);
  return parts.join(' ');
});

test('well-formed rules always parse, and compile to text of the allowed grammar only', () => {
  fc.assert(
    fc.property(fc.array(validRule, { minLength: 1, maxLength: 12 }), fc.constantFrom('accept', 'drop'), (rules, policy) => {
      const m = new Map<string, string>([[`/qubes-firewall/${V4.addr}/policy`, policy]]);
      rules.forEach((r, i) => m.set(`/qubes-firewall/${V4.addr}/${String(i).padStart(4, '0')}`, r));
      const p = parseQubeEntries(V4, m);
      assert.ok(p.ok, JSON.stringify(!p.ok && p.errors));
      assert.equal(p.rules.length, rules.length + 1);
      const c = compileQube(p, new Map([['example.test', { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 60 }], ['a-b_c.example.test', { ok: true, addrs: [], ttlSeconds: 60 }]]));
      for (const line of qubeUpdateScript(c).trim().split('\n')) assert.match(line, /^[a-z0-9 .:/@{},"_-]+$/, line);
    }),
    { numRuns: 1000 },
  );
});

// What the compiler and the skeleton produce, loaded into a real kernel (in a throwaway
// namespace): the skeleton is idempotent and leaves everything else alone; every well-formed
// rule set compiles to a transaction nft accepts, holding exactly the compiled rules; a
// rejected transaction changes nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { run } from '@qubes-net/common';
import { NftTransaction } from '@qubes-net/common/kernel';
import {
  addFirewallSkeleton, compileQube, parseQubeEntries, addQubeUpdate, addQubeRemoval, addDnsSet, firewallNftWriter, firewallTable, readFamilyState, qubeChainName, ensureFirewallTables,
  type Target,
} from '@qubes-net/firewall';
import { needRoot } from '../helpers/root.js';

async function namespace(t: import('node:test').TestContext): Promise<string> {
  const ns = `qn-fwk-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  await run('ip', ['netns', 'add', ns]);
  t.after(() => run('ip', ['netns', 'del', ns], { allowFailure: true }));
  return ns;
}

const apply = (tx: NftTransaction, ns: string) => firewallNftWriter({ netns: ns }).apply(tx);
const skeleton = () => addFirewallSkeleton(new NftTransaction());

const ruleset = async (ns: string) => (await run('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset'])).stdout;

function compiled(target: Target, rules: Record<string, string>) {
  const m = new Map(Object.entries(rules).map(([k, v]) => [`/qubes-firewall/${target.addr}/${k}`, v]));
  return compileQube(parseQubeEntries(target, m), new Map([
    ['example.test', { ok: true, addrs: target.family === 4 ? ['203.0.113.80', '203.0.113.81'] : ['2001:db8::80'], ttlSeconds: 60 }],
    ['none.test', { ok: true, addrs: [], ttlSeconds: 60 }],
  ]));
}

test('the skeleton is idempotent and leaves qube chains, elements, sets and user chains alone', async (t) => {
  if (!needRoot(t)) return;
  const ns = await namespace(t);
  assert.deepEqual(await apply(skeleton(), ns), { ok: true });
  const once = await ruleset(ns);
  assert.deepEqual(await apply(skeleton(), ns), { ok: true });
  assert.equal(await ruleset(ns), once, 'loading it again changes nothing');
  const q = compiled({ addr: '10.137.0.7', family: 4 }, { policy: 'drop', '0000': 'action=accept proto=icmp' });
  const q6 = compiled({ addr: 'fd09:24ef:4179::a89:7', family: 6 }, { policy: 'accept' });
  const extra = addDnsSet(addQubeUpdate(addQubeUpdate(new NftTransaction(), q), q6), 4, ['10.139.1.1']).addChain(firewallTable(4), 'my-chain').addRule(firewallTable(4), 'my-chain', 'counter');
  assert.deepEqual(await apply(extra, ns), { ok: true });
  const full = await ruleset(ns);
  assert.deepEqual(await apply(skeleton(), ns), { ok: true });
  assert.equal(await ruleset(ns), full);
  const st = await readFamilyState(4, { netns: ns });
  assert.equal(st.forwardPolicy, 'drop');
  assert.equal(st.forwardRules, false);
  assert.equal(st.dispatch.get('10.137.0.7'), 'qbs-10-137-0-7');
  assert.equal(st.chains.get('qbs-10-137-0-7')?.rules, 2);
  assert.equal(st.chains.get('forward')?.rules, 0, 'the skeleton holds no rule; the firewall adds forward\'s once');
  for (const c of ['qubes-forward', 'prerouting', 'postrouting']) assert.equal(st.chains.get(c)?.rules, 0, c);
  assert.deepEqual(st.dnsAddr, ['10.139.1.1']);
  assert.equal((await readFamilyState(6, { netns: ns })).dispatch.get('fd09:24ef:4179::a89:7'), 'qbs-fd09-24ef-4179--a89-7');
  // Re-applying a qube replaces its rules (no duplicates); removing works whether or not it exists.
  assert.deepEqual(await apply(addQubeUpdate(new NftTransaction(), q), ns), { ok: true });
  assert.equal((await readFamilyState(4, { netns: ns })).chains.get('qbs-10-137-0-7')?.rules, 2);
  for (let i = 0; i < 2; i++) assert.deepEqual(await apply(addQubeRemoval(new NftTransaction(), '10.137.0.7', 4), ns), { ok: true });
  const after = await readFamilyState(4, { netns: ns });
  assert.equal(after.dispatch.has('10.137.0.7'), false);
  assert.equal(after.chains.has('qbs-10-137-0-7'), false);
  assert.equal(after.chains.get('my-chain')?.rules, 1);
});

test('a rejected transaction changes nothing and says why', async (t) => {
  if (!needRoot(t)) return;
  const ns = await namespace(t);
  await apply(skeleton(), ns);
  const before = await ruleset(ns);
  const tx = addQubeUpdate(new NftTransaction(), compiled({ addr: '10.137.0.7', family: 4 }, { policy: 'accept' })).addRule(firewallTable(4), 'qbs-10-137-0-7', 'frobnicate');
  const res = await apply(tx, ns);
  assert.equal(res.ok, false);
  assert.match(!res.ok ? res.error : '', /frobnicate|syntax error/);
  assert.equal(await ruleset(ns), before);
});

const validRule = fc.record({
  action: fc.constantFrom('accept', 'drop'),
  dst: fc.option(fc.constantFrom('dst4=1.2.3.0/24', 'dst4=10.0.0.1', 'dst4=0.0.0.0/0', 'dsthost=example.test', 'dsthost=none.test'), { nil: undefined }),
  proto: fc.option(fc.constantFrom('tcp', 'udp', 'icmp'), { nil: undefined }),
  dns: fc.boolean(),
  ports: fc.option(fc.tuple(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 })).map(([a, b]) => `${Math.min(a, b)}-${Math.max(a, b)}`), { nil: undefined }),
  icmptype: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }),
}).map((r) => [
  `action=${r.action}`,
  ...(r.dst ? [r.dst] : []),
  ...(r.proto ? [`proto=${r.proto}`] : []),
  ...(r.dns && r.proto !== 'icmp' ? ['specialtarget=dns'] : []),
  ...(r.ports && r.proto !== 'icmp' ? [`dstports=${r.ports}`] : []),
  ...(r.icmptype !== undefined && r.proto === 'icmp' ? [`icmptype=${r.icmptype}`] : []),
].join(' '));

test('random well-formed rule sets: nft accepts every compiled chain, holding exactly the compiled rules', async (t) => {
  if (!needRoot(t)) return;
  const ns = await namespace(t);
  await apply(skeleton(), ns);
  const sets = fc.sample(fc.tuple(fc.array(validRule, { minLength: 0, maxLength: 10 }), fc.constantFrom('accept', 'drop')), { numRuns: 300, seed: 4242 });
  const tx = new NftTransaction();
  const expected = new Map<string, number>();
  sets.forEach(([rules, policy], i) => {
    const v6 = i % 3 === 0;
    const target: Target = v6 ? { addr: `fd09:24ef:4179::${(i + 1).toString(16)}`, family: 6 } : { addr: `10.137.${Math.floor(i / 200)}.${(i % 200) + 1}`, family: 4 };
    // IPv4 destinations are a family mismatch for IPv6 sources: dom0 never writes those.
    const entries: Record<string, string> = { policy };
    rules.filter((r) => !(v6 && r.includes('dst4='))).forEach((r, k) => (entries[String(k).padStart(4, '0')] = r));
    const c = compiled(target, entries);
    assert.notEqual(c.outcome, 'blocked', JSON.stringify(entries));
    addQubeUpdate(tx, c);
    expected.set(c.chain, c.rules.length);
  });
  const res = await apply(tx, ns);
  assert.deepEqual(res, { ok: true });
  const st4 = await readFamilyState(4, { netns: ns });
  const st6 = await readFamilyState(6, { netns: ns });
  for (const [chain, n] of expected) {
    const info = st4.chains.get(chain) ?? st6.chains.get(chain);
    assert.equal(info?.rules, n, chain);
  }
  assert.equal(st4.dispatch.size + st6.dispatch.size, sets.length);
  assert.equal(st4.dispatch.get('10.137.0.2'), qubeChainName('10.137.0.2'));
});

test("16.2: forward's rules are added once, at the top, in a real kernel; user rules in every chain survive the skeleton, a rebuild and a second ensure", async (t) => {
  if (!needRoot(t)) return;
  const ns = await namespace(t);
  const writer = firewallNftWriter({ netns: ns });
  assert.deepEqual(await apply(skeleton(), ns), { ok: true });
  const nftIn = (args: string[]) => run('ip', ['netns', 'exec', ns, 'nft', ...args]);
  // A user script, as upstream's docs write them: plain nft commands naming upstream's chains.
  await nftIn(['add', 'rule', 'ip', 'qubes-firewall', 'forward', 'ip', 'daddr', '192.0.2.1', 'counter', 'drop']);
  let res = await ensureFirewallTables(writer);
  assert.equal(res.ok, true);
  assert.deepEqual(res.built, [4, 6]);
  for (const [chain, rule] of [['forward', 'ip daddr 192.0.2.2 counter drop'], ['qubes-forward', 'ip daddr 192.0.2.3 counter drop'], ['prerouting', 'ip saddr 192.0.2.4 counter drop'], ['postrouting', 'ip daddr 192.0.2.5 counter drop']] as const) {
    await nftIn(['add', 'rule', 'ip', 'qubes-firewall', chain, ...rule.split(' ')]);
  }
  const fwd = (await nftIn(['list', 'chain', 'ip', 'qubes-firewall', 'forward'])).stdout;
  const order = ['ct state established,related accept', 'iifname != "vif*" accept', 'jump qubes-forward', 'ip saddr vmap @dispatch', '192.0.2.1', '192.0.2.2'].map((x) => fwd.indexOf(x));
  assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!)), fwd);
  const before = await ruleset(ns);
  assert.deepEqual(await apply(skeleton(), ns), { ok: true });
  const q = compiled({ addr: '10.137.0.7', family: 4 }, { policy: 'drop' });
  assert.deepEqual(await apply(addQubeUpdate(new NftTransaction(), q), ns), { ok: true });
  assert.deepEqual(await apply(addQubeRemoval(new NftTransaction(), '10.137.0.7', 4), ns), { ok: true });
  res = await ensureFirewallTables(writer);
  assert.deepEqual(res.built, []);
  assert.equal((await readFamilyState(6, { netns: ns })).forwardRules, true);
  assert.equal(await ruleset(ns), before);
});

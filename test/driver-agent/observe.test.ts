// The driver's kernel observation in few processes: the three ip reads as one `ip -j -batch`
// (parsing its sequence of JSON documents, and splitting one route dump of every table into
// main-table IPv4 and IPv6 routes), and the same facts as the separate reads gave before.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { parseJsonSequence, parseIpReads, IP_READS } from '@qubes-net/driver-agent';
import { needRoot, isRoot } from '../helpers/root.js';

const INDEX = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'packages', 'driver-agent', 'dist', 'index.js');

test('parseJsonSequence: documents in a row, brackets and escapes inside strings', () => {
  assert.deepEqual(parseJsonSequence('[]\n[{"a":"]}[{"}]\n  {"b":"x\\"]"}\n'), [[], [{ a: ']}[{' }], { b: 'x"]' }]);
  assert.deepEqual(parseJsonSequence(''), []);
  assert.throws(() => parseJsonSequence('[1]\nError: x\n'), /unexpected text/);
  assert.throws(() => parseJsonSequence('[{"a":1}'), /truncated/);
  assert.throws(() => parseJsonSequence('[1]]'), /unbalanced/);
});

test('parseIpReads: main-table routes split by family; other tables and a wrong count rejected', () => {
  const out = [
    '[{"ifname":"vif3.0","addr_info":[]}]',
    JSON.stringify([
      { dst: '10.137.0.5', dev: 'vif3.0', metric: 32747 },
      { type: 'local', dst: '10.137.0.1', dev: 'vif3.0', table: 'local' },
      { dst: 'fd09::5', dev: 'vif3.0', metric: 32747 },
      { dst: 'fd09::6', dev: 'vif3.0', table: 'main' },
      { dst: '10.1.0.0/16', dev: 'eth0', table: '100' },
      { type: 'multicast', dst: 'ff00::/8', dev: 'vif3.0', table: 'local' },
    ]),
    '[{"dst":"10.137.0.5","dev":"vif3.0","lladdr":"00:16:3e:5e:6c:00"}]',
  ].join('\n');
  const r = parseIpReads(out, true);
  assert.deepEqual(r.routes4.map((x) => x.dst), ['10.137.0.5']);
  assert.deepEqual(r.routes6.map((x) => x.dst), ['fd09::5', 'fd09::6']);
  assert.equal(r.addrs.length, 1);
  assert.equal(r.neigh.length, 1);
  assert.deepEqual(parseIpReads(out, false).routes6, []);
  assert.throws(() => parseIpReads('[]\n[]\n', true), /expected 3/);
  assert.throws(() => parseIpReads('[]\n{}\n[]\n', true), /expected 3/);
});

let session: NetnsSession;
let q: Qube;

before(async () => {
  if (!isRoot()) return;
  session = await NetnsSession.create('drv-observe');
  q = await session.qube('netvm');
  const ip = (...a: string[]) => q.exec('ip', a);
  for (const [vif, peer, n] of [['vif5.0', 'peer5', '5'], ['vif6.0', 'peer6', '6']] as const) {
    await ip('link', 'add', vif, 'type', 'veth', 'peer', 'name', peer);
    await ip('link', 'set', vif, 'up');
    await ip('link', 'set', peer, 'up');
    await ip('addr', 'add', '10.137.0.1/32', 'dev', vif);
    await ip('route', 'add', `10.137.0.${n}`, 'dev', vif, 'metric', '32747');
    await ip('-6', 'route', 'add', `fd09:24ef:4179::a89:${n}`, 'dev', vif, 'metric', '32747');
    await ip('neigh', 'add', `10.137.0.${n}`, 'lladdr', `00:16:3e:5e:6c:0${n}`, 'dev', vif, 'nud', 'permanent');
    await ip('-6', 'neigh', 'add', `fd09:24ef:4179::a89:${n}`, 'lladdr', `00:16:3e:5e:6c:0${n}`, 'dev', vif, 'nud', 'permanent');
  }
  // A route in another table, which the main-table filter must leave out.
  await ip('route', 'add', '10.9.9.9', 'dev', 'vif5.0', 'table', '100');
  await q.exec('nft', ['-f', '-'], { input: [
    'table ip qubes {',
    '  set allowed { type ifname . ipv4_addr; elements = { "vif5.0" . 10.137.0.5 }; }',
    '  set downstream { type ipv4_addr; elements = { 10.137.0.5 }; }',
    '  chain antispoof { counter drop; }',
    '}',
    'table ip6 qubes {',
    '  set allowed { type ifname . ipv6_addr; elements = { "vif5.0" . fd09:24ef:4179::a89:5 }; }',
    '}',
    'table ip qubes-firewall {',
    '  chain forward { type filter hook forward priority 0; policy drop; }',
    '}',
    '',
  ].join('\n') });
});

after(async () => {
  await session?.destroy();
});

test('one ip batch gives the same lists as the separate reads it replaces', async (t) => {
  if (!needRoot(t)) return;
  const json = async (args: string[]) => JSON.parse((await q.exec('ip', ['-j', ...args])).stdout || '[]');
  const batch = await q.exec('ip', ['-j', '-batch', '-'], { input: IP_READS.join('\n') + '\n' });
  const r = parseIpReads(batch.stdout, true);
  assert.deepEqual(r.addrs, await json(['addr', 'show']));
  assert.deepEqual(r.routes4, await json(['-4', 'route', 'show', 'table', 'main']));
  assert.deepEqual(r.routes6, await json(['-6', 'route', 'show', 'table', 'main']));
  assert.deepEqual(r.neigh, await json(['neigh', 'show', 'nud', 'permanent']));
  assert.ok(r.routes4.some((x) => x.dst === '10.137.0.6') && r.routes6.some((x) => x.dst === 'fd09:24ef:4179::a89:6'));
});

test('observe() in the qube: vifs, routes, addresses, neighbours, sets and the firewall skeleton', async (t) => {
  if (!needRoot(t)) return;
  const code = `const m = await import(${JSON.stringify(INDEX)});
    const dump = (o) => ({
      links: [...o.kernel.vifLinks].sort(), routes: [...o.kernel.routes].map(([k, v]) => [k, [...v].sort()]).sort(),
      addrs: [...o.kernel.addrs].map(([k, v]) => [k, [...v].sort()]).sort(), neigh: [...o.kernel.neigh].map(([k, v]) => [k, [...v].sort()]).sort(),
      allowed4: [...o.kernel.allowed.ip], allowed6: [...o.kernel.allowed.ip6], downstream4: [...o.kernel.downstream.ip],
      chains4: [...o.tables.chains.ip ?? []].sort(), skeleton: o.tables.firewallSkeleton, own: [...o.ownAddresses].sort() });
    const full = await m.observe({ ipv6: true });
    const start = await m.observe({ ipv6: true, firewall: false });
    const v4 = await m.observe({ ipv6: false });
    process.stdout.write(JSON.stringify({ full: dump(full), start: dump(start), v4: dump(v4) }));`;
  const res = JSON.parse((await q.exec(process.execPath, ['--input-type=module', '-e', code])).stdout);
  const f = res.full;
  assert.deepEqual(f.links, [['vif5.0', { group: 'default', up: true }], ['vif6.0', { group: 'default', up: true }]]);
  assert.deepEqual(f.routes, [['vif5.0', ['10.137.0.5 32747', 'fd09:24ef:4179::a89:5 32747']], ['vif6.0', ['10.137.0.6 32747', 'fd09:24ef:4179::a89:6 32747']]]);
  assert.deepEqual(f.addrs, [['vif5.0', ['10.137.0.1/32']], ['vif6.0', ['10.137.0.1/32']]]);
  assert.deepEqual(f.neigh, [
    ['vif5.0', [['10.137.0.5', '00:16:3e:5e:6c:05'], ['fd09:24ef:4179::a89:5', '00:16:3e:5e:6c:05']]],
    ['vif6.0', [['10.137.0.6', '00:16:3e:5e:6c:06'], ['fd09:24ef:4179::a89:6', '00:16:3e:5e:6c:06']]],
  ]);
  assert.deepEqual(f.allowed4, ['vif5.0 10.137.0.5']);
  assert.deepEqual(f.allowed6, ['vif5.0 fd09:24ef:4179::a89:5']);
  assert.deepEqual(f.downstream4, ['10.137.0.5']);
  assert.deepEqual(f.chains4, [['antispoof', 1]]);
  assert.equal(f.skeleton, true);
  assert.ok(f.own.includes('10.137.0.1'));
  // Without the firewall read everything else is the same.
  assert.deepEqual({ ...res.start, skeleton: true }, f);
  assert.equal(res.start.skeleton, false);
  // Without IPv6: no IPv6 routes, no ip6 table.
  assert.deepEqual(res.v4.routes, [['vif5.0', ['10.137.0.5 32747']], ['vif6.0', ['10.137.0.6 32747']]]);
  assert.deepEqual(res.v4.allowed6, []);
});

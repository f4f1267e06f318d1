// The planner against `ip -j` output captured from a real kernel (fixtures.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { desiredUplink, parseKernelState, parseUplinkConfig, planUplink, sameRecord, parseOwnedRecord, type KernelState, type OwnedRecord } from '@qubes-net/guest-agent';
import { APPENDIX_A } from './fixtures.js';
import { FRESH, OURS, UPSTREAM } from './fixtures.js';

const desired = (over: Record<string, string | undefined> = {}, ifname = 'eth0') => {
  const keys = new Map(Object.entries({ ...APPENDIX_A, ...over }).filter((e): e is [string, string] => e[1] !== undefined));
  return desiredUplink(ifname, parseUplinkConfig(keys, '00:16:3e:5e:6c:00'), { ipv6: true });
};
const ETH0_INDEX = 3;
const record = (addresses: OwnedRecord['addresses'], ifindex = ETH0_INDEX): OwnedRecord => ({ ifname: 'eth0', ifindex, addresses });
const A4 = { family: 4 as const, local: '10.137.0.7', prefixlen: 32 };
const A6 = { family: 6 as const, local: 'fd09:24ef:4179::a89:7', prefixlen: 128 };

test('parseKernelState reads links, both route families and neighbours', () => {
  const s = parseKernelState(OURS);
  const eth0 = s.links.find((l) => l.ifname === 'eth0')!;
  assert.deepEqual({ i: eth0.ifindex, mac: eth0.mac, up: eth0.up, g: eth0.group }, { i: 3, mac: '00:16:3e:5e:6c:00', up: true, g: '1' });
  assert.deepEqual(eth0.addresses.map((a) => `${a.local}/${a.prefixlen}`), ['10.137.0.7/32', 'fd09:24ef:4179::a89:7/128', 'fe80::216:3eff:fe5e:6c00/64']);
  assert.deepEqual(s.routes.filter((r) => r.protocol === '75').map((r) => `${r.family} ${r.dst} ${r.gateway ?? ''}`).sort(),
    ['4 10.137.0.3 ', '4 default 10.137.0.3', '6 default fd09:24ef:4179::a89:3', '6 fd09:24ef:4179::a89:3 ']);
  assert.equal(s.neighbours.length, 2);
  assert.throws(() => parseKernelState('[]\n[]\n'), /expected 4/);
});

test('fresh link: the whole upstream sequence, in upstream order, as one batch', () => {
  const p = planUplink(parseKernelState(FRESH), desired(), undefined);
  assert.deepEqual(p.lines, [
    'address replace 10.137.0.7/32 dev eth0',
    'address replace fd09:24ef:4179::a89:7/128 dev eth0 nodad',
    'neigh replace 10.137.0.3 dev eth0 lladdr fe:ff:ff:ff:ff:ff nud permanent proto 75',
    'neigh replace fd09:24ef:4179::a89:3 dev eth0 lladdr fe:ff:ff:ff:ff:ff nud permanent proto 75',
    'link set dev eth0 group 1 up',
    'route replace to unicast 10.137.0.3 dev eth0 scope link proto 75',
    'route replace to unicast fd09:24ef:4179::a89:3 dev eth0 scope link proto 75',
    'route replace to unicast 0.0.0.0/0 via 10.137.0.3 dev eth0 onlink proto 75',
    'route replace to unicast ::/0 via fd09:24ef:4179::a89:3 dev eth0 onlink proto 75',
  ]);
  assert.deepEqual(p.recordAfter, record([A4, A6]));
});

test('already configured by us: nothing to do (idempotent)', () => {
  const p = planUplink(parseKernelState(OURS), desired(), record([A4, A6]));
  assert.deepEqual(p.lines, []);
  assert.ok(sameRecord(p.recordAfter, record([A6, A4])));
});

test('configured by upstream: addresses adopted, routes and neighbours re-tagged as ours', () => {
  const p = planUplink(parseKernelState(UPSTREAM), desired(), undefined);
  assert.ok(p.lines.every((l) => l.startsWith('neigh replace') || l.startsWith('route replace')), p.lines.join('\n'));
  assert.equal(p.lines.length, 6);
  assert.ok(!p.lines.some((l) => l.includes(' del ')));
});

test('IP change: the new address is added, then the old one (ours per the record) goes', () => {
  const p = planUplink(parseKernelState(OURS), desired({ '/qubes-ip': '10.137.0.8' }), record([A4, A6]));
  // In this order the link never loses its last IPv4 address (which would flush its routes).
  assert.deepEqual(p.lines, ['address replace 10.137.0.8/32 dev eth0', 'address del 10.137.0.7/32 dev eth0']);
  assert.deepEqual(p.recordBefore!.addresses.map((a) => a.local).sort(), ['10.137.0.7', '10.137.0.8', 'fd09:24ef:4179::a89:7']);
  assert.deepEqual(p.recordAfter!.addresses.map((a) => a.local), ['10.137.0.8', 'fd09:24ef:4179::a89:7']);
});

test('an address we did not add is never removed (no record, or a record for another ifindex)', () => {
  for (const owned of [undefined, record([A4, A6], 99), { ...record([A4, A6]), ifname: 'eth1' }]) {
    const p = planUplink(parseKernelState(OURS), desired({ '/qubes-ip': '10.137.0.8' }), owned);
    assert.deepEqual(p.lines, ['address replace 10.137.0.8/32 dev eth0']);
  }
});

test('IPv6 switched off: our IPv6 address, neighbour and routes go, IPv4 stays', () => {
  const p = planUplink(parseKernelState(OURS), desired({ '/qubes-ip6': undefined, '/qubes-gateway6': undefined }), record([A4, A6]));
  assert.deepEqual(p.lines.sort(), [
    'address del fd09:24ef:4179::a89:7/128 dev eth0',
    'neigh del fd09:24ef:4179::a89:3 dev eth0',
    'route del ::/0 via fd09:24ef:4179::a89:3 dev eth0 proto 75 metric 1024',
    'route del fd09:24ef:4179::a89:3 dev eth0 proto 75 metric 1024',
  ]);
});

test('upstream-made (proto boot) routes and neighbours are not ours to delete', () => {
  const p = planUplink(parseKernelState(UPSTREAM), desired({ '/qubes-ip6': undefined, '/qubes-gateway6': undefined }), undefined);
  assert.ok(!p.lines.some((l) => l.includes(' del ')), p.lines.join('\n'));
});

test('invalid config: remove everything of ours, then take the link down', () => {
  const p = planUplink(parseKernelState(OURS), desired({ '/qubes-ip': '1.2.3.4; reboot' }), record([A4, A6]));
  assert.equal(p.lines.at(-1), 'link set dev eth0 down');
  assert.equal(p.lines.length, 4 + 2 + 2 + 1);
  assert.ok(p.lines.slice(0, -1).every((l) => / del /.test(l)));
  assert.deepEqual(p.recordAfter!.addresses, []);
});

test('missing interface: nothing planned', () => {
  const p = planUplink(parseKernelState(OURS), desired({}, 'eth1'), undefined);
  assert.equal(p.ifindex, undefined);
  assert.deepEqual(p.lines, []);
});

test('a route of ours with another gateway is replaced, a foreign default route elsewhere is left', () => {
  const s: KernelState = parseKernelState(OURS);
  s.routes.push({ family: 4, dst: 'default', gateway: '192.168.1.1', dev: 'wlan0', table: undefined, protocol: 'dhcp', scope: undefined, metric: 600, onlink: false, type: 'unicast' });
  const p = planUplink(s, desired({ '/qubes-gateway': '10.137.0.1' }), record([A4, A6]));
  assert.deepEqual(p.lines, [
    'route del 0.0.0.0/0 via 10.137.0.3 dev eth0 proto 75',
    'route del 10.137.0.3 dev eth0 proto 75',
    'neigh del 10.137.0.3 dev eth0',
    'neigh replace 10.137.0.1 dev eth0 lladdr fe:ff:ff:ff:ff:ff nud permanent proto 75',
    'route replace to unicast 10.137.0.1 dev eth0 scope link proto 75',
    'route replace to unicast 0.0.0.0/0 via 10.137.0.1 dev eth0 onlink proto 75',
  ]);
});

test('owned-record file format is validated', () => {
  assert.deepEqual(parseOwnedRecord(JSON.stringify(record([A4, A6]))), record([A4, A6]));
  assert.equal(parseOwnedRecord('{'), undefined);
  assert.equal(parseOwnedRecord(JSON.stringify({ ifname: 'eth0', ifindex: 3, addresses: [{ family: 4, local: '10.0.0.1; x', prefixlen: 32 }] })), undefined);
  assert.equal(parseOwnedRecord(JSON.stringify({ ifname: 'eth0', ifindex: 3, addresses: [{ family: 4, local: '10.0.0.1', prefixlen: 33 }] })), undefined);
});

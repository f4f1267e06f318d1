// The lab's MTU pieces (issue 14 part 2), pure: `internet: {mtu}` in a topology, the
// vm-config.net-mtu feature as dom0 writes it (inherited down the netvm chain) and the vif
// backend's xenstore `mtu` entry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { featureProblem, netMtuOf, ownEntries, ownEntriesOps, parseTopology, vifBackendEntries } from '@qubes-net/lab';

const topo = (extra = '', features = '') => parseTopology(`
${extra}
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true, features: { ipv6: "1" } }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true${features} }
  - { name: work, qid: 7, netvm: sys-firewall }
  - { name: vault, qid: 8 }
`);

test('internet.mtu: an integer 1280..65535 (the uplink carries IPv6 too)', () => {
  assert.equal(topo('internet: { mtu: 1400 }').internet.mtu, 1400);
  assert.equal(topo().internet.mtu, undefined);
  for (const bad of ['1000', '"1400"', '70000', '1400.5']) assert.throws(() => topo(`internet: { mtu: ${bad} }`), /internet\.mtu|mtu/, bad);
  assert.throws(() => topo('internet: { speed: 1 }'), /unknown field/);
});

test('vm-config.net-mtu: decimal 576..65535 or "" (none)', () => {
  assert.equal(featureProblem('vm-config.net-mtu', '1400'), undefined);
  assert.equal(featureProblem('vm-config.net-mtu', ''), undefined);
  for (const bad of ['575', '65536', '01400', '14OO', '1400 ']) assert.ok(featureProblem('vm-config.net-mtu', bad), bad);
});

test('dom0 writes /vm-config/net-mtu to the qube and every qube below it; the nearest setting wins', () => {
  const m = topo('', ', features: { vm-config.net-mtu: "1400" }');
  assert.equal(ownEntries(m, 'sys-net').has('/vm-config/net-mtu'), false);
  assert.equal(ownEntries(m, 'sys-firewall').get('/vm-config/net-mtu'), '1400');
  assert.equal(ownEntries(m, 'work').get('/vm-config/net-mtu'), '1400');
  assert.equal(ownEntries(m, 'vault').has('/vm-config/net-mtu'), false, 'not networked');
  m.qubes.get('work')!.features['vm-config.net-mtu'] = '1300';
  assert.equal(netMtuOf(m, 'work'), '1300');
  m.qubes.get('work')!.features['vm-config.net-mtu'] = '';
  assert.equal(netMtuOf(m, 'work'), undefined, '"" turns it off below');
});

test('the key is managed: removed when the feature goes; the vif backend carries the client MTU', () => {
  const m = topo('', ', features: { vm-config.net-mtu: "1400" }');
  const current = ownEntries(m, 'work');
  assert.deepEqual(vifBackendEntries(m, 'work', 3, 17).entries.find(([k]) => k === 'mtu'), ['mtu', '1400']);
  delete m.qubes.get('sys-firewall')!.features['vm-config.net-mtu'];
  assert.deepEqual(ownEntriesOps(m, 'work', current), [{ op: 'rm', path: '/vm-config/net-mtu' }]);
  assert.equal(vifBackendEntries(m, 'work', 3, 17).entries.some(([k]) => k === 'mtu'), false);
});

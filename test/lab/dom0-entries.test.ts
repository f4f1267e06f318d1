import { test } from 'node:test';
import assert from 'node:assert/strict';
import { APPENDIX_A } from '../helpers/appendix-a.js';
import { parseTopology, ownEntries, ownEntriesOps, providerPreAttachOps, firewallOps, vifBackendEntries, connectedIps, forgetAddressOps, type LabModel } from '@qubes-net/lab';

// Appendix A: sys-net qid 2 → sys-firewall qid 3 → work qid 7, ipv6 on sys-net.
function appendixA(): LabModel {
  return parseTopology(`
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true, features: { ipv6: "1" } }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }
  - { name: work, qid: 7, netvm: sys-firewall }
`);
}

const pick = (m: Map<string, string>, keys: string[]) => Object.fromEntries(keys.filter((k) => m.has(k)).map((k) => [k, m.get(k)]));

test('Appendix A: work\'s QubesDB', () => {
  const e = ownEntries(appendixA(), 'work');
  // Appendix A is today's dom0; the proposed IPv6 DNS keys come on top for a qube with IPv6.
  assert.deepEqual(pick(e, [...e.keys()].filter((k) => k.startsWith('/qubes-') && !k.startsWith('/qubes-service') && k !== '/qubes-vm-updateable' && !k.endsWith('-dns6'))), APPENDIX_A);
  assert.deepEqual(pick(e, ['/qubes-primary-dns6', '/qubes-secondary-dns6']), { '/qubes-primary-dns6': 'fd09:24ef:4179::a8b:1', '/qubes-secondary-dns6': 'fd09:24ef:4179::a8b:2' });
  assert.equal(e.get('/name'), 'work');
  assert.equal(e.get('/type'), 'AppVM');
  assert.equal(e.get('/qubes-service/meminfo-writer'), '1');
  assert.equal(e.has('/connected-ips'), false);
});

test('Appendix A: sys-firewall\'s provider keys and its client keys', () => {
  const m = appendixA();
  const e = ownEntries(m, 'sys-firewall');
  assert.deepEqual(pick(e, ['/qubes-vm-type', '/qubes-ip', '/qubes-gateway', '/qubes-netvm-network', '/qubes-netvm-gateway', '/qubes-netvm-gateway6', '/qubes-netvm-netmask', '/qubes-netvm-primary-dns', '/qubes-netvm-secondary-dns', '/connected-ips', '/connected-ips6']), {
    '/qubes-vm-type': 'ProxyVM',
    '/qubes-ip': '10.137.0.3',
    '/qubes-gateway': '10.137.0.2',
    '/qubes-netvm-network': '10.137.0.3',
    '/qubes-netvm-gateway': '10.137.0.3',
    '/qubes-netvm-gateway6': 'fd09:24ef:4179::a89:3',
    '/qubes-netvm-netmask': '255.255.255.255',
    '/qubes-netvm-primary-dns': '10.139.1.1',
    '/qubes-netvm-secondary-dns': '10.139.1.2',
    '/connected-ips': '10.137.0.7',
    '/connected-ips6': 'fd09:24ef:4179::a89:7',
  });
  assert.equal(e.get('/qubes-netvm-primary-dns6'), 'fd09:24ef:4179::a8b:1', 'a provider with IPv6 gets the IPv6 virtual DNS');
  assert.equal(e.get('/qubes-netvm-secondary-dns6'), 'fd09:24ef:4179::a8b:2');
  const net = ownEntries(m, 'sys-net');
  assert.equal(net.get('/qubes-vm-type'), 'NetVM');
  assert.equal(net.has('/qubes-ip'), false, 'a NetVM without netvm has no client keys');
  assert.equal(net.get('/connected-ips'), '10.137.0.3');

  // What dom0 writes into sys-firewall before work's vif appears, in order.
  const ops = providerPreAttachOps(m, 'work', 1000);
  assert.deepEqual(ops, [
    { op: 'write', path: '/connected-ips', value: '10.137.0.7' },
    { op: 'write', path: '/connected-ips6', value: 'fd09:24ef:4179::a89:7' },
    { op: 'write', path: '/mapped-ip/10.137.0.7/visible-ip', value: '10.137.0.7' },
    { op: 'write', path: '/mapped-ip/10.137.0.7/visible-gateway', value: '10.137.0.3' },
    { op: 'rm', path: '/qubes-firewall/10.137.0.7/' },
    { op: 'write', path: '/qubes-firewall/10.137.0.7/policy', value: 'drop' },
    { op: 'write', path: '/qubes-firewall/10.137.0.7/0000', value: 'action=accept' },
    { op: 'write', path: '/qubes-firewall/10.137.0.7', value: '' },
    { op: 'rm', path: '/qubes-firewall/fd09:24ef:4179::a89:7/' },
    { op: 'write', path: '/qubes-firewall/fd09:24ef:4179::a89:7/policy', value: 'drop' },
    { op: 'write', path: '/qubes-firewall/fd09:24ef:4179::a89:7/0000', value: 'action=accept' },
    { op: 'write', path: '/qubes-firewall/fd09:24ef:4179::a89:7', value: '' },
  ]);
  for (const op of ops) assert.ok(op.path.length <= 63, op.path);

  assert.deepEqual(vifBackendEntries(m, 'work', 13, 17), {
    path: '/local/domain/13/backend/vif/17/0',
    entries: [['ip', '10.137.0.7 fd09:24ef:4179::a89:7'], ['mac', '00:16:3e:5e:6c:00'], ['type', 'vif'], ['frontend-id', '17'], ['handle', '0']],
  });
});

test('test_621 subcases: ipv4 only, ipv6 only on the client, proxy without ipv6', () => {
  const m = parseTopology(`
qubes:
  - { name: sys-net, qid: 2, provides_network: true }
  - { name: work, qid: 7, netvm: sys-net, features: { ipv6: "1" } }
  - { name: mail, qid: 8, netvm: sys-net }
`);
  const work = ownEntries(m, 'work');
  assert.equal(work.get('/qubes-ip6'), 'fd09:24ef:4179::a89:7');
  assert.equal(work.has('/qubes-gateway6'), false);
  const mail = ownEntries(m, 'mail');
  assert.equal(mail.has('/qubes-ip6'), false);
  const net = ownEntries(m, 'sys-net');
  assert.equal(net.has('/qubes-netvm-gateway6'), false);
  assert.deepEqual(connectedIps(m, 'sys-net'), [['/connected-ips', '10.137.0.7 10.137.0.8'], ['/connected-ips6', 'fd09:24ef:4179::a89:7']]);
});

test('stale network keys are removed when the netvm goes away; services come from features', () => {
  const m = appendixA();
  const before = ownEntries(m, 'work');
  m.qubes.get('work')!.netvm = null;
  m.qubes.get('work')!.features['service.qubes-updates-proxy'] = '';
  const ops = ownEntriesOps(m, 'work', before);
  const removed = ops.filter((o) => o.op === 'rm').map((o) => o.path).sort();
  assert.deepEqual(removed, ['/qubes-gateway', '/qubes-gateway6', '/qubes-ip', '/qubes-ip6', '/qubes-mac', '/qubes-netmask', '/qubes-primary-dns', '/qubes-primary-dns6', '/qubes-secondary-dns', '/qubes-secondary-dns6']);
  assert.deepEqual(ops.filter((o) => o.op === 'write'), [{ op: 'write', path: '/qubes-service/qubes-updates-proxy', value: '0' }]);
  // Applying twice changes nothing.
  assert.deepEqual(ownEntriesOps(m, 'work', ownEntries(m, 'work')), []);
});

test('firewall numbering keeps gaps for rules of the other family and expired rules', () => {
  const m = parseTopology(`
qubes:
  - { name: sys-net, qid: 2, provides_network: true, features: { ipv6: "1" } }
  - name: work
    qid: 7
    netvm: sys-net
    firewall:
      - action=accept dsthost=192.0.2.0/24 proto=tcp dstports=80
      - action=accept dsthost=2001:db8::1
      - { action: accept, dsthost: www.example.test, proto: udp, dstports: 53-60 }
      - { action: drop, proto: icmp, icmptype: 8, expire: 500 }
      - action=accept specialtarget=dns
`);
  const ops = firewallOps(m, 'work', 1000).filter((o) => o.op === 'write').map((o) => [o.path, (o as { value: string }).value]);
  assert.deepEqual(ops, [
    ['/qubes-firewall/10.137.0.7/policy', 'drop'],
    ['/qubes-firewall/10.137.0.7/0000', 'action=accept dst4=192.0.2.0/24 proto=tcp dstports=80-80'],
    ['/qubes-firewall/10.137.0.7/0002', 'action=accept dsthost=www.example.test proto=udp dstports=53-60'],
    ['/qubes-firewall/10.137.0.7/0004', 'action=accept specialtarget=dns'],
    ['/qubes-firewall/10.137.0.7', ''],
    ['/qubes-firewall/fd09:24ef:4179::a89:7/policy', 'drop'],
    ['/qubes-firewall/fd09:24ef:4179::a89:7/0001', 'action=accept dst6=2001:db8::1/128'],
    ['/qubes-firewall/fd09:24ef:4179::a89:7/0002', 'action=accept dsthost=www.example.test proto=udp dstports=53-60'],
    ['/qubes-firewall/fd09:24ef:4179::a89:7/0004', 'action=accept specialtarget=dns'],
    ['/qubes-firewall/fd09:24ef:4179::a89:7', ''],
  ]);
  assert.deepEqual(forgetAddressOps('10.137.0.7'), [
    { op: 'rm', path: '/qubes-firewall/10.137.0.7/' },
    { op: 'rm', path: '/qubes-firewall/10.137.0.7' },
    { op: 'rm', path: '/mapped-ip/10.137.0.7/' },
  ]);
});

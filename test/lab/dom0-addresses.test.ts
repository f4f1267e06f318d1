import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseTopology, vmidToIPv4, realIPv4, realIPv6, ipv6Enabled, visibleGateway, visibleGateway6,
  gateway6Of, visibleIPv4, visibleNetmask, descendants, startOrder, type LabModel,
} from '@qubes-net/lab';

test('vmid_to_ipv4 matches upstream test vectors', () => {
  const vectors: Array<[number, string]> = [[1, '0.1'], [254, '0.254'], [255, '1.1'], [256, '1.2'], [508, '1.254'], [509, '2.1'], [513, '2.5']];
  for (const [vmid, tail] of vectors) assert.equal(vmidToIPv4('10.137', vmid), `10.137.${tail}`, String(vmid));
  // Never .0 or .255 in the last octet, over the whole range.
  for (let vmid = 1; vmid < 65000; vmid += 7) {
    const last = Number(vmidToIPv4('10.137', vmid).split('.')[3]);
    assert.ok(last >= 1 && last <= 254, `vmid ${vmid}`);
  }
});

function chain(features: { net?: string; fw?: string; app?: string }): LabModel {
  const f = (v: string | undefined) => (v === undefined ? '' : `\n    features: { ipv6: "${v}" }`);
  return parseTopology(`
qubes:
  - name: sys-net
    qid: 2
    provides_network: true
    uplink: true${f(features.net)}
  - name: sys-firewall
    qid: 3
    netvm: sys-net
    provides_network: true${f(features.fw)}
  - name: work
    qid: 7
    netvm: sys-firewall${f(features.app)}
  - name: disp
    qid: 20
    class: DispVM
    dispid: 300
    netvm: sys-firewall
  - name: offline
    qid: 21
`);
}

test('IPv4 from qid, 10.138 from dispid, none without network', () => {
  const m = chain({});
  assert.equal(realIPv4(m, 'sys-net'), '10.137.0.2');
  assert.equal(realIPv4(m, 'work'), '10.137.0.7');
  assert.equal(realIPv4(m, 'disp'), '10.138.1.46');
  assert.equal(realIPv4(m, 'offline'), undefined);
  assert.equal(visibleNetmask(m, 'offline'), undefined);
  assert.equal(visibleNetmask(m, 'work'), '255.255.255.255');
});

test('ipv6 rule: the first qube up the chain that sets the feature decides', () => {
  // Nowhere: off.
  let m = chain({});
  assert.equal(ipv6Enabled(m, 'work'), false);
  assert.equal(realIPv6(m, 'work'), undefined);
  // On sys-net only: everything below inherits, with gateways.
  m = chain({ net: '1' });
  assert.equal(realIPv6(m, 'work'), 'fd09:24ef:4179::a89:7');
  assert.equal(realIPv6(m, 'disp'), 'fd09:24ef:4179::a8a:12c');
  assert.equal(visibleGateway6(m, 'work'), 'fd09:24ef:4179::a89:3');
  assert.equal(gateway6Of(m, 'sys-net'), 'fd09:24ef:4179::a89:2');
  // Empty string on the proxy disables it below, even though sys-net enables.
  m = chain({ net: '1', fw: '' });
  assert.equal(ipv6Enabled(m, 'sys-firewall'), false);
  assert.equal(realIPv6(m, 'work'), undefined);
  assert.equal(realIPv6(m, 'sys-net'), 'fd09:24ef:4179::a89:2');
  // Disabled on one qube below an enabled netvm.
  m = chain({ net: '1', app: '' });
  assert.equal(realIPv6(m, 'work'), undefined);
  assert.equal(realIPv6(m, 'disp'), 'fd09:24ef:4179::a8a:12c');
  // Only the client enables (ipv6_just_appvm): ip6, but no gateway6.
  m = chain({ app: '1' });
  assert.equal(realIPv6(m, 'work'), 'fd09:24ef:4179::a89:7');
  assert.equal(visibleGateway6(m, 'work'), undefined);
  assert.equal(gateway6Of(m, 'sys-firewall'), undefined);
});

test('fake IP and fake gateway change the visible values only', () => {
  const m = parseTopology(`
qubes:
  - { name: sys-net, qid: 2, provides_network: true, features: { net.fake-ip: 192.168.1.1 } }
  - { name: work, qid: 7, netvm: sys-net, features: { net.fake-ip: 192.168.1.128, net.fake-gateway: 192.168.1.1, net.fake-netmask: "24" } }
  - { name: mail, qid: 8, netvm: sys-net }
`);
  assert.equal(realIPv4(m, 'work'), '10.137.0.7');
  assert.equal(visibleIPv4(m, 'work'), '192.168.1.128');
  assert.equal(visibleGateway(m, 'work'), '192.168.1.1');
  assert.equal(visibleNetmask(m, 'work'), '255.255.255.0');
  // A fake IP on the provider is what its clients see as the gateway.
  assert.equal(visibleGateway(m, 'mail'), '192.168.1.1');
});

test('start order puts netvms first; descendants walk the tree', () => {
  const m = chain({});
  assert.deepEqual(startOrder(m, ['work']), ['sys-net', 'sys-firewall', 'work']);
  assert.deepEqual(startOrder(m), ['sys-net', 'sys-firewall', 'work', 'disp', 'offline']);
  assert.deepEqual(descendants(m, 'sys-net'), ['sys-firewall', 'work', 'disp']);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTopology, loadTopologyFile, DEFAULT_TOPOLOGY_FILE, TopologyError, realIPv4, realIPv6 } from '@qubes-net/lab';

test('the default topology loads and has what the issue asks for', async () => {
  const m = await loadTopologyFile(DEFAULT_TOPOLOGY_FILE);
  const names = [...m.qubes.keys()];
  for (const n of ['sys-net', 'sys-firewall', 'work', 'personal']) assert.ok(names.includes(n), n);
  assert.equal(m.qubes.get('sys-net')!.uplink, true);
  const ipv4only = [...m.qubes.values()].find((q) => q.features.ipv6 === '');
  assert.ok(ipv4only, 'an IPv4-only qube');
  assert.equal(realIPv6(m, ipv4only.name), undefined);
  const disp = [...m.qubes.values()].find((q) => q.klass === 'DispVM');
  assert.ok(disp, 'a disposable');
  assert.match(realIPv4(m, disp.name)!, /^10\.138\./);
});

function issues(text: string): TopologyError {
  try {
    parseTopology(text, 'lab.yaml');
  } catch (err) {
    assert.ok(err instanceof TopologyError, String(err));
    return err;
  }
  assert.fail('expected a TopologyError');
}

test('errors name the file, the line and the field', () => {
  const err = issues(`name: t
qubes:
  - name: sys-net
    qid: 2
    provides_network: true
  - name: work
    qid: 7
    netvm: sys-fw
  - name: mail
    qid: 7
    netvm: work
    firewall:
      - action=accept proto=tcp dstports=99999
      - { action: accept, dstports: 80 }
    features:
      net.fake-ip: 1.2.3
    colour: red
`);
  const byPath = new Map(err.issues.map((i) => [i.path, i]));
  assert.equal(byPath.get('qubes[1].netvm')?.line, 8);
  assert.match(byPath.get('qubes[1].netvm')!.message, /no qube named "sys-fw"/);
  assert.equal(byPath.get('qubes[2].firewall[0]')?.line, 13);
  assert.equal(byPath.get('qubes[2].firewall[1].dstports')?.line, 14);
  assert.equal(byPath.get('qubes[2].features.net.fake-ip')?.line, 16);
  assert.equal(byPath.get('qubes[2].colour')?.line, 17);
  assert.match(err.message, /^lab\.yaml:8: qubes\[1\]\.netvm: /m);
});

test('semantic errors: duplicate qid, netvm that does not provide network, loops, uplink rules', () => {
  let err = issues(`qubes:
  - { name: a, qid: 2, provides_network: true }
  - { name: b, qid: 2, netvm: a }
  - { name: c, qid: 4, netvm: b }
`);
  assert.ok(err.issues.some((i) => i.path === 'qubes[1].qid' && i.line === 3 && /already used by qubes\[0\]/.test(i.message)));
  assert.ok(err.issues.some((i) => i.path === 'qubes[2].netvm' && i.line === 4 && /does not have provides_network/.test(i.message)));
  err = issues(`qubes:
  - { name: a, qid: 2, provides_network: true, netvm: b }
  - { name: b, qid: 3, provides_network: true, netvm: a }
`);
  assert.ok(err.issues.some((i) => /netvm loop/.test(i.message)));
  err = issues(`qubes:
  - { name: a, qid: 2, uplink: true }
  - { name: d, qid: 3, class: DispVM }
`);
  assert.ok(err.issues.some((i) => i.path === 'qubes[0].uplink'));
  assert.ok(err.issues.some((i) => i.path === 'qubes[1].dispid' && /needs a dispid/.test(i.message)));
  err = issues(`qubes:
  - { name: a, qid: 2, provides_network: true, uplink: true }
  - { name: b, qid: 3, provides_network: true, uplink: true }
  - { name: internet, qid: 4 }
`);
  assert.ok(err.issues.some((i) => i.path === 'qubes[1].uplink' && /only one/.test(i.message)));
  assert.ok(err.issues.some((i) => i.path === 'qubes[2].name' && i.line === 4));
  err = issues(`qubes:
  - { name: a, qid: 2, provides_network: true }
  - { name: b, qid: 3, netvm: a, ip: 10.137.0.2 }
`);
  assert.ok(err.issues.some((i) => /would both have 10\.137\.0\.2/.test(i.message)));
});

test('syntax errors carry a line; JSON is accepted', () => {
  const err = issues('qubes:\n  - name: a\n   qid: [\n');
  assert.ok(err.issues[0]!.line !== undefined && err.issues[0]!.line >= 2);
  const m = parseTopology('{"name": "j", "qubes": [{"name": "sys-net", "qid": 2, "provides_network": true, "services": {"qubes-firewall": false}}]}');
  assert.equal(m.qubes.get('sys-net')!.features['service.qubes-firewall'], '');
});

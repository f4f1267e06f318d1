// IPv6 virtual DNS through the lab (issue 14 part 1): dual stack resolves through both families;
// with IPv4-only DNS upstream and IPv6 on, a query to the IPv6 virtual server fails at once with
// an ICMPv6 error (never a timeout) and names still resolve; with IPv6-only DNS the IPv4 virtual
// servers reject and names resolve over IPv6; an IPv6-only uplink (internet.ipv4: false) serves
// every client with IPv6.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot } from '../helpers/root.js';
import { INTERNET, dnsQuery, httpGet } from '@qubes-net/netns';
import { setUpstreamDns, setFirewall, parseRuleList } from '@qubes-net/lab';
import { startLab, chainTopology, type E2ELab } from './fixture.js';

const [V6A, V6B] = ['fd09:24ef:4179::a8b:1', 'fd09:24ef:4179::a8b:2'];
const [D4A, D4B] = INTERNET.dns4;
const [D6A, D6B] = INTERNET.dns6;
let L: E2ELab;

before(async () => {
  if (process.getuid?.() !== 0) return;
  L = await startLab(`
internet: { dns: ["${D4A}", "${D6A}", "${D4B}", "${D6B}"] }
${chainTopology(`
  - { name: c1, qid: 7, netvm: sys-firewall }
  - { name: c4, qid: 9, netvm: sys-firewall, features: { ipv6: "" } }
`)}`, 'ipv6dns');
});

after(async () => {
  await L?.destroy();
});

const resolv = async (q: string) => (await L.lab.exec(q, ['cat', '/etc/resolv.conf'])).stdout;
const getent = async (q: string, name: string, lab: E2ELab = L) => lab.lab.exec(q, ['getent', 'hosts', name], { timeoutMs: 20_000 });

test('dual stack: clients with IPv6 list the IPv6 virtual servers after the IPv4 ones, and resolve through both', async (t) => {
  if (!needRoot(t)) return;
  assert.equal(await resolv('c1'), `nameserver 10.139.1.1\nnameserver 10.139.1.2\nnameserver ${V6A}\nnameserver ${V6B}\n`);
  assert.equal(await resolv('c4'), 'nameserver 10.139.1.1\nnameserver 10.139.1.2\n', 'IPv6 off: IPv4 servers only');
  for (const server of ['10.139.1.1', '10.139.1.2', V6A, V6B]) {
    const r = await dnsQuery(L.ns('c1'), server, 'www.example.test', 'AAAA');
    assert.equal(r.rcode, 'NOERROR', server);
    assert.deepEqual(r.addresses, [INTERNET.web6], server);
  }
  const upstream = await L.lab.runningQube('sys-net').db.read('/qubes-dns-upstream');
  assert.equal(upstream, `${D4A} ${D4B} ${D6A} ${D6B}`);
  assert.equal((await getent('c1', 'www.example.test')).exitCode, 0);
  assert.equal((await httpGet(L.ns('c1'), 'http://www.example.test/')).status, 200);
});

test('IPv4-only DNS upstream with IPv6 on: the IPv6 virtual servers answer with ICMPv6 at once; names resolve', async (t) => {
  if (!needRoot(t)) return;
  await setUpstreamDns(L.lab, [D4A]);
  const ms: number[] = [];
  for (const server of [V6A, V6B, V6A, V6B]) {
    const r = await dnsQuery(L.ns('c1'), server, 'www.example.test', 'A', { timeoutMs: 5000 });
    assert.equal(r.rcode, 'REJECTED', `${server}: an ICMPv6 error came back`);
    assert.equal(r.error, 'ECONNREFUSED');
    ms.push(r.ms!);
  }
  t.diagnostic(`IPv6 virtual DNS with IPv4-only upstream: ICMPv6 reject after ${ms.join(', ')} ms (client behind sys-firewall)`);
  assert.equal((await dnsQuery(L.ns('c1'), '10.139.1.1', 'www.example.test')).rcode, 'NOERROR');
  assert.equal((await getent('c1', 'www.example.test')).exitCode, 0);
  assert.equal((await getent('c4', 'www.example.test')).exitCode, 0);
});

test('IPv6-only DNS upstream: the IPv4 virtual servers reject at once, names resolve over IPv6', async (t) => {
  if (!needRoot(t)) return;
  await setUpstreamDns(L.lab, [D6B]);
  const r = await dnsQuery(L.ns('c1'), '10.139.1.1', 'www.example.test', 'A', { timeoutMs: 5000 });
  assert.equal(r.rcode, 'REJECTED');
  t.diagnostic(`IPv4 virtual DNS with IPv6-only upstream: ICMP reject after ${r.ms} ms`);
  assert.equal((await dnsQuery(L.ns('c1'), V6A, 'www.example.test')).rcode, 'NOERROR');
  assert.equal((await getent('c1', 'www.example.test')).exitCode, 0, 'glibc moves past the rejecting IPv4 servers');
  assert.notEqual((await dnsQuery(L.ns('c4'), '10.139.1.1', 'www.example.test', 'A', { timeoutMs: 5000 })).rcode, 'NOERROR', 'an IPv4-only client has no IPv6 DNS to fall back to');
  await setUpstreamDns(L.lab, [D4A, D6A, D4B, D6B]);
});

test('firewall specialtarget=dns covers the IPv6 virtual servers; without it they are blocked', async (t) => {
  if (!needRoot(t)) return;
  const set = async (...r: string[]) => {
    for (const [ip, fb] of await setFirewall(L.lab, 'c1', parseRuleList(r))) assert.equal(fb.state, 'ok', `${ip}: ${fb.state} ${fb.detail}`);
  };
  await set('action=accept specialtarget=dns', 'action=drop');
  for (const server of ['10.139.1.1', V6A, V6B]) assert.equal((await dnsQuery(L.ns('c1'), server, 'www.example.test', 'AAAA')).rcode, 'NOERROR', `${server} allowed`);
  assert.notEqual((await httpGet(L.ns('c1'), `http://[${INTERNET.web6}]/`, { timeoutMs: 1500 })).status, 200, 'nothing else');
  await set('action=accept proto=icmp', 'action=drop');
  assert.equal((await dnsQuery(L.ns('c1'), V6A, 'www.example.test', 'AAAA', { timeoutMs: 1000 })).addresses.length, 0, 'no DNS rule: blocked');
  await set('action=accept');
  assert.equal((await dnsQuery(L.ns('c1'), V6A, 'www.example.test', 'AAAA')).rcode, 'NOERROR');
});

test('IPv6-only uplink (internet.ipv4: false): every client with IPv6 resolves and connects', async (t) => {
  if (!needRoot(t)) return;
  // One lab at a time on a small machine: the dual-stack one is done.
  await L?.destroy();
  const v6only = await startLab(`
internet: { ipv4: false }
${chainTopology(`
  - { name: c1, qid: 7, netvm: sys-firewall }
`)}`, 'v6only');
  try {
    const net = await v6only.lab.exec('sys-net', ['ip', '-4', 'addr', 'show', 'dev', 'eth0']);
    assert.equal(net.stdout.includes('inet '), false, 'no IPv4 on the uplink');
    assert.equal((await v6only.lab.runningQube('sys-net').db.read('/qubes-dns-upstream')), `${D6A} ${D6B}`);
    for (const q of ['sys-firewall', 'c1']) {
      assert.equal((await getent(q, 'www.example.test', v6only)).exitCode, 0, `${q} resolves`);
      const r = await httpGet(v6only.ns(q), 'http://ipv6only.example.test/');
      assert.equal(r.status, 200, `${q} connects: ${r.error}`);
    }
  } finally {
    await v6only.destroy();
  }
});

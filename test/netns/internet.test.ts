// The fake internet from a netvm qube configured like a real sys-net: DNS per server, HTTP,
// held TCP flows, ping, and the switches tests use (stop/start DNS, change names).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { NetnsSession, startFakeInternet, configureUplink, dnsQuery, httpGet, ping, tcpHold, INTERNET, LONG_NAME, ROOT_BODY, type FakeInternet, type Qube } from '@qubes-net/netns';
import { isRoot, needRoot } from '../helpers/root.js';
import { leftovers } from './helpers.js';

let s: NetnsSession | undefined;
let inet: FakeInternet;
let netvm: Qube;

// One internet for the file (servers take a moment to start); each test checks needRoot.
before(async () => {
  if (!isRoot()) return;
  s = await NetnsSession.create('inet');
  [netvm, inet] = await Promise.all([s.qube('netvm'), startFakeInternet(s, { hosts: [{ name: 'extra.example.test', addresses: ['203.0.113.99'] }] })]);
  await inet.connectUplink(netvm, 'eth0');
  await configureUplink(netvm, 'eth0', { ipv6: INTERNET.netvm6 });
});
after(() => s?.destroy());

test('configureUplink addresses the netvm and writes its resolv.conf', async (t) => {
  if (!needRoot(t)) return;
  assert.equal(await readFile(netvm.hostPath('/etc/resolv.conf'), 'utf8'), 'nameserver 198.51.100.53\nnameserver 198.51.100.54\n');
  const addrs = (await netvm.exec('ip', ['-j', 'addr', 'show', 'dev', 'eth0'])).stdout;
  assert.match(addrs, /"local":"192\.0\.2\.2","prefixlen":24/);
  assert.match(addrs, /"local":"2001:db8:0:1::2","prefixlen":64/);
  const routes = (await netvm.exec('ip', ['-j', 'route', 'show', 'default'])).stdout;
  assert.match(routes, /"gateway":"192\.0\.2\.1"/);
  assert.ok(await ping(netvm, INTERNET.gateway4));
  assert.ok(await ping(netvm, INTERNET.web6));
  await assert.rejects(configureUplink(netvm, 'eth0', { ipv4: '192.0.2.300/24' }), /invalid IPv4/);
  await assert.rejects(configureUplink(netvm, 'eth0', { dns: ['nameserver evil'] }), /invalid nameserver/);
});

test('each DNS server answers www.example.test and logs the query as its own', async (t) => {
  if (!needRoot(t)) return;
  const before53 = await inet.queryCount('198.51.100.53', 'www.example.test');
  const before54 = await inet.queryCount('198.51.100.54', 'www.example.test');
  const a = await dnsQuery(netvm, '198.51.100.53', 'www.example.test', 'A');
  assert.equal(a.rcode, 'NOERROR');
  assert.deepEqual(a.addresses, ['203.0.113.80']);
  const aaaa = await dnsQuery(netvm, '198.51.100.54', 'www.example.test', 'AAAA');
  assert.deepEqual(aaaa.addresses, ['2001:db8:80::80']);
  const v6 = await dnsQuery(netvm, '2001:db8:53::53', 'other.example.test', 'A');
  assert.deepEqual(v6.addresses, ['203.0.113.81']);
  assert.equal(await inet.queryCount('198.51.100.53', 'www.example.test'), before53 + 1);
  assert.equal(await inet.queryCount('198.51.100.54', 'www.example.test'), before54 + 1);
  const log = await inet.queryLog('2001:db8:53::53');
  assert.deepEqual(log.at(-1), { type: 'A', name: 'other.example.test', from: '2001:db8:0:1::2', server: '2001:db8:53::53' });
});

test('the zone has the documented names, NODATA and NXDOMAIN', async (t) => {
  if (!needRoot(t)) return;
  const q = (name: string, type = 'A') => dnsQuery(netvm, '198.51.100.53', name, type);
  assert.deepEqual((await q('multi.example.test')).addresses.sort(), ['203.0.113.80', '203.0.113.81']);
  const v4only = await q('ipv4only.example.test', 'AAAA');
  assert.equal(v4only.rcode, 'NOERROR');
  assert.deepEqual(v4only.addresses, []);
  assert.deepEqual((await q('ipv6only.example.test', 'AAAA')).addresses, ['2001:db8:80::80']);
  assert.deepEqual((await q(LONG_NAME)).addresses, ['203.0.113.80']);
  assert.deepEqual((await q('extra.example.test')).addresses, ['203.0.113.99']);
  const alias = await q('alias.example.test');
  assert.deepEqual(alias.answers.map((x) => x.type), ['CNAME', 'A']);
  assert.equal((await q('missing.example.test')).rcode, 'NXDOMAIN');
  assert.equal((await q('www.example.com')).rcode, 'NXDOMAIN');
});

test('a stopped DNS server gives no answer, the others still answer, and it comes back', async (t) => {
  if (!needRoot(t)) return;
  await inet.stopDns('198.51.100.54');
  t.after(() => inet.startDns('198.51.100.54'));
  // Its address stays: the kernel answers port unreachable (qn-dns-query's socket is connected).
  assert.ok(['TIMEOUT', 'REJECTED'].includes((await dnsQuery(netvm, '198.51.100.54', 'www.example.test', 'A', { timeoutMs: 300 })).rcode));
  assert.equal((await dnsQuery(netvm, '198.51.100.53', 'www.example.test')).rcode, 'NOERROR');
  await inet.startDns('198.51.100.54');
  assert.deepEqual((await dnsQuery(netvm, '198.51.100.54', 'www.example.test')).addresses, ['203.0.113.80']);
  await inet.restartDns();
  assert.equal((await dnsQuery(netvm, '2001:db8:53::53', 'www.example.test')).rcode, 'NOERROR');
  await assert.rejects(inet.stopDns('8.8.8.8'), /not a fake internet DNS server/);
});

test('setHosts changes what the servers answer', async (t) => {
  if (!needRoot(t)) return;
  t.after(() => inet.setHosts([{ name: 'extra.example.test', addresses: ['203.0.113.99'] }]));
  await inet.setHosts([{ name: 'moving.example.test', addresses: ['203.0.113.81'] }]);
  assert.deepEqual((await dnsQuery(netvm, '198.51.100.53', 'moving.example.test')).addresses, ['203.0.113.81']);
  assert.equal((await dnsQuery(netvm, '198.51.100.54', 'extra.example.test')).rcode, 'NXDOMAIN');
  await assert.rejects(inet.setHosts([{ name: 'bad name', addresses: ['203.0.113.1'] }]), /invalid host name/);
});

test('HTTP over IPv4 and IPv6: fixed body at /, the path elsewhere, the client address at /whoami', async (t) => {
  if (!needRoot(t)) return;
  const root = await httpGet(netvm, 'http://203.0.113.80/');
  assert.equal(root.status, 200);
  assert.equal(root.body, ROOT_BODY);
  assert.equal((await httpGet(netvm, 'http://[2001:db8:80::80]/some/path')).body, '/some/path\n');
  assert.equal((await httpGet(netvm, 'http://203.0.113.81/whoami')).body, '192.0.2.2\n');
  assert.ok(inet.connections().some((c) => c.service === 'http' && c.local === '[2001:db8:80::80]:80' && c.remote.startsWith('[2001:db8:0:1::2]:')));
  const refused = await httpGet(netvm, 'http://203.0.113.80:8080/', { timeoutMs: 1000 });
  assert.equal(refused.status, 0);
  assert.match(refused.error ?? '', /ECONNREFUSED/);
  // the CLI form other tests may use directly
  const cli = await netvm.exec('qn-http-get', ['http://203.0.113.80/']);
  assert.equal(cli.stdout, ROOT_BODY);
});

test('a held TCP flow to the echo ports keeps echoing and reports when it breaks', async (t) => {
  if (!needRoot(t)) return;
  const hold = await tcpHold(netvm, INTERNET.web4, 1234, { stallMs: 500 });
  t.after(() => hold.stop());
  await hold.waitForMoreEchoes(3);
  const hold6 = await tcpHold(netvm, INTERNET.web6, 4321);
  t.after(() => hold6.stop());
  await hold6.waitForMoreEchoes(2);
  // cut the flow: remove the netvm's address, so echoes stop and the probe reports a stall
  await netvm.exec('ip', ['addr', 'del', '192.0.2.2/24', 'dev', 'eth0']);
  t.after(() => configureUplink(netvm, 'eth0', { ipv6: INTERNET.netvm6 }));
  const end = await hold.ended;
  assert.equal(end.event, 'broken');
  assert.ok(end.echoes! >= 3);
  await configureUplink(netvm, 'eth0', { ipv6: INTERNET.netvm6 });
  await hold6.waitForMoreEchoes(2);
  assert.equal((await hold6.stop()).event, 'stopped');
});

test('the internet stops cleanly and leaves the rest of the session alone', async (t) => {
  if (!needRoot(t)) return;
  const s2 = await NetnsSession.create('inet-stop');
  t.after(() => s2.destroy());
  const [vm, net] = await Promise.all([s2.qube('sys-net'), startFakeInternet(s2)]);
  await net.connectUplink(vm, 'ens5');
  await assert.rejects(net.connectUplink(vm, 'eth1'), /already connected/);
  await configureUplink(vm, 'ens5');
  assert.equal((await dnsQuery(vm, '198.51.100.53', 'www.example.test')).rcode, 'NOERROR');
  await net.stop();
  assert.equal(s2.getQube('internet'), undefined);
  assert.equal(await vm.ifaceExists('ens5'), false);
  assert.deepEqual(leftovers(s2.id).filter((l) => l.includes('internet')), []);
  await s2.destroy();
  assert.deepEqual(leftovers(s2.id), []);
});

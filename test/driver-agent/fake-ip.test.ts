// Fake IP (net.fake-ip / net.fake-gateway): /mapped-ip values validated strictly, the netdev
// translation chains planned in the vif's own transaction, removed exactly by offline; then,
// as root, the same statements loaded into a real kernel with TCP, UDP and ICMP across them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DriverState, planBatch, validateVifEvent, parseFakeIp, fakeIpApplyStatements, fakeIpRemoveStatements, fakeIpBaseStatements, InputError,
  type PlanContext, type ProviderConfig, type VifFacts, type MappedRaw, type VifSpec,
} from '@qubes-net/driver-agent';
import { NetnsSession } from '@qubes-net/netns';
import { needRoot } from '../helpers/root.js';

const provider: ProviderConfig = { gateway: '10.137.0.2', gateway6: 'fd09:24ef:4179::a89:2', virtualDns: ['10.139.1.1', '10.139.1.2'], connected4: [], connected6: [], firewallService: false, hardenInterfaces: false, behindQubesProvider: false };
const exists: VifFacts = { exists: true, ipv6: true };
const REAL = '10.137.0.7';
const FAKE = '192.168.1.128';
const FAKEGW = '192.168.1.1';
const fakeMap = new Map<string, MappedRaw>([[REAL, { visibleIp: FAKE, visibleGateway: FAKEGW }]]);
let gen = 1;
const ctx = (mapped: Map<string, MappedRaw> = fakeMap, over: Partial<PlanContext> = {}): PlanContext => ({ provider, facts: () => exists, generation: gen++, flowtable: false, mapped: (ip) => mapped.get(ip), ...over });
const online = (vif: string, ips: string[]) => validateVifEvent({ op: 'online', vif, ips, mac: '00:16:3e:5e:6c:00' });
const offline = (vif: string) => validateVifEvent({ op: 'offline', vif });
const spec = (ips: string[]): VifSpec => {
  const c = online('vif12.0', ips);
  assert.ok(c.ok);
  return c.spec;
};

const APPLY = [
  'add table netdev qubes-fakeip',
  'add chain netdev qubes-fakeip in-vif12.0 { type filter hook ingress device "vif12.0" priority -500; policy accept; }',
  'add chain netdev qubes-fakeip out-vif12.0 { type filter hook egress device "vif12.0" priority -500; policy accept; }',
  'flush chain netdev qubes-fakeip in-vif12.0',
  'flush chain netdev qubes-fakeip out-vif12.0',
  'add rule netdev qubes-fakeip in-vif12.0 meta protocol ip6 counter drop',
  'add rule netdev qubes-fakeip in-vif12.0 ip saddr 10.137.0.7 counter drop',
  'add rule netdev qubes-fakeip in-vif12.0 ip saddr 192.168.1.128 ip saddr set 10.137.0.7',
  'add rule netdev qubes-fakeip in-vif12.0 ip daddr 192.168.1.1 ip daddr set 10.137.0.2',
  'add rule netdev qubes-fakeip out-vif12.0 meta protocol ip6 counter drop',
  'add rule netdev qubes-fakeip out-vif12.0 ip daddr 10.137.0.7 ip daddr set 192.168.1.128',
  'add rule netdev qubes-fakeip out-vif12.0 ip saddr 10.137.0.2 ip saddr set 192.168.1.1',
];
const REMOVE = [
  ...APPLY.slice(0, 5),
  'delete chain netdev qubes-fakeip in-vif12.0',
  'delete chain netdev qubes-fakeip out-vif12.0',
];

test('parseFakeIp: applies only when both values are set and the visible IP differs', () => {
  const s = spec([REAL, 'fd09::7']);
  assert.deepEqual(parseFakeIp(s, { visibleIp: FAKE, visibleGateway: FAKEGW }, provider), { real: REAL, fake: FAKE, gateway: '10.137.0.2', fakeGateway: FAKEGW });
  assert.equal(parseFakeIp(s, undefined, provider), undefined);
  assert.equal(parseFakeIp(s, { visibleIp: REAL, visibleGateway: '10.137.0.2' }, provider), undefined, 'dom0 writes the real values for a normal client');
  assert.equal(parseFakeIp(s, { visibleIp: REAL, visibleGateway: FAKEGW }, provider), undefined, 'same IP: nothing to translate');
  assert.equal(parseFakeIp(s, { visibleIp: FAKE }, provider), undefined);
  assert.equal(parseFakeIp(s, { visibleIp: FAKE, visibleGateway: '' }, provider), undefined);
  assert.equal(parseFakeIp(s, { visibleGateway: FAKEGW }, provider), undefined);
  assert.equal(parseFakeIp(spec(['fd09::7']), { visibleIp: FAKE, visibleGateway: FAKEGW }, provider), undefined, 'no IPv4: no mapping');
  assert.deepEqual(parseFakeIp(s, { visibleIp: FAKE, visibleGateway: '10.137.0.2' }, provider), { real: REAL, fake: FAKE, gateway: '10.137.0.2', fakeGateway: '10.137.0.2' });
});

test('parseFakeIp: a bad value is a structured error naming the key', () => {
  const s = spec([REAL]);
  const cases: Array<[MappedRaw, string, RegExp]> = [
    [{ visibleIp: 'fd09::1', visibleGateway: FAKEGW }, `/mapped-ip/${REAL}/visible-ip`, /not an IPv4/],
    [{ visibleIp: '192.168.1.0128', visibleGateway: FAKEGW }, `/mapped-ip/${REAL}/visible-ip`, /not an IPv4/],
    [{ visibleIp: ' 192.168.1.128', visibleGateway: FAKEGW }, `/mapped-ip/${REAL}/visible-ip`, /not an IPv4/],
    [{ visibleIp: '224.0.0.1', visibleGateway: FAKEGW }, `/mapped-ip/${REAL}/visible-ip`, /multicast/],
    [{ visibleIp: '10.139.1.1', visibleGateway: FAKEGW }, `/mapped-ip/${REAL}/visible-ip`, /virtual DNS/],
    [{ visibleIp: '10.137.0.2', visibleGateway: FAKEGW }, `/mapped-ip/${REAL}/visible-ip`, /gateway/],
    [{ visibleIp: FAKE, visibleGateway: 'x' }, `/mapped-ip/${REAL}/visible-gateway`, /not an IPv4/],
    [{ visibleIp: FAKE, visibleGateway: '255.255.255.255' }, `/mapped-ip/${REAL}/visible-gateway`, /./],
    [{ visibleIp: FAKE, visibleGateway: FAKE }, `/mapped-ip/${REAL}/visible-gateway`, /fake IP itself/],
    [{ visibleIp: FAKE, visibleGateway: REAL }, `/mapped-ip/${REAL}/visible-gateway`, /real address/],
    [{ visibleIp: REAL, visibleGateway: '1.2.3' }, `/mapped-ip/${REAL}/visible-gateway`, /not an IPv4/],
  ];
  for (const [raw, key, reason] of cases) {
    const r = parseFakeIp(s, raw, provider);
    assert.ok(r instanceof InputError, JSON.stringify(raw));
    assert.equal(r.source, 'qubesdb');
    assert.equal(r.key, key, JSON.stringify(raw));
    assert.match(r.reason, reason, JSON.stringify(raw));
  }
});

test('statements: one ingress and one egress chain per vif; no gateway rules when the gateway is not faked', () => {
  assert.deepEqual(fakeIpApplyStatements('vif12.0', { real: REAL, fake: FAKE, gateway: '10.137.0.2', fakeGateway: FAKEGW }), APPLY);
  const same = fakeIpApplyStatements('vif12.0', { real: REAL, fake: FAKE, gateway: '10.137.0.2', fakeGateway: '10.137.0.2' });
  assert.ok(!same.some((l) => l.includes('ip daddr 10.137.0.2') || l.includes('ip saddr 10.137.0.2 ip saddr set')));
  assert.deepEqual(fakeIpRemoveStatements('vif12.0'), REMOVE);
  assert.deepEqual(fakeIpBaseStatements([]), ['add table netdev qubes-fakeip', 'delete table netdev qubes-fakeip']);
});

test('online with a mapping: the chains ride in the same transaction; anti-spoofing stays on the real IP; no IPv6', () => {
  const p = planBatch(new DriverState(), [online('vif12.0', [REAL, 'fd09:24ef:4179::a89:7'])], ctx());
  assert.deepEqual(p.nft, [
    'add element ip qubes allowed { "vif12.0" . 10.137.0.7 }',
    'add element ip qubes downstream { 10.137.0.7 }',
    ...APPLY,
  ]);
  assert.deepEqual(p.ip.map((l) => l.line), [
    'link set dev vif12.0 group 2 up',
    'address replace 10.137.0.2/32 dev vif12.0',
    'neigh replace 10.137.0.7 dev vif12.0 lladdr 00:16:3e:5e:6c:00 nud permanent',
    'route replace 10.137.0.7 dev vif12.0 metric 32740',
  ]);
  assert.deepEqual(p.sysctls.map((s) => s.path), ['net/ipv4/conf/vif12.0/proxy_arp']);
  const rec = p.records.get('vif12.0')!;
  assert.equal(rec.state, 'online');
  assert.match(rec.detail, /fake IP 192\.168\.1\.128 gateway 192\.168\.1\.1; IPv6 dropped/);
  assert.deepEqual(rec.applied!.fakeIp, { real: REAL, fake: FAKE, gateway: '10.137.0.2', fakeGateway: FAKEGW });
});

test('offline removes exactly the chains; a normal vif in the same burst gets none', () => {
  const on = planBatch(new DriverState(), [online('vif12.0', [REAL]), online('vif13.0', ['10.137.0.8'])], ctx(new Map([...fakeMap, ['10.137.0.8', { visibleIp: '10.137.0.8', visibleGateway: '10.137.0.2' }]])));
  assert.equal(on.nft.filter((l) => l.includes('qubes-fakeip')).length, APPLY.length);
  assert.ok(!on.nft.some((l) => l.includes('vif13.0') && l.includes('fakeip')));
  const off = planBatch(on.next, [offline('vif12.0')], ctx());
  assert.deepEqual(off.nft.filter((l) => l.includes('qubes-fakeip')), REMOVE);
  assert.ok(off.nft.includes('delete element ip qubes allowed { "vif12.0" . 10.137.0.7 }'));
  // Gone from the namespace already: the chains are removed all the same.
  const gone = planBatch(on.next, [offline('vif12.0')], ctx(fakeMap, { facts: () => ({ exists: false, ipv6: false }) }));
  assert.deepEqual(gone.nft.filter((l) => l.includes('qubes-fakeip')), REMOVE);
  const again = planBatch(off.next, [offline('vif12.0')], ctx());
  assert.deepEqual(again.nft, []);
});

test('re-online: unchanged mapping adds nothing; a removed mapping removes the chains; a changed one refills them', () => {
  const on = planBatch(new DriverState(), [online('vif12.0', [REAL])], ctx());
  const same = planBatch(on.next, [online('vif12.0', [REAL])], ctx());
  assert.deepEqual(same.nft, []);
  const plain = planBatch(on.next, [online('vif12.0', [REAL])], ctx(new Map()));
  assert.deepEqual(plain.nft, REMOVE);
  const moved = planBatch(on.next, [online('vif12.0', [REAL])], ctx(new Map([[REAL, { visibleIp: '192.168.1.129', visibleGateway: FAKEGW }]])));
  assert.ok(moved.nft.includes('add rule netdev qubes-fakeip in-vif12.0 ip saddr 192.168.1.129 ip saddr set 10.137.0.7'));
  assert.ok(moved.nft.includes('flush chain netdev qubes-fakeip in-vif12.0'));
});

test('a bad mapping: the vif is refused with the structured error and stays blocked (chains of a previous online removed)', () => {
  const bad = new Map<string, MappedRaw>([[REAL, { visibleIp: '300.1.1.1', visibleGateway: FAKEGW }]]);
  const p = planBatch(new DriverState(), [online('vif12.0', [REAL])], ctx(bad));
  assert.equal(p.results[0]!.ok, false);
  assert.ok(p.results[0]!.inputError instanceof InputError);
  assert.equal(p.results[0]!.inputError!.key, `/mapped-ip/${REAL}/visible-ip`);
  assert.equal(p.records.get('vif12.0')!.state, 'error');
  assert.deepEqual(p.nft, []);
  assert.deepEqual(p.ip, []);
  const on = planBatch(new DriverState(), [online('vif12.0', [REAL])], ctx());
  const later = planBatch(on.next, [online('vif12.0', [REAL])], ctx(bad));
  assert.equal(later.records.get('vif12.0')!.state, 'error');
  assert.ok(later.nft.includes('delete element ip qubes allowed { "vif12.0" . 10.137.0.7 }'));
  assert.deepEqual(later.nft.filter((l) => l.includes('qubes-fakeip')), REMOVE);
});

test('kernel: the planned chains translate TCP, UDP and ICMP both ways with valid checksums; removal works after the vif is gone', async (t) => {
  if (!needRoot(t)) return;
  const session = await NetnsSession.create('drv-fakeip');
  try {
    const netvm = await session.qube('fnetvm');
    const client = await session.qube('fclient');
    await session.link(netvm, 'vif12.0', client, 'eth0');
    const sh = (q: typeof netvm, script: string) => q.exec('sh', ['-ec', script]);
    const clientMac = (await client.exec('cat', ['/sys/class/net/eth0/address'])).stdout.trim();
    const vifMac = (await netvm.exec('cat', ['/sys/class/net/vif12.0/address'])).stdout.trim();
    await sh(netvm, `ip link set lo up; ip link set vif12.0 up; ip addr add 10.137.0.2/32 dev vif12.0; ip neigh replace ${REAL} dev vif12.0 lladdr ${clientMac} nud permanent; ip route replace ${REAL} dev vif12.0`);
    await sh(client, `ip link set lo up; ip link set eth0 up; ip addr add ${FAKE}/32 dev eth0; ip neigh replace ${FAKEGW} dev eth0 lladdr ${vifMac} nud permanent; ip route add ${FAKEGW} dev eth0; ip route add default via ${FAKEGW} dev eth0`);
    const on = planBatch(new DriverState(), [online('vif12.0', [REAL])], ctx());
    const fake = on.nft.filter((l) => l.includes('qubes-fakeip'));
    await netvm.exec('nft', ['-f', '-'], { input: fake.join('\n') + '\n' });
    // A server in the netvm sees the real address; the client sees the fake gateway answer.
    const server = `
import socket, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.137.0.2', 8123)); s.listen(1)
    c, a = s.accept(); c.sendall(('tcp ' + a[0]).encode()); c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('10.137.0.2', 8124))
    d, a = u.recvfrom(100); u.sendto(('udp ' + a[0]).encode(), a)
ts = [threading.Thread(target=tcp), threading.Thread(target=udp)]
[x.start() for x in ts]; print('ready', flush=True); [x.join(10) for x in ts]
`;
    const srv = netvm.spawn('timeout', ['15', 'python3', '-c', server]);
    await new Promise<void>((resolve) => srv.stdout!.once('data', () => resolve()));
    const cli = `
import socket
s = socket.create_connection(('${FAKEGW}', 8123), timeout=3); tcp = s.recv(100).decode(); s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3); u.sendto(b'x', ('${FAKEGW}', 8124)); d, a = u.recvfrom(100)
print(tcp, '|', d.decode(), a[0])
`;
    const r = await client.exec('python3', ['-c', cli]);
    assert.equal(r.stdout.trim(), `tcp ${REAL} | udp ${REAL} ${FAKEGW}`);
    const ping = await client.exec('ping', ['-c', '1', '-W', '2', FAKEGW]);
    assert.match(ping.stdout, /1 received/);
    // The client sending from its real address is dropped at ingress.
    await sh(client, `ip addr add ${REAL}/32 dev eth0`);
    const spoof = await client.exec('ping', ['-c', '1', '-W', '1', '-I', REAL, FAKEGW], { allowFailure: true });
    assert.doesNotMatch(spoof.stdout, /1 received/);
    // The vif disappears; offline's removal still applies and leaves no chain behind.
    await sh(netvm, 'ip link del vif12.0');
    const off = planBatch(on.next, [offline('vif12.0')], ctx(fakeMap, { facts: () => ({ exists: false, ipv6: false }) }));
    await netvm.exec('nft', ['-f', '-'], { input: off.nft.filter((l) => l.includes('qubes-fakeip')).join('\n') + '\n' });
    const left = await netvm.exec('nft', ['list', 'table', 'netdev', 'qubes-fakeip']);
    assert.doesNotMatch(left.stdout, /chain/);
  } finally {
    await session.destroy();
  }
});

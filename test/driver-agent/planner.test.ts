// The planner (pure): one burst → one nft transaction, one ip batch, purges and records;
// offline undoes exactly what online did; an address another vif owns is never taken away.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverState, planBatch, validateVifEvent, type PlanContext, type ProviderConfig, type VifFacts, type Plan } from '@qubes-net/driver-agent';

const provider: ProviderConfig = { gateway: '10.137.0.2', gateway6: 'fd09:24ef:4179::a89:2', virtualDns: ['10.139.1.1', '10.139.1.2'], connected4: [], connected6: [], firewallService: false, hardenInterfaces: false, behindQubesProvider: false };
const exists: VifFacts = { exists: true, ipv6: true };
let gen = 1;
const ctx = (over: Partial<PlanContext> = {}): PlanContext => ({ provider, facts: () => exists, generation: gen++, flowtable: false, ...over });
const online = (vif: string, ips: string[], mac = '00:16:3e:5e:6c:00') => validateVifEvent({ op: 'online', vif, ips, mac });
const offline = (vif: string) => validateVifEvent({ op: 'offline', vif });
const lines = (p: Plan) => p.ip.map((l) => l.line);

test('online: elements, neighbour, route with metric 32752-domid, gateway addresses, proxy_arp/ndp', () => {
  const p = planBatch(new DriverState(), [online('vif12.0', ['10.137.0.7', 'fd09:24ef:4179::a89:7'])], ctx());
  assert.deepEqual(p.nft, [
    'add element ip qubes allowed { "vif12.0" . 10.137.0.7 }',
    'add element ip6 qubes allowed { "vif12.0" . fd09:24ef:4179::a89:7 }',
    'add element ip qubes downstream { 10.137.0.7 }',
    'add element ip6 qubes downstream { fd09:24ef:4179::a89:7 }',
  ]);
  assert.deepEqual(lines(p), [
    'link set dev vif12.0 group 2 up',
    'address replace 10.137.0.2/32 dev vif12.0',
    'address replace fd09:24ef:4179::a89:2/128 dev vif12.0 nodad',
    'neigh replace 10.137.0.7 dev vif12.0 lladdr 00:16:3e:5e:6c:00 nud permanent',
    'neigh replace fd09:24ef:4179::a89:7 dev vif12.0 lladdr 00:16:3e:5e:6c:00 nud permanent',
    'route replace 10.137.0.7 dev vif12.0 metric 32740',
    'route replace fd09:24ef:4179::a89:7 dev vif12.0 metric 32740',
  ]);
  assert.deepEqual(p.sysctls.map((s) => `${s.path}=${s.value}`), ['net/ipv4/conf/vif12.0/proxy_arp=1', 'net/ipv6/conf/vif12.0/proxy_ndp=1']);
  assert.deepEqual(p.purge, ['10.137.0.7', 'fd09:24ef:4179::a89:7']);
  assert.equal(p.results[0]!.ok, true);
  assert.equal(p.records.get('vif12.0')!.state, 'online');
  assert.deepEqual(p.hooks, [{ command: 'online', vif: 'vif12.0', type: 'vif', addrs: ['10.137.0.7', 'fd09:24ef:4179::a89:7'] }]);
});

test('a burst of many vifs is one transaction and one batch', () => {
  const events = Array.from({ length: 50 }, (_, i) => online(`vif${i + 10}.0`, [`10.137.0.${i + 10}`]));
  const p = planBatch(new DriverState(), events, ctx());
  assert.equal(p.nft.length, 2, 'one add per set');
  assert.equal(p.nft[0]!.split(',').length, 50);
  assert.equal(p.results.filter((r) => r.ok).length, 50);
  assert.equal(p.ip.length, 50 * 5, 'link, two gateway addresses, neighbour, route');
});

test('offline undoes exactly what online did (and a second offline changes nothing)', () => {
  const s0 = new DriverState();
  const on = planBatch(s0, [online('vif12.0', ['10.137.0.7', 'fd09::7'])], ctx());
  const off = planBatch(on.next, [offline('vif12.0')], ctx());
  assert.deepEqual(off.nft, [
    'add element ip qubes allowed { "vif12.0" . 10.137.0.7 }', 'delete element ip qubes allowed { "vif12.0" . 10.137.0.7 }',
    'add element ip6 qubes allowed { "vif12.0" . fd09::7 }', 'delete element ip6 qubes allowed { "vif12.0" . fd09::7 }',
    'add element ip qubes downstream { 10.137.0.7 }', 'delete element ip qubes downstream { 10.137.0.7 }',
    'add element ip6 qubes downstream { fd09::7 }', 'delete element ip6 qubes downstream { fd09::7 }',
  ]);
  // Routes and neighbours before the addresses (removing the last IPv4 address flushes them).
  assert.deepEqual(lines(off), [
    'route del 10.137.0.7 dev vif12.0 metric 32740', 'route del fd09::7 dev vif12.0 metric 32740',
    'neigh del 10.137.0.7 dev vif12.0', 'neigh del fd09::7 dev vif12.0',
    'address del 10.137.0.2/32 dev vif12.0', 'address del fd09:24ef:4179::a89:2/128 dev vif12.0',
    'link set dev vif12.0 down group default',
  ]);
  assert.ok(off.ip.every((l) => l.tolerant));
  assert.deepEqual(off.sysctls.map((s) => `${s.path}=${s.value}`), ['net/ipv4/conf/vif12.0/proxy_arp=0', 'net/ipv6/conf/vif12.0/proxy_ndp=0']);
  assert.equal(off.records.get('vif12.0')!.state, 'offline');
  assert.equal(off.next.owners.size, 0);
  const again = planBatch(off.next, [offline('vif12.0')], ctx());
  assert.deepEqual(again.nft, []);
  assert.deepEqual(again.ip, []);
});

test('offline of a vif that is already gone: no ip lines, entries forgotten', () => {
  const on = planBatch(new DriverState(), [online('vif12.0', ['10.137.0.7'])], ctx());
  const off = planBatch(on.next, [offline('vif12.0')], ctx({ facts: () => ({ exists: false, ipv6: false }) }));
  assert.deepEqual(off.ip, []);
  assert.equal(off.nft.length, 4);
  assert.ok(off.records.has('vif12.0'));
  assert.equal(off.records.get('vif12.0'), undefined);
  assert.equal(off.results[0]!.state, 'gone');
  assert.equal(off.next.vifs.size, 0);
});

test('IP reuse: the old vif going offline never removes what the new owner needs', () => {
  const a = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7'])], ctx());
  const b = planBatch(a.next, [online('vif9.0', ['10.137.0.7'])], ctx());
  assert.deepEqual(b.nft, ['add element ip qubes allowed { "vif9.0" . 10.137.0.7 }'], 'downstream already holds it');
  assert.deepEqual(b.purge, [], 'the old owner is still online: its connections are not purged');
  const c = planBatch(b.next, [offline('vif5.0')], ctx());
  assert.deepEqual(c.nft, ['add element ip qubes allowed { "vif5.0" . 10.137.0.7 }', 'delete element ip qubes allowed { "vif5.0" . 10.137.0.7 }']);
  assert.deepEqual(c.purge, []);
  assert.ok(lines(c).every((l) => l.includes('vif5.0')), 'only the old vif\'s routes and neighbours go');
  assert.deepEqual([...c.next.owners.get('10.137.0.7')!], ['vif9.0']);
});

test('re-online with other addresses: the old ones are removed, the new ones added', () => {
  const a = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7'])], ctx());
  const b = planBatch(a.next, [online('vif5.0', ['10.137.0.8'])], ctx());
  assert.ok(b.nft.includes('delete element ip qubes allowed { "vif5.0" . 10.137.0.7 }'));
  assert.ok(b.nft.includes('add element ip qubes allowed { "vif5.0" . 10.137.0.8 }'));
  assert.ok(lines(b).includes('route del 10.137.0.7 dev vif5.0 metric 32747'));
  assert.ok(lines(b).includes('neigh del 10.137.0.7 dev vif5.0'));
  assert.deepEqual(b.purge.sort(), ['10.137.0.7', '10.137.0.8']);
});

test('bad input for an online vif: error record, its old configuration removed, others unaffected', () => {
  const a = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7']), online('vif6.0', ['10.137.0.8'])], ctx());
  const b = planBatch(a.next, [online('vif5.0', ['10.137.0.300'])], ctx());
  assert.equal(b.results[0]!.ok, false);
  assert.equal(b.results[0]!.inputError?.source, 'xenstore');
  assert.equal(b.records.get('vif5.0')!.state, 'error');
  assert.ok(b.nft.includes('delete element ip qubes allowed { "vif5.0" . 10.137.0.7 }'));
  assert.ok(b.ip.every((l) => l.vif === 'vif5.0'));
  assert.equal(b.next.vifs.get('vif6.0')!.state, 'online');
});

test('a malformed vif name fails alone without a record', () => {
  const p = planBatch(new DriverState(), [validateVifEvent({ op: 'online', vif: 'vif99999.0', ips: ['10.137.0.9'], mac: '00:16:3e:5e:6c:00' }), online('vif6.0', ['10.137.0.8'])], ctx());
  assert.equal(p.results[0]!.ok, false);
  assert.equal(p.results[0]!.vif, undefined);
  assert.equal(p.results[1]!.ok, true);
  assert.equal(p.records.size, 1);
});

test('client address equal to the gateway or a virtual DNS address is refused', () => {
  const p = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.2'])], ctx());
  assert.equal(p.results[0]!.ok, false);
  assert.match(p.results[0]!.error!, /gateway/);
  assert.deepEqual(p.nft, []);
});

test('no valid gateway: vifs are refused (left blocked)', () => {
  const p = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7'])], ctx({ provider: { ...provider, gateway: undefined } as ProviderConfig }));
  assert.equal(p.results[0]!.ok, false);
  assert.match(p.results[0]!.error!, /qubes-netvm-gateway/);
});

test('missing interface: refused, nothing configured', () => {
  const p = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7'])], ctx({ facts: () => ({ exists: false, ipv6: false }) }));
  assert.equal(p.results[0]!.ok, false);
  assert.deepEqual(p.nft, []);
  assert.deepEqual(p.ip, []);
});

test('IPv6 disabled on the vif: IPv4 configured, IPv6 only filtered (no route, no ndp)', () => {
  const p = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7', 'fd09::7'])], ctx({ facts: () => ({ exists: true, ipv6: false }) }));
  assert.equal(p.results[0]!.ok, true);
  assert.ok(!lines(p).some((l) => l.includes('fd09')));
  assert.ok(p.nft.some((s) => s.includes('ip6 qubes allowed')), 'IPv6 from it is still checked against its own address');
  assert.ok(!p.sysctls.some((s) => s.path.includes('ipv6')));
  assert.match(p.records.get('vif5.0')!.detail, /IPv6 is off/);
});

test('without gateway6 no IPv6 gateway address and no proxy_ndp', () => {
  const p = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7'])], ctx({ provider: { ...provider, gateway6: undefined } as ProviderConfig }));
  assert.ok(!lines(p).some((l) => l.includes('/128')));
  assert.ok(!p.sysctls.some((s) => s.path.endsWith('proxy_ndp')));
});

test('flowtable devices change incrementally with vifs', () => {
  const a = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7'])], ctx({ flowtable: true }));
  assert.ok(a.nft.includes('add flowtable inet qubes-nat-accel qubes-accel { hook ingress priority filter; devices = { "vif5.0" }; }'));
  const b = planBatch(a.next, [offline('vif5.0')], ctx({ flowtable: true }));
  assert.ok(b.nft.includes('delete flowtable inet qubes-nat-accel qubes-accel { devices = { "vif5.0" }; }'));
  const gone = planBatch(a.next, [offline('vif5.0')], ctx({ flowtable: true, facts: () => ({ exists: false, ipv6: false }) }));
  assert.ok(!gone.nft.some((s) => s.includes('flowtable')), 'a vanished device is not named');
});

test('hardening sysctls when the service is on', () => {
  const p = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7'])], ctx({ provider: { ...provider, hardenInterfaces: true } }));
  assert.ok(p.sysctls.some((s) => s.path === 'net/ipv4/conf/vif5.0/send_redirects' && s.value === '0'));
  // The kernel ORs conf/all with the interface's value (send/secure redirects): all is set too.
  for (const k of ['send_redirects', 'secure_redirects', 'accept_redirects', 'accept_source_route']) {
    assert.ok(p.sysctls.some((s) => s.path === `net/ipv4/conf/all/${k}` && s.value === '0'), k);
  }
  // Off: neither the vif's nor conf/all is touched.
  const off = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7'])], ctx({ provider }));
  assert.ok(!off.sysctls.some((s) => /send_redirects|\/all\//.test(s.path)));
  assert.ok(p.sysctls.some((s) => s.path === 'net/ipv6/conf/vif5.0/accept_ra' && s.value === '0'));
});

test('planning never changes the state it starts from', () => {
  const a = planBatch(new DriverState(), [online('vif5.0', ['10.137.0.7']), online('vif6.0', ['10.137.0.8'])], ctx());
  const snapshot = JSON.stringify({ vifs: [...a.next.vifs.keys()], owners: [...a.next.owners].map(([k, v]) => [k, [...v]]) });
  const b1 = planBatch(a.next, [offline('vif5.0'), online('vif7.0', ['10.137.0.8'])], ctx());
  const b2 = planBatch(a.next, [offline('vif5.0'), online('vif7.0', ['10.137.0.8'])], ctx());
  assert.deepEqual(b1.nft, b2.nft);
  assert.equal(JSON.stringify({ vifs: [...a.next.vifs.keys()], owners: [...a.next.owners].map(([k, v]) => [k, [...v]]) }), snapshot);
  assert.deepEqual([...b1.next.owners.get('10.137.0.8')!].sort(), ['vif6.0', 'vif7.0']);
  assert.deepEqual([...a.next.owners.get('10.137.0.8')!], ['vif6.0']);
});

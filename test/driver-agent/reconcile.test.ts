// Full reconciliation and the restart inputs (pure): desired state vs an observed kernel,
// stored QubesDB entries read back and validated, provider settings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverState, planBatch, validateVifEvent, reconcile, parseStoredVifs, recordEntries, parseProviderConfig, PROVIDER_KEYS, type ObservedKernel, type ProviderConfig } from '@qubes-net/driver-agent';

const provider: ProviderConfig = { gateway: '10.137.0.2', virtualDns: ['10.139.1.1'], connected4: [], connected6: [], firewallService: false, hardenInterfaces: false, behindQubesProvider: false };
const ctx = { provider, facts: () => ({ exists: true, ipv6: true }), generation: 1, flowtable: false };

function desired(): DriverState {
  return planBatch(new DriverState(), [validateVifEvent({ op: 'online', vif: 'vif5.0', ips: ['10.137.0.7'], mac: '00:16:3e:5e:6c:00' })], ctx).next;
}

function observed(over: Partial<ObservedKernel> = {}): ObservedKernel {
  const sysctls: Record<string, string> = { 'net/ipv4/conf/vif5.0/proxy_arp': '1' };
  return {
    vifLinks: new Map([['vif5.0', { group: '2', up: true }]]),
    allowed: { ip: new Set(['vif5.0 10.137.0.7']), ip6: new Set() },
    downstream: { ip: new Set(['10.137.0.7']), ip6: new Set() },
    routes: new Map([['vif5.0', new Set(['10.137.0.7 32747'])]]),
    addrs: new Map([['vif5.0', new Set(['10.137.0.2/32'])]]),
    neigh: new Map([['vif5.0', new Map([['10.137.0.7', '00:16:3e:5e:6c:00']])]]),
    sysctl: (p) => sysctls[p],
    ...over,
  };
}

test('a kernel that matches needs no correction', () => {
  const c = reconcile(desired(), observed());
  assert.deepEqual(c.differences, []);
  assert.deepEqual(c.nft, []);
  assert.deepEqual(c.ip, []);
});

test('missing pieces are re-added, nothing that is wanted is removed', () => {
  const c = reconcile(desired(), observed({ allowed: { ip: new Set(), ip6: new Set() }, routes: new Map() }));
  assert.ok(c.differences.some((d) => d.includes('element vif5.0 10.137.0.7 missing')));
  assert.ok(c.differences.some((d) => d.includes('route 10.137.0.7 metric 32747 missing')));
  assert.deepEqual(c.nft, ['add element ip qubes allowed { "vif5.0" . 10.137.0.7 }']);
  assert.ok(c.ip.some((l) => l.line === 'route replace 10.137.0.7 dev vif5.0 metric 32747'));
  assert.ok(!c.ip.some((l) => l.line.includes(' del ')));
});

test('leftovers of vifs that are not online are removed', () => {
  const obs = observed({
    vifLinks: new Map([['vif5.0', { group: '2', up: true }], ['vif3.0', { group: '2', up: true }]]),
    allowed: { ip: new Set(['vif5.0 10.137.0.7', 'vif3.0 10.137.0.9', 'vif1.0 10.137.0.4']), ip6: new Set() },
    downstream: { ip: new Set(['10.137.0.7', '10.137.0.9', '10.137.0.4']), ip6: new Set() },
    routes: new Map([['vif5.0', new Set(['10.137.0.7 32747'])], ['vif3.0', new Set(['10.137.0.9 32749'])]]),
  });
  const c = reconcile(desired(), obs);
  assert.ok(c.nft.includes('delete element ip qubes allowed { "vif3.0" . 10.137.0.9, "vif1.0" . 10.137.0.4 }'));
  assert.ok(c.nft.includes('delete element ip qubes downstream { 10.137.0.9, 10.137.0.4 }'));
  assert.ok(c.ip.some((l) => l.line === 'route del 10.137.0.9 dev vif3.0 metric 32749'));
  assert.ok(c.ip.some((l) => l.line === 'link set dev vif3.0 group default'));
  assert.ok(!c.nft.some((s) => s.startsWith('delete') && s.includes('10.137.0.7')), 'never the online vif\'s');
});

test('an IP reused by an online vif survives the old vif\'s leftovers', () => {
  const obs = observed({
    vifLinks: new Map([['vif5.0', { group: '2', up: true }], ['vif3.0', { group: 'default', up: false }]]),
    allowed: { ip: new Set(['vif5.0 10.137.0.7', 'vif3.0 10.137.0.7']), ip6: new Set() },
    routes: new Map([['vif5.0', new Set(['10.137.0.7 32747'])], ['vif3.0', new Set(['10.137.0.7 32749'])]]),
  });
  const c = reconcile(desired(), obs);
  assert.ok(c.nft.includes('delete element ip qubes allowed { "vif3.0" . 10.137.0.7 }'));
  assert.ok(!c.nft.some((s) => s.includes('downstream')), 'the address stays in downstream');
  assert.ok(c.ip.some((l) => l.line === 'route del 10.137.0.7 dev vif3.0 metric 32749'));
});

test('stored entries round-trip; invalid ones are reported and left out', () => {
  const d = desired();
  const entries = new Map(recordEntries(d.vifs.get('vif5.0')!));
  entries.set('/qubes-vif/vif6.0/state', 'online');
  entries.set('/qubes-vif/vif6.0/domid', '6');
  entries.set('/qubes-vif/vif6.0/ip', '10.137.0.999');
  entries.set('/qubes-vif/vif6.0/mac', '00:16:3e:5e:6c:00');
  entries.set('/qubes-vif/vif7.0/state', 'bogus');
  entries.set('/qubes-vif/vif8.0/state', 'online');
  entries.set('/qubes-vif/vif8.0/domid', '9');
  entries.set('/qubes-vif/eth0/state', 'online');
  entries.set('/qubes-vif/vif9.0/generation', '41');
  const r = parseStoredVifs(entries);
  assert.deepEqual([...r.vifs.keys()], ['vif5.0']);
  assert.deepEqual(r.vifs.get('vif5.0')!.spec.ipv4, ['10.137.0.7']);
  assert.equal(r.vifs.get('vif5.0')!.state, 'online');
  assert.equal(r.errors.length, 5);
  assert.ok(r.errors.every((e) => e.source === 'qubesdb'));
  assert.ok(r.errors.some((e) => e.key === '/qubes-vif/vif6.0/ip'));
  assert.equal(r.maxGeneration, 41);
});

test('record entries: state is written last; error records carry no addresses', () => {
  const d = desired();
  const e = recordEntries(d.vifs.get('vif5.0')!);
  assert.equal(e[e.length - 1]![0], '/qubes-vif/vif5.0/state');
  assert.deepEqual(Object.fromEntries(e), { '/qubes-vif/vif5.0/ip': '10.137.0.7', '/qubes-vif/vif5.0/mac': '00:16:3e:5e:6c:00', '/qubes-vif/vif5.0/domid': '5', '/qubes-vif/vif5.0/detail': 'online', '/qubes-vif/vif5.0/generation': '1', '/qubes-vif/vif5.0/state': 'online' });
  const err = recordEntries({ ...d.vifs.get('vif5.0')!, state: 'error', detail: 'x'.repeat(1000) });
  assert.equal(Object.fromEntries(err)['/qubes-vif/vif5.0/ip'], '');
  assert.ok(Object.fromEntries(err)['/qubes-vif/vif5.0/detail']!.length < 410);
});

test('provider settings: valid values used, each bad one reported and left out', () => {
  const raw = new Map<string, string | undefined>([
    [PROVIDER_KEYS.gateway, '10.137.0.2'],
    [PROVIDER_KEYS.gateway6, 'fd09:24ef:4179:0000::a89:2'],
    [PROVIDER_KEYS.primaryDns, '10.139.1.1'],
    [PROVIDER_KEYS.secondaryDns, '10.139.1.999'],
    [PROVIDER_KEYS.connected4, '10.137.0.7 bogus 10.137.0.8'],
    [PROVIDER_KEYS.connected6, ''],
    [PROVIDER_KEYS.firewall, '1'],
    [PROVIDER_KEYS.harden, '0'],
  ]);
  const { config, errors } = parseProviderConfig(raw);
  assert.equal(config.gateway, '10.137.0.2');
  assert.equal(config.gateway6, 'fd09:24ef:4179::a89:2');
  assert.deepEqual(config.virtualDns, ['10.139.1.1']);
  assert.deepEqual(config.connected4, ['10.137.0.7', '10.137.0.8']);
  assert.equal(config.firewallService, true);
  assert.equal(config.hardenInterfaces, false, '"0" means off (upstream treated it as on)');
  assert.deepEqual(errors.map((e) => e.key).sort(), [PROVIDER_KEYS.connected4, PROVIDER_KEYS.secondaryDns]);
});

test('provider settings: a malformed gateway is an error naming the key and value', () => {
  const { config, errors } = parseProviderConfig(new Map([[PROVIDER_KEYS.gateway, '10.137.0.2; reboot']]));
  assert.equal(config.gateway, undefined);
  assert.equal(errors[0]!.key, '/qubes-netvm-gateway');
  assert.equal(errors[0]!.value, '10.137.0.2; reboot');
  const missing = parseProviderConfig(new Map());
  assert.match(missing.errors[0]!.reason, /missing/);
});

test('an address no vif holds any more loses its downstream element and its flows are to be purged', () => {
  const c = reconcile(desired(), observed({ downstream: { ip: new Set(['10.137.0.7', '10.137.0.9']), ip6: new Set() } }));
  assert.ok(c.differences.includes('ip downstream: extra element 10.137.0.9'));
  assert.deepEqual(c.purge, ['10.137.0.9']);
  assert.deepEqual(reconcile(desired(), observed()).purge, []);
});

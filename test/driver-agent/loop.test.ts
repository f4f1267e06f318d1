// The driver loop and its managers without root: the typed transactions go to the in-memory
// FakeKernel, the host (links, xenstore, sysctls) is a stand-in. What is checked: the start
// rebuilds vifs from Xen's entries (never from /qubes-vif/ records), one transaction per
// turn, nothing committed when the kernel refuses, the refused burst retried event by event,
// needFullSync honoured on the next turn, the reply shape, and the idle signal.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeKernel, type NftTransaction } from '@qubes-net/common/kernel';
import type { QubesDB, QubesDBWatch } from '@qubes-net/qubesdb';
import { DriverLoop, parseTable, type HostAccess, type XenVif, type KernelWriter, type ObservedKernel, type Observation, type ObservedTables } from '@qubes-net/driver-agent';

const silent = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {}, child() { return silent; } } as any;

class MemQubesDB implements QubesDB {
  readonly data = new Map<string, string>();
  async read(p: string) { return this.data.get(p); }
  async write(p: string, v: string) { this.data.set(p, v); }
  async rm(p: string) { for (const k of [...this.data.keys()]) if (p.endsWith('/') ? k.startsWith(p) : k === p) this.data.delete(k); }
  async list(prefix: string) { return [...this.data.keys()].filter((k) => k.startsWith(prefix)).sort(); }
  async multiread(prefix: string) { return new Map([...this.data].filter(([k]) => k.startsWith(prefix)).sort()); }
  watch(): QubesDBWatch {
    let stop: () => void = () => undefined;
    const done = new Promise<void>((r) => (stop = r));
    return { async close() { stop(); }, async *[Symbol.asyncIterator]() { await done; } };
  }
  async close() {}
}

interface Rig {
  loop: DriverLoop;
  fk: FakeKernel;
  qdb: MemQubesDB;
  links: Set<string>;
  xen: XenVif[];
  refuse: { next: number; when?: (text: string) => boolean };
  /** ip lines containing this text fail. */
  ipFails?: string;
  /** `allowed` elements the kernel shows at start (configured by someone before us). */
  preAllowed?: string[];
  transactions: number;
  observed: number;
  ip: string[];
  sysctl: Map<string, string>;
  idle: number;
}

const tempDirs: string[] = [];
after(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

function rig(): Rig {
  const fk = new FakeKernel();
  const qdb = new MemQubesDB();
  for (const [k, v] of Object.entries({ '/qubes-netvm-gateway': '10.137.0.2', '/qubes-netvm-network': '10.137.0.2', '/qubes-netvm-netmask': '255.255.255.255', '/qubes-netvm-primary-dns': '10.139.1.1', '/qubes-netvm-secondary-dns': '10.139.1.2', '/qubes-service/qubes-firewall': '0' })) qdb.data.set(k, v);
  const dir = mkdtempSync(join(tmpdir(), 'qn-drv-loop-'));
  tempDirs.push(dir);
  writeFileSync(join(dir, 'resolv.conf'), 'nameserver 198.51.100.53\n');
  const r: Rig = { fk, qdb, links: new Set(), xen: [], refuse: { next: 0 }, transactions: 0, observed: 0, ip: [], sysctl: new Map(), idle: 0, loop: undefined as unknown as DriverLoop };
  const writer: KernelWriter = {
    async nft(tx: NftTransaction) {
      if (tx.isEmpty) return;
      r.transactions++;
      if (r.refuse.next > 0 || r.refuse.when?.(tx.render())) {
        if (r.refuse.next > 0) r.refuse.next--;
        throw new Error('nft rejected: injected');
      }
      const res = fk.applySync(tx);
      if (!res.ok) throw new Error(`nft ${res.code}: ${res.error}`);
    },
    async ip(lines) {
      r.ip.push(...lines.map((l) => l.line));
      return lines.filter((l) => r.ipFails && l.line.includes(r.ipFails)).map((l) => ({ ...l, message: 'RTNETLINK answers: injected' }));
    },
  };
  const host: HostAccess = {
    async observe(): Promise<Observation> {
      r.observed++;
      const kernel: ObservedKernel = { vifLinks: new Map([...r.links].map((l) => [l, { group: '2', up: true }])), allowed: { ip: new Set(), ip6: new Set() }, downstream: { ip: new Set(), ip6: new Set() }, routes: new Map(), addrs: new Map(), neigh: new Map(), sysctl: (p) => r.sysctl.get(p) };
      const tables: ObservedTables = { chains: { ip: undefined, ip6: undefined }, dnatDns: undefined, antispoofDrops: { ip: 0, ip6: 0 }, firewallSkeleton: false };
      parseTable(await fk.list(['table', 'ip', 'qubes']), 'ip', kernel, tables);
      for (const e of r.preAllowed ?? []) kernel.allowed.ip.add(e);
      return { kernel, tables, ownAddresses: new Set(['192.0.2.10']) };
    },
    async ownAddresses() { return new Set(['192.0.2.10']); },
    async readXenVifs() { return r.xen; },
    facts: (vif) => ({ exists: r.links.has(vif), ipv6: false }),
    readSysctl: (p) => r.sysctl.get(p),
    writeSysctl: (s) => void r.sysctl.set(s.path, s.value),
    ipv6: () => false,
  };
  r.loop = new DriverLoop({ qdb, log: silent, resolvConf: join(dir, 'resolv.conf'), resolved: 'off', hooksDir: join(dir, 'hooks'), firewall: 'off', firewallPidFile: join(dir, 'fw.pid'), writer, host, reconcileIntervalMs: 0, onIdle: () => r.idle++ });
  return r;
}

/** Until the loop has nothing queued (turns run on setImmediate). */
async function settle(loop: DriverLoop): Promise<void> {
  for (let i = 0; i < 200 && loop.hasWork(); i++) await new Promise((res) => setTimeout(res, 5));
}

const xenVif = (domid: number, ip: string, hotplugStatus = 'connected'): XenVif => ({ vif: `vif${domid}.0`, path: `/local/domain/1/backend/vif/${domid}/0`, ip, mac: '00:16:3e:5e:6c:00', type: 'vif', hotplugStatus });
const allowed = (r: Rig) => r.fk.elements({ family: 'ip', name: 'qubes' }, 'allowed') ?? [];

test('start: the vif set comes from Xen and the kernel; a /qubes-vif/ record cannot widen it', async () => {
  const r = rig();
  r.links.add('vif5.0').add('vif6.0').add('vif7.0');
  r.xen = [xenVif(5, '10.137.0.5'), xenVif(6, '10.137.0.6', ''), xenVif(8, '10.137.0.8')];
  // A process in the qube rewrote vif5.0's feedback to claim another address, and invented vif7.0.
  for (const [k, v] of Object.entries({ '/qubes-vif/vif5.0/ip': '10.137.0.99', '/qubes-vif/vif5.0/domid': '5', '/qubes-vif/vif5.0/state': 'online', '/qubes-vif/vif7.0/ip': '10.137.0.7', '/qubes-vif/vif7.0/domid': '7', '/qubes-vif/vif7.0/state': 'online' })) r.qdb.data.set(k, v);
  await r.loop.start();
  assert.deepEqual(allowed(r), ['"vif5.0" . 10.137.0.5'], 'only what Xen connected, with Xen\'s address');
  assert.equal(r.transactions, 1, 'the start is one transaction');
  assert.equal(r.qdb.data.get('/qubes-vif/vif5.0/ip'), '10.137.0.5', 'feedback rewritten from the real state');
  assert.equal(r.qdb.data.get('/qubes-vif/vif7.0/ip'), undefined, 'the invented record is removed');
  assert.equal(r.sysctl.get('net/ipv4/ip_forward'), '1');
  assert.equal(r.qdb.data.get('/qubes-dns-upstream'), '198.51.100.53');
  await r.loop.stop();
});

test('online and offline: one transaction each, the shared reply shape', async () => {
  const r = rig();
  await r.loop.start();
  r.links.add('vif9.0');
  const on = await r.loop.handle({ op: 'online', vif: 'vif9.0', ips: '10.137.0.9', mac: '00:16:3e:5e:6c:00', type: 'vif' });
  assert.deepEqual({ ok: on.ok, code: on.code }, { ok: true, code: 'ok' });
  assert.equal(on.details.state, 'online');
  assert.deepEqual(allowed(r), ['"vif9.0" . 10.137.0.9']);
  assert.ok(r.ip.includes('route replace 10.137.0.9 dev vif9.0 metric 32743'));
  const bad = await r.loop.handle({ op: 'online', vif: 'vif10.0', ips: '10.137.0.10; reboot', mac: '00:16:3e:5e:6c:00' });
  assert.equal(bad.ok, false);
  assert.equal(bad.code, 'invalid-input');
  assert.equal(bad.error, bad.message, 'the C client reads "error"');
  const off = await r.loop.handle({ op: 'offline', vif: 'vif9.0' });
  assert.equal(off.ok, true);
  assert.deepEqual(allowed(r), []);
  await r.loop.stop();
});

test('a refused transaction commits nothing, sets needFullSync, and the burst is retried event by event', async () => {
  const r = rig();
  await r.loop.start();
  r.links.add('vif11.0').add('vif12.0');
  const observedBefore = r.observed;
  // vif12.0's elements are refused whenever they are in the transaction; vif11.0 must not suffer.
  r.refuse.when = (text) => text.includes('10.137.0.12');
  const [a, b] = await Promise.all([
    r.loop.handle({ op: 'online', vif: 'vif11.0', ips: '10.137.0.11', mac: '00:16:3e:5e:6c:00' }),
    r.loop.handle({ op: 'online', vif: 'vif12.0', ips: '10.137.0.12', mac: '00:16:3e:5e:6c:00' }),
  ]);
  assert.equal(a.ok, true, 'the neighbour of a refused vif still comes online');
  assert.equal(b.ok, false);
  assert.equal(b.code, 'kernel-refused');
  assert.deepEqual(allowed(r), ['"vif11.0" . 10.137.0.11']);
  await settle(r.loop);
  assert.ok(r.observed > observedBefore, 'a full turn (reading the kernel) followed the refusal');
  const st = await r.loop.status();
  assert.equal(st.vifs.find((v) => v.vif === 'vif12.0')?.state, 'error');
  assert.equal(st.vifs.find((v) => v.vif === 'vif11.0')?.state, 'online');
  await r.loop.stop();
});

test('the full turn puts back what was lost behind our back (needFullSync via reconcile)', async () => {
  const r = rig();
  r.links.add('vif5.0');
  r.xen = [xenVif(5, '10.137.0.5')];
  await r.loop.start();
  // Someone flushes the set by hand.
  r.fk.applySync(new (await import('@qubes-net/common/kernel')).NftTransaction().flushSet({ family: 'ip', name: 'qubes' }, 'allowed'));
  assert.deepEqual(allowed(r), []);
  const rep = await r.loop.handle({ op: 'reconcile' });
  assert.ok((rep.details.differences as string[]).some((d) => d.includes('allowed: element vif5.0 10.137.0.5 missing')));
  assert.deepEqual(allowed(r), ['"vif5.0" . 10.137.0.5']);
  await r.loop.stop();
});

test('idle signal: no work left after a burst, onIdle called', async () => {
  const r = rig();
  await r.loop.start();
  r.links.add('vif13.0');
  await r.loop.handle({ op: 'online', vif: 'vif13.0', ips: '10.137.0.13', mac: '00:16:3e:5e:6c:00' });
  await settle(r.loop);
  assert.equal(r.loop.hasWork(), false);
  assert.ok(r.idle > 0);
  await r.loop.stop();
});

test('xenstore-ls -f output: the vif backends below our own domain, other keys ignored', async () => {
  const { parseXenstoreLs } = await import('@qubes-net/driver-agent');
  const base = '/local/domain/1/backend/vif';
  const text = [
    `${base}/5/0/ip = "10.137.0.5 fd09:24ef:4179::a89:5"`,
    `${base}/5/0/mac = "00:16:3e:5e:6c:00"`,
    `${base}/5/0/type = "vif"`,
    `${base}/5/0/hotplug-status = "connected"`,
    `${base}/5/0/frontend = "/local/domain/5/device/vif/0"`,
    `${base}/7/1/ip = "10.137.0.7\\"; reboot"`,
    `/local/domain/2/backend/vif/9/0/ip = "10.137.0.9"`,
  ].join('\n');
  const vifs = parseXenstoreLs(text, base);
  assert.deepEqual(vifs.map((v) => [v.vif, v.ip, v.hotplugStatus]), [['vif5.0', '10.137.0.5 fd09:24ef:4179::a89:5', 'connected'], ['vif7.1', '10.137.0.7\\"; reboot', '']]);
});

test('a host running the firewall in process is told of DNS changes by a call', async () => {
  const r = rig();
  const told: string[][] = [];
  const loop = new DriverLoop({ ...(r.loop as any).opts, onDnsChanged: (d: { mapping: { upstream: string[] } }) => told.push(d.mapping.upstream) });
  await loop.start();
  writeFileSync((r.loop as any).opts.resolvConf, 'nameserver 198.51.100.54\n');
  await loop.handle({ op: 'sync', reason: 'test' });
  assert.deepEqual(told, [['198.51.100.54']], 'the change after the start, once');
  await loop.stop();
  await r.loop.stop();
});

test('a vif whose ip lines the kernel refuses is rolled back and reported failed; others unaffected', async () => {
  const r = rig();
  await r.loop.start();
  r.links.add('vif14.0').add('vif15.0');
  r.ipFails = 'route replace 10.137.0.15 ';
  const [a, b] = await Promise.all([
    r.loop.handle({ op: 'online', vif: 'vif14.0', ips: '10.137.0.14', mac: '00:16:3e:5e:6c:00' }),
    r.loop.handle({ op: 'online', vif: 'vif15.0', ips: '10.137.0.15', mac: '00:16:3e:5e:6c:00' }),
  ]);
  assert.equal(a.ok, true);
  assert.equal(b.ok, false);
  assert.match(b.message, /route replace 10\.137\.0\.15 .*injected/);
  assert.deepEqual(allowed(r), ['"vif14.0" . 10.137.0.14'], 'the refused vif has no anti-spoofing element: blocked');
  assert.ok(r.ip.includes('link set dev vif15.0 down group default'), 'its ip configuration taken back');
  await r.loop.stop();
});

test('start while a one-shot online is in flight: a vif Xen has not marked connected, but the kernel holds Xen\'s address for, is kept', async () => {
  const r = rig();
  r.links.add('vif16.0').add('vif17.0');
  r.xen = [xenVif(16, '10.137.0.16', ''), xenVif(17, '10.137.0.17', '')];
  r.preAllowed = ['vif16.0 10.137.0.16', 'vif17.0 10.137.0.99'];
  await r.loop.start();
  r.preAllowed = [];
  const st = await r.loop.status();
  assert.equal(st.vifs.find((v) => v.vif === 'vif16.0')?.state, 'online', 'kept');
  assert.equal(st.vifs.find((v) => v.vif === 'vif17.0'), undefined, 'the kernel holding another address than Xen\'s gives nothing');
  assert.ok(st.kernel.differences.includes('ip allowed: element vif16.0 10.137.0.16 missing'), 'and its element is wanted');
  await r.loop.stop();
});

test('full turns that keep failing back off, while vif events still go through', async () => {
  const r = rig();
  await r.loop.start();
  r.links.add('vif18.0');
  // Every transaction that flushes the base chains (a full turn's) is refused from now on.
  r.refuse.when = (text) => text.includes('flush chain ip qubes dnat-dns');
  const before = r.transactions;
  await r.loop.handle({ op: 'reconcile' });
  await new Promise((res) => setTimeout(res, 400));
  assert.equal(r.transactions - before, 2, 'the request\'s full turn, one retry at once, then a back-off (1 s)');
  const on = await r.loop.handle({ op: 'online', vif: 'vif18.0', ips: '10.137.0.18', mac: '00:16:3e:5e:6c:00' });
  assert.equal(on.ok, true, 'a vif still comes online during the back-off');
  assert.deepEqual(allowed(r), ['"vif18.0" . 10.137.0.18']);
  await r.loop.stop();
});

test('deferLinkMonitor: followLinks() starts the monitor and takes offline a vif that went while it was not running', async () => {
  const r = rig();
  await r.loop.start({ follow: true, deferLinkMonitor: true });
  r.links.add('vif9.0');
  const on = await r.loop.handle({ op: 'online', vif: 'vif9.0', ips: '10.137.0.9', mac: '00:16:3e:5e:6c:00', type: 'vif' });
  assert.equal(on.ok, true);
  assert.deepEqual(allowed(r), ['"vif9.0" . 10.137.0.9']);
  // Gone from the kernel without an offline event, before the link monitor ran.
  r.links.delete('vif9.0');
  r.loop.followLinks();
  await new Promise((res) => setTimeout(res, 20));
  await settle(r.loop);
  assert.deepEqual(allowed(r), [], 'the vif that went is offline');
  r.loop.followLinks(); // a second call does nothing
  await r.loop.stop();
});

test('start: the rebuild reads the fake-IP mappings of all vifs at once, each applied to its own vif', async () => {
  const r = rig();
  r.links.add('vif5.0').add('vif6.0').add('vif7.0');
  r.xen = [xenVif(5, '10.137.0.5'), xenVif(6, '10.137.0.6'), xenVif(7, '10.137.0.7')];
  for (const [real, fake] of [['10.137.0.5', '192.168.1.5'], ['10.137.0.7', '192.168.1.7']]) {
    r.qdb.data.set(`/mapped-ip/${real}/visible-ip`, fake);
    r.qdb.data.set(`/mapped-ip/${real}/visible-gateway`, '192.168.1.1');
  }
  await r.loop.start();
  const rec = (vif: string) => r.loop.vifs.records().find((x) => x.spec.vif === vif);
  assert.deepEqual(r.loop.vifs.records().map((x) => x.spec.vif), ['vif5.0', 'vif6.0', 'vif7.0'], 'records in Xen\'s order');
  assert.equal(rec('vif5.0')?.applied?.fakeIp?.fake, '192.168.1.5');
  assert.equal(rec('vif6.0')?.applied?.fakeIp, undefined);
  assert.equal(rec('vif7.0')?.applied?.fakeIp?.fake, '192.168.1.7');
  await r.loop.stop();
});

// Issue 11's round trips on Debian 13, as a template maintainer does them: in a copy of the
// lab's Debian 13 root, install stand-ins of the template's Qubes packages (upstream's names,
// versions, paths; packaging/standins), then qubes-net, upgrade it, upgrade upstream's package,
// remove qubes-net, purge it. Upstream's packages stay installed throughout; while qubes-net
// is installed the four caller-facing paths dispatch and upstream's files sit diverted, byte
// for byte; after removal every upstream file is back byte for byte; after purge the tree is
// what it was before qubes-net, apart from upstream's own upgrade. In between, the per-qube
// switch both ways (QubesDB /qubes-service/qubes-net, then the template default).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { run } from '@qubes-net/common';
import { needRoot, isRoot } from '../helpers/root.js';
import { manifestDiff, sha256File, treeManifest } from '../helpers/tree-manifest.js';
import { ROOT } from './unpacked.js';
import { templateRoot, type TemplateRoot } from './template-root.js';

interface Standins {
  version: string;
  debs: Record<string, string>;
  files: Record<string, Record<string, string>>;
}

const V1 = '4.3.20-1+deb13u1';
const V2 = '4.3.21-1+deb13u1';
const DIVERTED = readFileSync(join(ROOT, 'packaging/overlay/diversions.txt'), 'utf8').split('\n')
  .filter((l) => l.trim() && !l.startsWith('#')).map((l) => l.trim().split(/\s+/)[0]!);
const UPSTREAM_PACKAGES = ['libqubesdb', 'qubesdb', 'qubes-core-agent', 'qubes-core-agent-networking', 'qubes-core-agent-network-manager'];

let work: string | undefined;
let tpl: TemplateRoot | undefined;
let ours1: string;
let ours2: string;
let si1: Standins;
let si2: Standins;

async function standins(version: string, out: string): Promise<Standins> {
  const r = await run(process.execPath, [join(ROOT, 'packaging/standins/build.mjs'), '--out', out, '--version', version], { cwd: ROOT });
  return JSON.parse(r.stdout.trim()) as Standins;
}

before(async () => {
  if (!isRoot()) return; // each test reports the skip (or, under CI, fails)
  work = mkdtempSync(join(tmpdir(), 'qubes-net-pkg-rt-'));
  // The round trips need the package's mechanics, not this round's late parts (agent, watcher,
  // base rulesets: packages.test.ts insists on those); stubs stand in where they are missing.
  const [b1, b2] = [await buildPackagesAllowMissing(join(work, 'r1'), '1'), await buildPackagesAllowMissing(join(work, 'r2'), '2')];
  ours1 = b1;
  ours2 = b2;
  si1 = await standins(V1, join(work, 'si1'));
  si2 = await standins(V2, join(work, 'si2'));
  tpl = await templateRoot('rt');
  mkdirSync(join(tpl.dir, 'tmp/debs'), { recursive: true });
  for (const f of [ours1, ours2, ...Object.values(si1.debs), ...Object.values(si2.debs)]) cpSync(f, join(tpl.dir, "tmp/debs", basename(f)));
});

after(async () => {
  await tpl?.remove().catch(() => undefined);
  if (work) rmSync(work, { recursive: true, force: true });
});

async function buildPackagesAllowMissing(out: string, release: string): Promise<string> {
  const r = await run(process.execPath, [join(ROOT, 'packaging/build.mjs'), '--out', out, '--only', 'deb', '--release', release, '--allow-missing'], { cwd: ROOT });
  return (JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { deb: string }).deb;
}

const inRoot = (p: string): string => join(tpl!.dir, p);
const sha256 = sha256File;
const debIn = (f: string): string => `/tmp/debs/${basename(f)}`;

/** Every path of the tree with its content hash (files) or target (links), minus what changes by itself. */
const snapshot = (): Map<string, string> => treeManifest(tpl!.dir);
const diff = manifestDiff;

async function diversions(): Promise<string[]> {
  const out = await tpl!.must(['dpkg-divert', '--list']);
  return out.split('\n').filter((l) => l.includes('qubes-net')).sort();
}

async function installed(pkg: string): Promise<string> {
  const r = await tpl!.exec(['dpkg-query', '-W', '-f', '${Status} ${Version}', pkg]);
  return r.exitCode === 0 ? r.stdout.trim() : 'absent';
}

/** Upstream's files, checked byte for byte against the stand-in's own content. */
function assertUpstreamFiles(si: Standins, where: 'diverted' | 'original'): void {
  for (const [pkg, files] of Object.entries(si.files)) {
    for (const [path, sum] of Object.entries(files)) {
      const at = where === 'diverted' && DIVERTED.includes(path) ? `${path}.qubes-upstream` : path;
      assert.equal(sha256(inRoot(at)), sum, `${pkg}'s ${path} at ${at}`);
    }
  }
}

function assertDispatchers(): void {
  for (const path of DIVERTED) {
    assert.equal(readlinkSync(inRoot(path)), `/usr/lib/qubes-net/overlay/${basename(path)}`, `${path} is our dispatcher`);
  }
}

let before0: Map<string, string>;

test('stand-ins, then qubes-net: upstream stays installed, its files diverted byte for byte, its units enabled', async (t) => {
  if (!needRoot(t)) return;
  await tpl!.must(['dpkg', '-i', ...Object.values(si1.debs).map(debIn)]);
  for (const p of UPSTREAM_PACKAGES) assert.equal(await installed(p), `install ok installed ${V1}`);
  assert.ok(lstatSync(inRoot('/etc/systemd/system/multi-user.target.wants/qubes-firewall.service')).isSymbolicLink(), 'the stand-in enabled its units');
  before0 = snapshot();

  await tpl!.must(['dpkg', '-i', debIn(ours1)]);
  assert.match(await installed('qubes-net'), /^install ok installed 0\.1\.0-1$/);
  // dom0 is told that the template offers the qubes-net service, as upstream's scripts do theirs.
  assert.ok(readFileSync(inRoot('/var/log/qubes-standins.log'), 'utf8').includes(`/usr/bin/qvm-features-request ${V1} supported-service.qubes-net=1`));
  for (const p of UPSTREAM_PACKAGES) assert.equal(await installed(p), `install ok installed ${V1}`, `${p} stays installed`);
  assert.equal((await diversions()).length, DIVERTED.length, (await diversions()).join('\n'));
  assertDispatchers();
  assertUpstreamFiles(si1, 'diverted');
  // Upstream's enablement untouched; ours added by the preset.
  assert.ok(lstatSync(inRoot('/etc/systemd/system/multi-user.target.wants/qubes-firewall.service')).isSymbolicLink());
  assert.ok(lstatSync(inRoot('/etc/systemd/system/sysinit.target.wants/qubes-net-choice.service')).isSymbolicLink(), 'qubes-net-choice enabled');
  assert.ok(lstatSync(inRoot('/etc/systemd/system/sockets.target.wants/qubes-net-agent.socket')).isSymbolicLink(), 'agent socket enabled');
  // systemd sees our drop-ins in upstream's units, and accepts the units as they now are.
  const delta = await tpl!.must(['systemd-delta', '--no-pager', '--type=extended']);
  for (const unit of ['qubes-antispoof.service', 'qubes-iptables.service', 'qubes-network.service', 'qubes-firewall.service', 'qubes-network-uplink@.service']) {
    assert.ok(delta.includes(`/usr/lib/systemd/system/${unit}.d/50-qubes-net.conf`), `${unit} extended:\n${delta}`);
  }
  const verify = await tpl!.exec(['systemd-analyze', 'verify', '--man=no', 'qubes-antispoof.service', 'qubes-iptables.service', 'qubes-network.service',
    'qubes-firewall.service', 'qubes-network-uplink@eth0.service', 'qubes-net-choice.service', 'qubes-net-agent.socket', 'qubes-net-agent.service',
    'qubes-net-agent-watch.service', 'qubes-net-uplink-watch@eth0.service']);
  const complaints = `${verify.stdout}${verify.stderr}`.split('\n').filter((l) => /qubes/.test(l));
  assert.deepEqual(complaints, [], complaints.join('\n'));
});

test('per-qube switch both ways: QubesDB /qubes-service/qubes-net, then the template default', async (t) => {
  if (!needRoot(t)) return;
  const qdb = inRoot('/var/lib/qubesdb-standin/qubes-service');
  mkdirSync(qdb, { recursive: true });
  const log = (): string[] => { try { return readFileSync(inRoot('/var/log/qubes-standins.log'), 'utf8').trim().split('\n'); } catch { return []; } };
  const choose = async (): Promise<string> => {
    await tpl!.must(['/usr/lib/qubes-net/qubes-net-choice']);
    return readFileSync(inRoot('/run/qubes-net/choice'), 'utf8').trim();
  };
  const dry = { QUBES_NET_DISPATCH_DRY: '1' };

  // dom0: qvm-service --disable QUBE qubes-net → upstream's scripts run, for real.
  writeFileSync(join(qdb, 'qubes-net'), '0');
  assert.equal(await choose(), 'upstream');
  assert.throws(() => lstatSync(inRoot('/run/qubes-net/ours')), 'no ours marker: our units stay off');
  const n = log().length;
  await tpl!.must(['/usr/lib/qubes/setup-ip', 'add', 'eth0']);
  await tpl!.must(['/etc/xen/scripts/vif-route-qubes', 'online']);
  await tpl!.must(['/usr/lib/qubes-net/qubes-net-dispatch', 'iptables', 'start']);
  assert.deepEqual(log().slice(n), [
    `/usr/lib/qubes/setup-ip ${V1} add eth0`,
    `/etc/xen/scripts/vif-route-qubes ${V1} online`,
    `/usr/lib/qubes/init/qubes-iptables ${V1} start`,
  ]);
  // The unit's upstream command runs too: nft -f of upstream's (stand-in) ruleset, in the netns.
  assert.equal(await tpl!.must(['/usr/lib/qubes-net/qubes-net-dispatch', 'antispoof'], dry), `upstream: nft -f /etc/qubes/qubes-antispoof.nft\n`);
  await tpl!.must(['/usr/lib/qubes-net/qubes-net-dispatch', 'antispoof']);

  // qvm-service --enable → ours, without touching the template.
  writeFileSync(join(qdb, 'qubes-net'), '1');
  assert.equal(await choose(), 'ours');
  assert.ok(lstatSync(inRoot('/run/qubes-net/ours')).isFile());
  assert.equal(await tpl!.must(['/usr/lib/qubes/setup-ip', 'add', 'eth0'], dry), 'ours: /usr/bin/qubes-net-guest apply eth0\n');
  assert.equal(await tpl!.must(['/usr/lib/qubes/setup-ip', 'remove', 'eth0'], dry), 'ours: /usr/bin/qubes-net-guest remove eth0\n');
  assert.equal(await tpl!.must(['/etc/xen/scripts/vif-route-qubes', 'online'], dry), 'ours: /usr/lib/qubes-net/vif-route-qubes online\n');
  assert.equal(await tpl!.must(['/usr/lib/qubes/qubes-setup-dnat-to-ns'], dry), 'ours: true\n');
  assert.match(await tpl!.must(['/usr/bin/qubes-firewall'], dry), /^ours: \/usr\/lib\/qubes-net\/native\/qubes-net-watch /);
  const m = log().length;
  await tpl!.must(['/usr/lib/qubes/qubes-setup-dnat-to-ns']);
  assert.equal(log().length, m, 'upstream\'s script did not run');

  // Nothing from dom0: the template default (ours as shipped, then upstream).
  rmSync(join(qdb, 'qubes-net'));
  assert.equal(await choose(), 'ours');
  const conf = inRoot('/etc/qubes-net/qubes-net.conf');
  const shipped = readFileSync(conf, 'utf8');
  writeFileSync(conf, shipped.replace(/^default=ours$/m, 'default=upstream'));
  assert.equal(await choose(), 'upstream');
  // An untrusted QubesDB value that is neither 1 nor 0 is ignored: the default applies.
  writeFileSync(join(qdb, 'qubes-net'), '1; rm -rf /');
  assert.equal(await choose(), 'upstream');
  rmSync(inRoot('/var/lib/qubesdb-standin'), { recursive: true });
  writeFileSync(conf, shipped);
  rmSync(inRoot('/run/qubes-net'), { recursive: true, force: true });
});

test('upgrades keep the overlay: qubes-net 0.1.0-1 → -2, then upstream 4.3.20 → 4.3.21', async (t) => {
  if (!needRoot(t)) return;
  await tpl!.must(['dpkg', '-i', debIn(ours2)]);
  assert.match(await installed('qubes-net'), /0\.1\.0-2$/);
  assert.equal((await diversions()).length, DIVERTED.length);
  assertDispatchers();
  assertUpstreamFiles(si1, 'diverted');

  await tpl!.must(['dpkg', '-i', ...Object.values(si2.debs).map(debIn)]);
  for (const p of UPSTREAM_PACKAGES) assert.equal(await installed(p), `install ok installed ${V2}`);
  assert.equal((await diversions()).length, DIVERTED.length);
  assertDispatchers();
  assertUpstreamFiles(si2, 'diverted');
});

test('remove restores upstream byte for byte; purge leaves nothing behind', async (t) => {
  if (!needRoot(t)) return;
  await tpl!.must(['dpkg', '-r', 'qubes-net']);
  assert.deepEqual(await diversions(), []);
  assertUpstreamFiles(si2, 'original');
  for (const p of UPSTREAM_PACKAGES) assert.equal(await installed(p), `install ok installed ${V2}`);
  // Only the conffiles stay after a remove (dpkg's rule), and upstream's own upgrade differs.
  const upgraded = new Set(Object.values(si2.files).flatMap((f) => Object.keys(f)));
  const afterRemove = diff(before0, snapshot()).filter((p) => !upgraded.has(p));
  assert.deepEqual(afterRemove, ['/etc/qubes-net', '/etc/qubes-net/qubes-net.conf', '/etc/qubes/post-install.d', '/etc/qubes/post-install.d/20-qubes-net-features.sh']);

  await tpl!.must(['dpkg', '-P', 'qubes-net']);
  assert.equal(await installed('qubes-net'), 'absent');
  assert.deepEqual(await diversions(), []);
  assert.deepEqual(diff(before0, snapshot()).filter((p) => !upgraded.has(p)), [], 'nothing of qubes-net is left');
  assertUpstreamFiles(si2, 'original');
});

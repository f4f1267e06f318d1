// The packaging round trips (issue 12 item 4) inside a BOOTED Debian 13 template: systemd is
// PID 1, so the maintainer scripts meet a running systemd (daemon-reload, tmpfiles, enable/
// disable with the manager listening), as on a template a user updates. One container on a
// copy-on-write instance of the lab's cached base root, in a network namespace of its own (no
// link anywhere): apt installs the stand-ins of upstream's Qubes packages, then ours; a reboot
// runs our units under upstream's unit names; ours is upgraded (a rebuilt .deb), removed (a
// reboot runs upstream's scripts again) and purged (the tree is what it was before ours).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run } from '@qubes-net/common';
import { template } from '@qubes-net/lab';
import { isRoot, needRoot } from '../helpers/root.js';
import { manifestDiff, sha256File, treeManifest } from '../helpers/tree-manifest.js';

const { Container, buildDeb, ensureDebianRoot, instantiateRoot, CHECKOUT } = template;

interface Standins {
  version: string;
  debs: Record<string, string>;
  files: Record<string, Record<string, string>>;
}

const V1 = '4.3.20-1+deb13u1';
const DIVERTED = readFileSync(join(CHECKOUT, 'packaging/overlay/diversions.txt'), 'utf8').split('\n')
  .filter((l) => l.trim() && !l.startsWith('#')).map((l) => l.trim().split(/\s+/)[0]!);
/** Upstream's units that a booted client qube runs (stand-ins, or ours through their drop-ins). */
const UPSTREAM_UNITS = ['qubes-antispoof.service', 'qubes-iptables.service'];
const OUR_UNITS = ['qubes-net-choice.service', 'qubes-net-agent.socket', 'qubes-net-agent-watch.service'];

const id = randomBytes(3).toString('hex');
const NETNS = `qn-rtboot-${id}`;
let work: string | undefined;
let inst: template.RootInstance | undefined;
let box: template.Container | undefined;
let si: Standins;
let ours1 = '';
let ours2 = '';
let setupError: unknown;
const timings: string[] = [];

async function timed<T>(what: string, f: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  try { return await f(); } finally { timings.push(`${what} ${Date.now() - t0} ms`); }
}

/** (Re)boots the instance: a reboot is a poweroff and a new container on the same tree. */
async function boot(): Promise<void> {
  await box?.stop();
  box = Container.start({ machine: `qn-rtboot-${id}`, root: inst!.dir, netnsFile: `/run/netns/${NETNS}`, hostname: 'rtboot', logFile: join(work!, 'console.log') });
  await box.waitBooted(120_000);
}

before(async () => {
  if (!isRoot()) return;
  try {
    work = mkdtempSync(join(tmpdir(), 'qubes-net-rtboot-'));
    [ours1, ours2] = await timed('build ours -1 and -2', async () => [await buildDeb(join(work!, 'r1'), 1), await buildDeb(join(work!, 'r2'), 2)]);
    si = JSON.parse((await run(process.execPath, [join(CHECKOUT, 'packaging/standins/build.mjs'), '--out', join(work, 'si'), '--version', V1], { cwd: CHECKOUT })).stdout.trim()) as Standins;
    const base = await timed('base root', () => ensureDebianRoot());
    inst = await instantiateRoot(base.dir, `rtboot-${id}`);
    // nspawn mounts a tmpfs on /tmp: the .debs go to /var/tmp.
    mkdirSync(join(inst.dir, 'var/tmp/debs'), { recursive: true });
    for (const d of [ours1, ours2, ...Object.values(si.debs)]) cpSync(d, join(inst.dir, 'var/tmp/debs', basename(d)));
    // What dom0 would have in QubesDB for a client qube: no service flags (the template default).
    mkdirSync(join(inst.dir, 'var/lib/qubesdb-standin/qubes-service'), { recursive: true });
    await run('ip', ['netns', 'add', NETNS]);
    await timed('first boot', boot);
  } catch (err) {
    setupError = err;
  }
}, { timeout: 15 * 60_000 });

after(async () => {
  await box?.stop().catch(() => box?.kill());
  await inst?.remove().catch(() => undefined);
  if (isRoot()) await run('ip', ['netns', 'delete', NETNS], { allowFailure: true });
  if (work) rmSync(work, { recursive: true, force: true });
  if (timings.length) process.stderr.write(`# rtboot timings: ${timings.join(', ')}\n`);
});

function ready(t: import('node:test').TestContext): template.Container | undefined {
  if (!needRoot(t)) return undefined;
  if (setupError) throw setupError;
  assert.ok(box?.running, 'the container is not running');
  return box;
}

const inRoot = (p: string): string => join(inst!.dir, p);
const debIn = (f: string): string => `/var/tmp/debs/${basename(f)}`;

async function must(argv: string[], timeoutMs = 60_000): Promise<string> {
  const r = await box!.exec(argv, { allowFailure: true, timeoutMs, env: { DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.exitCode !== 0) assert.fail(`${argv.join(' ')} exited ${r.exitCode} in the booted template:\n${r.stderr.slice(-3000)}\n${r.stdout.slice(-2000)}`);
  return r.stdout;
}

const apt = (...args: string[]): Promise<string> => must(['apt-get', '-y', '--no-install-recommends', '-o', 'Dpkg::Use-Pty=0', ...args], 300_000);

async function installed(pkg: string): Promise<string> {
  const r = await box!.exec(['dpkg-query', '-W', '-f', '${Status} ${Version}', pkg], { allowFailure: true });
  return r.exitCode === 0 ? r.stdout.trim() : 'absent';
}

async function diversions(): Promise<string[]> {
  return (await must(['dpkg-divert', '--list'])).split('\n').filter((l) => l.includes('qubes-net')).sort();
}

async function active(unit: string): Promise<string> {
  return (await box!.exec(['systemctl', 'is-active', unit], { allowFailure: true })).stdout.trim();
}

async function qubesFailures(): Promise<string[]> {
  return (await box!.failedUnits()).filter((u) => /qubes/.test(u));
}

const standinLog = (): string[] => { try { return readFileSync(inRoot('/var/log/qubes-standins.log'), 'utf8').trim().split('\n'); } catch { return []; } };

/** Upstream's files, byte for byte against the stand-ins' own manifest. */
function assertUpstreamFiles(where: 'diverted' | 'original'): void {
  for (const [pkg, files] of Object.entries(si.files)) {
    for (const [path, sum] of Object.entries(files)) {
      const at = where === 'diverted' && DIVERTED.includes(path) ? `${path}.qubes-upstream` : path;
      assert.equal(sha256File(inRoot(at)), sum, `${pkg}'s ${path} at ${at}`);
    }
  }
}

let before0: Map<string, string>;

test('booted: apt installs upstream\'s (stand-in) packages, then qubes-net with systemd running; upstream diverted byte for byte', async (t) => {
  const b = ready(t);
  if (!b) return;
  await timed('apt install stand-ins', () => apt('install', ...Object.values(si.debs).map(debIn)));
  // Their units run as in a qube booted from such a template.
  await timed('reboot (upstream)', boot);
  for (const u of UPSTREAM_UNITS) assert.equal(await active(u), 'active', u);
  assert.deepEqual(await qubesFailures(), []);
  before0 = treeManifest(inst!.dir);

  await timed('apt install ours', () => apt('install', debIn(ours1)));
  assert.match(await installed('qubes-net'), /^install ok installed 0\.1\.0-1$/);
  assert.equal((await diversions()).length, DIVERTED.length, (await diversions()).join('\n'));
  for (const path of DIVERTED) assert.equal(readlinkSync(inRoot(path)), `/usr/lib/qubes-net/overlay/${basename(path)}`, `${path} is our dispatcher`);
  assertUpstreamFiles('diverted');
  // The postinst's daemon-reload reached the running manager: it sees our drop-ins and units.
  const dropIns = await must(['systemctl', 'show', '-p', 'DropInPaths', '--value', 'qubes-antispoof.service']);
  assert.match(dropIns, /qubes-antispoof\.service\.d\/50-qubes-net\.conf/);
  for (const u of OUR_UNITS) assert.equal((await box!.exec(['systemctl', 'is-enabled', u], { allowFailure: true })).stdout.trim(), 'enabled', u);
  // A template's running system is not switched under it: upstream's units stay as they were.
  for (const u of UPSTREAM_UNITS) assert.equal(await active(u), 'active', u);
  assert.deepEqual(await qubesFailures(), []);
});

test('booted: a qube booted from the template with qubes-net runs our units under upstream\'s names', async (t) => {
  const b = ready(t);
  if (!b) return;
  const n = standinLog().length;
  await timed('reboot (ours)', boot);
  // /run is the container's own tmpfs: read inside.
  assert.equal((await must(['cat', '/run/qubes-net/choice'])).trim(), 'ours');
  for (const u of ['qubes-net-choice.service', ...UPSTREAM_UNITS]) assert.equal(await active(u), 'active', u);
  // A client qube (no qubes-network service): the agent's socket stays down by its condition.
  assert.equal(await active('qubes-net-agent.socket'), 'inactive');
  assert.deepEqual(await qubesFailures(), []);
  assert.match(await must(['nft', 'list', 'tables']), /table ip qubes\n/, 'our base ruleset');
  assert.ok(!standinLog().slice(n).some((l) => /qubes-iptables/.test(l)), `upstream's scripts did not run: ${standinLog().slice(n).join('; ')}`);
});

test('booted: upgrade to a rebuilt .deb keeps the overlay; the running units survive the maintainer scripts', async (t) => {
  const b = ready(t);
  if (!b) return;
  await timed('apt upgrade ours', () => apt('install', debIn(ours2)));
  assert.match(await installed('qubes-net'), /0\.1\.0-2$/);
  assert.equal((await diversions()).length, DIVERTED.length);
  for (const path of DIVERTED) assert.equal(readlinkSync(inRoot(path)), `/usr/lib/qubes-net/overlay/${basename(path)}`);
  assertUpstreamFiles('diverted');
  for (const u of ['qubes-net-choice.service', ...UPSTREAM_UNITS]) assert.equal(await active(u), 'active', u);
  assert.deepEqual(await qubesFailures(), []);
});

test('booted: remove gives upstream its files back byte for byte, and the next boot runs upstream\'s scripts', async (t) => {
  const b = ready(t);
  if (!b) return;
  await timed('apt remove ours', () => apt('remove', 'qubes-net'));
  assert.match(await installed('qubes-net'), /^deinstall ok config-files /);
  assert.deepEqual(await diversions(), []);
  assertUpstreamFiles('original');
  for (const u of OUR_UNITS) assert.notEqual((await box!.exec(['systemctl', 'is-enabled', u], { allowFailure: true })).stdout.trim(), 'enabled', u);
  // Only the conffiles stay after a remove (dpkg's rule).
  assert.deepEqual(manifestDiff(before0, treeManifest(inst!.dir)), ['/etc/qubes-net', '/etc/qubes-net/qubes-net.conf', '/etc/qubes/post-install.d', '/etc/qubes/post-install.d/20-qubes-net-features.sh']);

  const n = standinLog().length;
  await timed('reboot (after remove)', boot);
  for (const u of UPSTREAM_UNITS) assert.equal(await active(u), 'active', u);
  assert.equal(await active('qubes-net-choice.service'), 'inactive');
  assert.equal((await box!.exec(['test', '-e', '/run/qubes-net/choice'], { allowFailure: true })).exitCode, 1, 'no choice was made');
  assert.deepEqual(await qubesFailures(), []);
  assert.ok(standinLog().slice(n).some((l) => l.startsWith(`/usr/lib/qubes/init/qubes-iptables ${V1} start`)), `upstream's qubes-iptables ran: ${standinLog().slice(n).join('; ')}`);
});

test('booted: purge leaves no file of ours and no diversion', async (t) => {
  const b = ready(t);
  if (!b) return;
  await timed('apt purge ours', () => apt('purge', 'qubes-net'));
  assert.equal(await installed('qubes-net'), 'absent');
  assert.deepEqual(await diversions(), []);
  assert.deepEqual(manifestDiff(before0, treeManifest(inst!.dir)), [], 'nothing of qubes-net is left');
  assertUpstreamFiles('original');
  assert.deepEqual(await qubesFailures(), []);
  t.diagnostic(timings.join(', '));
});

// The RPM's overlay for real, as on a Fedora template: rpm --root into a copy of the lab's
// Debian 13 root (it has the /bin/sh and coreutils rpm's scriptlets run with, chrooted), with a
// stand-in of qubes-core-agent-networking as an RPM. Install upstream's, then ours (%post moves
// the four caller-facing files aside and links our dispatchers), upgrade upstream's (its new
// files take their paths back, our %triggerin moves them aside again), remove ours (%preun
// gives upstream's files back byte for byte), remove upstream's. Dependencies are not
// resolved (--nodeps): there is no Fedora repository here, and they are checked elsewhere.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '@qubes-net/common';
import { isRoot, needRoot } from '../helpers/root.js';
import { buildPackages, ROOT } from './unpacked.js';
import { templateRoot, type TemplateRoot } from './template-root.js';

interface Standins {
  rpms: Record<string, string>;
  files: Record<string, Record<string, string>>;
}

const DIVERTED = readFileSync(join(ROOT, 'packaging/overlay/diversions.txt'), 'utf8').split('\n')
  .filter((l) => l.trim() && !l.startsWith('#')).map((l) => l.trim().split(/\s+/)[0]!);

let work: string | undefined;
let tpl: TemplateRoot | undefined;
let ours: string;
let si1: Standins;
let si2: Standins;

before(async () => {
  if (!isRoot()) return;
  work = mkdtempSync(join(tmpdir(), 'qubes-net-pkg-rpm-'));
  ours = (await buildPackages(join(work, 'out'), 'rpm', true)).rpm!;
  const standins = async (version: string) => JSON.parse((await run(process.execPath, [join(ROOT, 'packaging/standins/build.mjs'), '--out', join(work!, version), '--version', version, '--rpm'], { cwd: ROOT })).stdout.trim()) as Standins;
  si1 = await standins('4.3.20-1.fc41');
  si2 = await standins('4.3.21-1.fc41');
  tpl = await templateRoot('rpm');
  mkdirSync(join(tpl.dir, 'var/lib/rpm'), { recursive: true });
  await rpm(['--initdb']);
});

after(async () => {
  await tpl?.remove().catch(() => undefined);
  if (work) rmSync(work, { recursive: true, force: true });
});

/** rpm on this host against the root; its scriptlets run chrooted into it. */
async function rpm(args: string[]): Promise<string> {
  const r = await run('rpm', ['--root', tpl!.dir, '--dbpath', '/var/lib/rpm', ...args], { allowFailure: true, env: { LC_ALL: 'C' } });
  if (r.exitCode !== 0) throw new Error(`rpm ${args.join(' ')} exited ${r.exitCode}: ${r.stderr}${r.stdout}`);
  return `${r.stdout}${r.stderr}`;
}

const inRoot = (p: string): string => join(tpl!.dir, p);
const sha256 = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
const NET = 'qubes-core-agent-networking';

function assertOverlay(si: Standins): void {
  for (const path of DIVERTED) {
    assert.equal(readlinkSync(inRoot(path)), `/usr/lib/qubes-net/overlay/${path.split('/').at(-1)}`, `${path} is our dispatcher`);
    assert.equal(sha256(inRoot(`${path}.qubes-upstream`)), si.files[NET]![path], `${path}.qubes-upstream is upstream's file`);
  }
  assert.deepEqual(readFileSync(inRoot('/var/lib/qubes-net/diverted'), 'utf8').trim().split('\n').sort(), [...DIVERTED].sort());
}

function assertUpstream(si: Standins): void {
  for (const [path, sum] of Object.entries(si.files[NET]!)) {
    assert.ok(lstatSync(inRoot(path)).isFile(), `${path} is a file`);
    assert.equal(sha256(inRoot(path)), sum, `${path} byte for byte`);
  }
  for (const path of DIVERTED) assert.ok(!existsSync(inRoot(`${path}.qubes-upstream`)), `no ${path}.qubes-upstream left`);
}

test('RPM: install over upstream\'s package, upgrade upstream\'s, remove ours, remove upstream\'s', async (t) => {
  if (!needRoot(t)) return;
  await rpm(['-i', '--nodeps', si1.rpms[NET]!]);
  assertUpstream(si1);

  await rpm(['-i', '--nodeps', ours]);
  assertOverlay(si1);
  // rpm sees upstream's files as changed while ours is installed (documented).
  const verify = await run('rpm', ['--root', tpl!.dir, '--dbpath', '/var/lib/rpm', '-V', NET], { allowFailure: true, env: { LC_ALL: 'C' } });
  for (const path of DIVERTED) assert.match(verify.stdout, new RegExp(`${path.replaceAll('.', '\\.')}$`, 'm'));

  await rpm(['-U', '--nodeps', si2.rpms[NET]!]);
  assertOverlay(si2);

  await rpm(['-e', '--nodeps', 'qubes-net']);
  assertUpstream(si2);
  assert.ok(!existsSync(inRoot('/var/lib/qubes-net')), 'no record left');
  assert.ok(!existsSync(inRoot('/usr/lib/qubes-net')), 'nothing of ours left');
  const clean = await run('rpm', ['--root', tpl!.dir, '--dbpath', '/var/lib/rpm', '-V', NET], { allowFailure: true, env: { LC_ALL: 'C' } });
  assert.equal(clean.exitCode, 0, `rpm -V ${NET} is clean again: ${clean.stdout}`);

  await rpm(['-e', '--nodeps', NET]);
  for (const path of DIVERTED) assert.ok(!existsSync(inRoot(path)), `${path} went with upstream's package`);
});

test('RPM: upstream\'s package removed while ours stays gives its files back first (%triggerun)', async (t) => {
  if (!needRoot(t)) return;
  for (const pkg of ['qubes-net', NET]) await run('rpm', ['--root', tpl!.dir, '--dbpath', '/var/lib/rpm', '-e', '--nodeps', pkg], { allowFailure: true });
  await rpm(['-i', '--nodeps', si1.rpms[NET]!]);
  await rpm(['-i', '--nodeps', ours]);
  assertOverlay(si1);
  await rpm(['-e', '--nodeps', NET]);
  for (const path of DIVERTED) {
    assert.ok(!existsSync(inRoot(`${path}.qubes-upstream`)), `no ${path}.qubes-upstream left behind`);
    assert.ok(!existsSync(inRoot(path)), `${path} removed with upstream's package`);
  }
  await rpm(['-e', '--nodeps', 'qubes-net']);
  assert.ok(!existsSync(inRoot('/usr/lib/qubes-net')));
});

// The template packages (issue 7): builds the RPM and the .deb with packaging/build.mjs, then
// checks what a template would get: every expected file with its mode and nothing meant for
// development, the relations that make them replace qubes-core-agent-networking, units that
// systemd accepts, presets that enable them, and CLIs that run from the unpacked RPM alone.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { run } from '@qubes-net/common';
import { buildPackages, cliEnv, ROOT, unpackRpm } from './unpacked.js';

interface Built {
  version: string;
  rpm: string;
  deb: string;
}

interface Entry {
  mode: string;
  owner: string;
  group: string;
}

const WORKSPACE_VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
const LIB = '/usr/lib/qubes-net/node_modules';

/** /usr/bin command → workspace package, and the subcommands its --help must mention. */
const CLIS: Record<string, { pkg: string; subcommands: string[] }> = {
  'qubes-net-guest': { pkg: 'guest-agent', subcommands: ['apply', 'remove', 'run', 'status'] },
  'qubes-net-driver': { pkg: 'driver-agent', subcommands: ['run', 'hotplug', 'dns-changed', 'status'] },
  'qubes-net-firewall': { pkg: 'firewall', subcommands: ['run', 'render', 'status'] },
  'qubes-net-qdb': { pkg: 'qubesdb', subcommands: [] },
};

const UNITS = ['qubes-net-base.service', 'qubes-net-guest.service', 'qubes-net-driver.service', 'qubes-net-firewall.service'];

const EXEC = '-rwxr-xr-x';
const DATA = '-rw-r--r--';

/** What a template must get, path → mode. Written out here, independently of build.mjs. */
const EXPECTED: Record<string, string> = {
  ...Object.fromEntries(Object.keys(CLIS).map((c) => [`/usr/bin/${c}`, EXEC])),
  ...Object.fromEntries(Object.values(CLIS).map(({ pkg }) => [`${LIB}/@qubes-net/${pkg}/dist/cli.js`, DATA])),
  ...Object.fromEntries(['common', 'qubesdb', 'guest-agent', 'driver-agent', 'firewall'].flatMap((p) => [
    [`${LIB}/@qubes-net/${p}/package.json`, DATA],
    [`${LIB}/@qubes-net/${p}/dist/index.js`, DATA],
  ])),
  [`${LIB}/koffi/build/koffi/linux_x64/koffi.node`]: DATA,
  [`${LIB}/koffi/index.js`]: DATA,
  [`${LIB}/koffi/package.json`]: DATA,
  [`${LIB}/pino/package.json`]: DATA,
  [`${LIB}/execa/package.json`]: DATA,
  '/usr/lib/qubes-net/native/qubes-net-hotplug': EXEC,
  '/usr/lib/qubes-net/native/qubes-net-uplink': EXEC,
  '/etc/xen/scripts/vif-route-qubes': EXEC,
  '/etc/qubes/post-install.d/20-qubes-net-features.sh': EXEC,
  '/usr/lib/udev/rules.d/99-qubes-network.rules': DATA,
  ...Object.fromEntries([...UNITS, 'qubes-net-uplink@.service'].map((u) => [`/usr/lib/systemd/system/${u}`, DATA])),
  '/usr/lib/systemd/system-preset/70-qubes-net.preset': DATA,
  '/usr/lib/systemd/network/80-qubes-vif.link': DATA,
  '/usr/lib/tmpfiles.d/qubes-net.conf': DATA,
  '/usr/share/doc/qubes-net/README.md': DATA,
};

/** Paths that must never be in a template package. */
const FORBIDDEN: [RegExp, string][] = [
  [/\/node_modules\/(typescript|fast-check|pure-rand|@types|yaml)\//, 'a development-only or lab-only dependency'],
  [/\/node_modules\/@qubes-net\/(lab|netns)\//, 'the lab or netns (test tools)'],
  [/\/koffi\/build\/koffi\/(?!linux_x64(\/|$))/, "koffi's binary for another platform"],
  [/\/koffi\/(src|vendor|doc|lib)\//, "koffi's sources"],
  [/\/@qubes-net\/[^/]+\/src\//, 'TypeScript sources'],
  [/\.([cm]?ts|map|tsbuildinfo)$/, 'TypeScript or source maps'],
  [/\/node_modules\/(@[^/]+\/)?[^/@]+\/(test|tests|benchmarks|docs|examples)(\/|$)/, "a dependency's tests, benchmarks or docs"],
  [/libqubesdb\.so/, "our stand-in libqubesdb (templates use the system's)"],
];

let work: string;
let built: Built;
let rpmFiles: Map<string, Entry>;
let debFiles: Map<string, Entry>;
let rpmRoot: string;

async function rpmQuery(format: string): Promise<string> {
  return (await run('rpm', ['-qp', '--qf', format, built.rpm], { env: { LC_ALL: 'C' } })).stdout;
}

async function rpmTags(flag: string): Promise<string[]> {
  return (await run('rpm', ['-qp', flag, built.rpm], { env: { LC_ALL: 'C' } })).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
}

function debField(field: string): Promise<string> {
  return run('dpkg-deb', ['-f', built.deb, field]).then((r) => r.stdout.trim());
}

function systemdVersion(): Promise<number> {
  return run('systemctl', ['--version']).then((r) => Number(/systemd (\d+)/.exec(r.stdout)?.[1] ?? 0));
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'qubes-net-pkg-'));
  built = (await buildPackages(join(work, 'out'))) as Built;
  assert.ok(existsSync(built.rpm), `the RPM ${built.rpm} exists`);
  assert.ok(existsSync(built.deb), `the .deb ${built.deb} exists`);

  rpmFiles = new Map();
  for (const line of (await rpmQuery('[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\\n]')).split('\n').filter(Boolean)) {
    const [mode, owner, group, ...path] = line.split(' ');
    rpmFiles.set(path.join(' '), { mode: mode!, owner: owner!, group: group! });
  }
  debFiles = new Map();
  for (const line of (await run('dpkg-deb', ['-c', built.deb], { env: { LC_ALL: 'C' } })).stdout.split('\n').filter(Boolean)) {
    // drwxr-xr-x root/root 0 2026-01-01 00:00 ./usr/bin/  (symlinks end in " -> target")
    const m = /^(\S+) (\S+)\/(\S+)\s+\d+ \S+ \S+ \.(\/.*?)(?: -> .*)?$/.exec(line);
    assert.ok(m, `dpkg-deb -c line parses: ${line}`);
    const path = m[4]!.length > 1 ? m[4]!.replace(/\/$/, '') : m[4]!;
    debFiles.set(path, { mode: m[1]!, owner: m[2]!, group: m[3]! });
  }
  rpmRoot = await unpackRpm(built.rpm, join(work, 'rpm-root'));
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the RPM holds every expected file with its mode, all owned by root', () => {
  const wrong: string[] = [];
  for (const [path, mode] of Object.entries(EXPECTED)) {
    const got = rpmFiles.get(path);
    if (!got) wrong.push(`${path}: missing`);
    else if (got.mode !== mode) wrong.push(`${path}: mode ${got.mode}, expected ${mode}`);
  }
  assert.deepEqual(wrong, []);
  const notRoot = [...rpmFiles].filter(([, e]) => e.owner !== 'root' || e.group !== 'root').map(([p]) => p);
  assert.deepEqual(notRoot, []);
  // Directories the package owns are ours only: never /usr/bin, /etc/xen or systemd's.
  const dirs = [...rpmFiles].filter(([, e]) => e.mode.startsWith('d')).map(([p]) => p);
  assert.deepEqual(dirs.filter((d) => !d.startsWith('/usr/lib/qubes-net') && d !== '/usr/share/doc/qubes-net'), []);
});

test('the RPM holds nothing meant for development, the lab or other platforms', () => {
  const bad = [...rpmFiles.keys()].flatMap((p) => FORBIDDEN.filter(([re]) => re.test(p)).map(([, why]) => `${p}: ${why}`));
  assert.deepEqual(bad, []);
});

test("the RPM ships every compiled file of the agents and every production dependency npm lists", async () => {
  const missing: string[] = [];
  for (const pkg of ['common', 'qubesdb', 'guest-agent', 'driver-agent', 'firewall']) {
    const dist = join(ROOT, 'packages', pkg, 'dist');
    for (const f of readdirSync(dist, { recursive: true }).map(String)) {
      if (!f.endsWith('.js') || !statSync(join(dist, f)).isFile()) continue;
      const path = `${LIB}/@qubes-net/${pkg}/dist/${f}`;
      if (!rpmFiles.has(path)) missing.push(path);
    }
  }
  const ws = ['common', 'qubesdb', 'guest-agent', 'driver-agent', 'firewall'].flatMap((p) => ['-w', `@qubes-net/${p}`]);
  const { stdout } = await run('npm', ['ls', '--omit=dev', '--all', '--parseable', ...ws], { cwd: ROOT });
  for (const dir of stdout.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const rel = relative(ROOT, dir);
    if (!rel.startsWith('node_modules/')) continue;
    const path = `/usr/lib/qubes-net/${rel}/package.json`;
    if (!rpmFiles.has(path)) missing.push(path);
  }
  assert.deepEqual(missing, []);
});

test('the RPM replaces qubes-core-agent-networking and requires what the agents run', async () => {
  assert.equal((await rpmQuery('%{NAME} %{ARCH}')).trim(), 'qubes-net x86_64');
  const requires = await rpmTags('--requires');
  for (const r of ['nodejs >= 1:20', 'nftables', 'iproute', 'conntrack-tools', 'qubes-db-libs']) {
    assert.ok(requires.includes(r), `Requires: ${r} (got ${requires.join(', ')})`);
  }
  assert.ok((await rpmTags('--provides')).some((p) => /^qubes-core-agent-networking = \d/.test(p)), 'Provides: qubes-core-agent-networking = <version>');
  assert.deepEqual(await rpmTags('--conflicts'), ['qubes-core-agent-networking']);
});

test('the .deb holds the same files with the same modes as the RPM, owned by root', () => {
  const differences: string[] = [];
  for (const [path, e] of rpmFiles) {
    const d = debFiles.get(path);
    if (!d) differences.push(`${path}: only in the RPM`);
    else if (d.mode !== e.mode) differences.push(`${path}: ${d.mode} in the .deb, ${e.mode} in the RPM`);
  }
  for (const [path, e] of debFiles) {
    if (!e.mode.startsWith('d') && !rpmFiles.has(path)) differences.push(`${path}: only in the .deb`);
  }
  assert.deepEqual(differences, []);
  assert.deepEqual([...debFiles].filter(([, e]) => e.owner !== 'root' || e.group !== 'root').map(([p]) => p), []);
});

test('the .deb replaces qubes-core-agent-networking and depends on what the agents run', async () => {
  assert.equal(await debField('Package'), 'qubes-net');
  assert.equal(await debField('Architecture'), 'amd64');
  assert.equal(await debField('Version'), built.version);
  const depends = (await debField('Depends')).split(',').map((d) => d.trim());
  for (const d of ['nodejs (>= 20)', 'nftables', 'iproute2', 'conntrack', 'libqubesdb']) {
    assert.ok(depends.includes(d), `Depends: ${d} (got ${depends.join(', ')})`);
  }
  assert.match(await debField('Provides'), /^qubes-core-agent-networking \(= \d[^)]*\)$/);
  assert.equal(await debField('Conflicts'), 'qubes-core-agent-networking');
  assert.equal(await debField('Replaces'), 'qubes-core-agent-networking');
});

test('the maintainer scripts of both packages preset the same units; removal disables them', async () => {
  const scripts = (await run('rpm', ['-qp', '--scripts', built.rpm], { env: { LC_ALL: 'C' } })).stdout;
  const debScripts = join(work, 'deb-control');
  await run('dpkg-deb', ['-e', built.deb, debScripts]);
  const postinst = readFileSync(join(debScripts, 'postinst'), 'utf8');
  const prerm = readFileSync(join(debScripts, 'prerm'), 'utf8');
  for (const unit of UNITS) {
    assert.match(scripts, new RegExp(`preset[^\\n]*(\\\\\\n[^\\n]*)*${unit.replace('.', '\\.')}`), `RPM %post presets ${unit}`);
    assert.match(scripts, new RegExp(`disable[^\\n]*(\\\\\\n[^\\n]*)*${unit.replace('.', '\\.')}`), `RPM %preun disables ${unit}`);
    assert.ok(postinst.includes(unit) && /systemctl --no-reload preset/.test(postinst), `postinst presets ${unit}`);
    assert.ok(prerm.includes(unit) && /systemctl --no-reload disable/.test(prerm), `prerm disables ${unit}`);
  }
  for (const f of ['postinst', 'prerm', 'postrm']) await run('sh', ['-n', join(debScripts, f)]);
});

/** A scratch root for systemd's offline tools: the unpacked RPM plus this host's own units. */
async function systemdScratch(): Promise<string> {
  const scratch = join(work, 'systemd-root');
  if (existsSync(scratch)) return scratch;
  mkdirSync(scratch);
  await run('cp', ['-a', `${rpmRoot}/.`, scratch]);
  for (const dir of ['/usr/lib/systemd/system', '/lib/systemd/system']) {
    // cp, not fs.cpSync: masked units are symlinks to /dev/null. -n: never over our own units.
    if (existsSync(dir)) await run('cp', ['-a', '-n', `${dir}/.`, join(scratch, 'usr/lib/systemd/system')]);
  }
  // Like Fedora: whatever no preset names stays disabled, so only our preset can enable ours.
  mkdirSync(join(scratch, 'usr/lib/systemd/system-preset'), { recursive: true });
  writeFileSync(join(scratch, 'usr/lib/systemd/system-preset/99-default-disable.preset'), 'disable *\n');
  return scratch;
}

test('systemd-analyze verify accepts every unit of the package (any diagnostic is fatal)', async (t) => {
  const scratch = await systemdScratch();
  const units = [...UNITS, 'qubes-net-uplink@eth0.service'];
  const r = await run('systemd-analyze', ['verify', '--man=no', `--root=${scratch}`, ...units], { allowFailure: true, env: { LC_ALL: 'C', SYSTEMD_LOG_COLOR: '0' } });
  const version = await systemdVersion();
  // Type=notify-reload (upstream's type for the firewall) exists from systemd 253 on; older
  // ones say so and fall back, which README.md documents. Nothing else may be reported.
  const known = (l: string) => version < 253 && /qubes-net-firewall\.service:\d+: Failed to parse service type, ignoring: notify-reload$/.test(l);
  const diagnostics = `${r.stdout}\n${r.stderr}`.split('\n').map((l) => l.trim()).filter(Boolean);
  if (diagnostics.some(known)) t.diagnostic(`systemd ${version} < 253: Type=notify-reload falls back (documented)`);
  assert.deepEqual(diagnostics.filter((l) => !known(l)), [], 'systemd-analyze verify reports nothing');
  assert.equal(r.exitCode, 0);
});

test('the units keep upstream boot order, conditions and limits', () => {
  const unit = (name: string) => readFileSync(join(rpmRoot, 'usr/lib/systemd/system', name), 'utf8');
  const has = (name: string, line: string) => assert.ok(unit(name).split('\n').some((l) => l.trim() === line), `${name}: ${line}`);
  has('qubes-net-base.service', 'Before=network-pre.target');
  has('qubes-net-base.service', 'RequiredBy=network-pre.target');
  has('qubes-net-uplink@.service', 'Requires=network-pre.target');
  has('qubes-net-uplink@.service', 'ExecStart=/usr/lib/qubes-net/native/qubes-net-uplink apply %i');
  has('qubes-net-uplink@.service', 'ExecStop=/usr/lib/qubes-net/native/qubes-net-uplink remove %i');
  has('qubes-net-guest.service', 'ExecStart=/usr/bin/qubes-net-guest run');
  has('qubes-net-driver.service', 'ConditionPathExists=/var/run/qubes-service/qubes-network');
  has('qubes-net-driver.service', 'ExecStart=/usr/bin/qubes-net-driver run');
  has('qubes-net-firewall.service', 'ConditionPathExists=/var/run/qubes-service/qubes-firewall');
  has('qubes-net-firewall.service', 'Type=notify-reload');
  has('qubes-net-firewall.service', 'Restart=on-failure');
  has('qubes-net-firewall.service', 'ExecStart=/usr/bin/qubes-net-firewall run');
  assert.match(unit('qubes-net-firewall.service'), /^Before=.*\bqubes-net-driver\.service\b/m, 'the firewall starts before the driver');
  for (const name of [...UNITS, 'qubes-net-uplink@.service']) {
    const max = /^MemoryMax=(\d+)M$/m.exec(unit(name));
    assert.ok(max && Number(max[1]) <= 160, `${name}: MemoryMax of at most 160M for a 300 MB sys-net`);
    assert.match(unit(name), /^MemoryHigh=\d+M$/m, `${name}: MemoryHigh`);
  }
  const rule = readFileSync(join(rpmRoot, 'usr/lib/udev/rules.d/99-qubes-network.rules'), 'utf8');
  assert.match(rule, /SUBSYSTEMS=="xen", DRIVERS=="vif"/);
  assert.match(rule, /KERNEL!="eth\*"/);
  assert.match(rule, /ACTION=="add", RUN\+="\/usr\/bin\/systemctl --no-block restart [^"]*qubes-net-uplink@%k\.service"/);
  assert.match(rule, /ACTION=="remove", RUN\+="\/usr\/bin\/systemctl --no-block stop [^"]*qubes-net-uplink@%k\.service"/);
});

test('the presets enable every unit with an [Install] section', async () => {
  const scratch = await systemdScratch();
  await run('systemctl', [`--root=${scratch}`, '--no-reload', 'preset', ...UNITS], { env: { LC_ALL: 'C' } });
  for (const unit of UNITS) {
    const r = await run('systemctl', [`--root=${scratch}`, 'is-enabled', unit], { allowFailure: true, env: { LC_ALL: 'C' } });
    assert.equal(r.stdout.trim(), 'enabled', `${unit} is enabled by the preset`);
  }
  // An absolute link into the scratch root: read it, do not follow it.
  assert.equal(readlinkSync(join(scratch, 'etc/systemd/system/network-pre.target.requires/qubes-net-base.service')), '/usr/lib/systemd/system/qubes-net-base.service', 'network-pre.target requires the base unit');
});

test('tmpfiles configuration creates the runtime directories', async () => {
  const scratch = join(work, 'tmpfiles-root');
  cpSync(join(rpmRoot, 'usr/lib/tmpfiles.d'), join(scratch, 'usr/lib/tmpfiles.d'), { recursive: true });
  await run('systemd-tmpfiles', [`--root=${scratch}`, '--create', 'qubes-net.conf']);
  assert.equal(statSync(join(scratch, 'run/qubes-net')).mode & 0o7777, 0o755);
  assert.equal(statSync(join(scratch, 'run/xen')).mode & 0o7777, 0o700);
});

test('every CLI runs from the unpacked RPM with --version and --help', async () => {
  const problems: string[] = [];
  for (const [cmd, { subcommands }] of Object.entries(CLIS)) {
    const bin = join(rpmRoot, 'usr/bin', cmd);
    const version = await run(bin, ['--version'], { allowFailure: true, env: cliEnv(), timeoutMs: 30_000 });
    if (version.exitCode !== 0) problems.push(`${cmd} --version: exit ${version.exitCode}: ${version.stderr.trim().slice(0, 300)}`);
    else if (!version.stdout.includes(WORKSPACE_VERSION)) problems.push(`${cmd} --version printed ${JSON.stringify(version.stdout.trim())}, not ${WORKSPACE_VERSION}`);
    const help = await run(bin, ['--help'], { allowFailure: true, env: cliEnv(), timeoutMs: 30_000 });
    const text = `${help.stdout}\n${help.stderr}`;
    if (help.exitCode !== 0) problems.push(`${cmd} --help: exit ${help.exitCode}: ${help.stderr.trim().slice(0, 300)}`);
    else if (!/usage/i.test(text)) problems.push(`${cmd} --help does not print a usage`);
    for (const sub of subcommands) if (help.exitCode === 0 && !text.includes(sub)) problems.push(`${cmd} --help does not mention ${sub}`);
  }
  assert.deepEqual(problems, []);
});

test('the base unit runs a subcommand the driver CLI knows', async () => {
  const base = readFileSync(join(rpmRoot, 'usr/lib/systemd/system/qubes-net-base.service'), 'utf8');
  const sub = /^ExecStart=\/usr\/bin\/qubes-net-driver (\S+)$/m.exec(base)?.[1];
  assert.ok(sub, 'qubes-net-base.service runs qubes-net-driver <subcommand>');
  const help = await run(join(rpmRoot, 'usr/bin/qubes-net-driver'), ['--help'], { allowFailure: true, env: cliEnv(), timeoutMs: 30_000 });
  assert.ok(`${help.stdout}\n${help.stderr}`.includes(sub), `qubes-net-driver --help mentions ${sub}`);
});

test('the hotplug pieces are an x86-64 executable and valid sh scripts', async () => {
  for (const client of ['qubes-net-hotplug', 'qubes-net-uplink']) {
    const elf = readFileSync(join(rpmRoot, 'usr/lib/qubes-net/native', client));
    assert.equal(elf.subarray(0, 4).toString('latin1'), '\x7fELF', `${client} is an ELF file`);
    assert.equal(elf.readUInt16LE(18), 62, `${client}: e_machine is x86-64`);
  }
  for (const script of ['etc/xen/scripts/vif-route-qubes', 'etc/qubes/post-install.d/20-qubes-net-features.sh']) {
    const text = readFileSync(join(rpmRoot, script), 'utf8');
    assert.match(text, /^#!\/bin\/sh\n/, `${script} is a POSIX sh script`);
    await run('sh', ['-n', join(rpmRoot, script)]);
  }
  const vif = readFileSync(join(rpmRoot, 'etc/xen/scripts/vif-route-qubes'), 'utf8');
  const referenced = [...new Set(vif.match(/\/usr\/\S*qubes-net-hotplug\b/g) ?? [])];
  assert.deepEqual(referenced, ['/usr/lib/qubes-net/native/qubes-net-hotplug'], 'vif-route-qubes runs the packaged hotplug client');
});

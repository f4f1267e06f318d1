#!/usr/bin/env node
// `npm run package`: builds the template packages that replace qubes-core-agent-networking, an
// RPM (rpmbuild) for Fedora templates and a .deb (dpkg-deb) for Debian templates, from the
// already built workspace (setup.mjs runs tsc -b and make first; this script builds nothing).
//
// 1. A staging tree holds the packages' exact content (paths below), with its modes:
//    /usr/lib/qubes-net/node_modules/…      the agents (dist/ + package.json) and their
//                                           production dependencies, as `npm ls` lists them;
//                                           koffi keeps only its linux_x64 binary
//    /usr/lib/qubes-net/native/qubes-net-hotplug   the C hotplug client
//    /usr/lib/qubes-net/native/qubes-net-uplink    the C uplink client (udev-started apply/remove)
//    /usr/bin/qubes-net-{guest,driver,firewall,qdb} small sh wrappers: node …/cli.js "$@"
//    /etc/xen/scripts/vif-route-qubes       the name dom0's libvirt template calls
//    /etc/qubes/post-install.d/20-qubes-net-features.sh
//    /usr/lib/udev/rules.d, /usr/lib/systemd/{system,system-preset,network}, /usr/lib/tmpfiles.d
//    /usr/share/doc/qubes-net/README.md
// 2. rpmbuild packs it with packaging/rpm/qubes-net.spec; dpkg-deb packs it with the control
//    file and maintainer scripts from packaging/debian/.
//
// Usage: node packaging/build.mjs [--out DIR] [--release N] [--only rpm|deb]
// Prints one JSON line: {"rpm": path, "deb": path, "files": n, "bytes": n}, and writes the
// same to DIR/packages.json. DIR defaults to packaging/out.
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '@qubes-net/common';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');

/** The agents a template needs; lab and netns are test/demo tools and stay out. */
const AGENT_WORKSPACES = ['@qubes-net/common', '@qubes-net/qubesdb', '@qubes-net/guest-agent', '@qubes-net/driver-agent', '@qubes-net/firewall'];

/** /usr/bin name → the workspace package whose dist/cli.js it runs. */
export const CLIS = {
  'qubes-net-guest': 'guest-agent',
  'qubes-net-driver': 'driver-agent',
  'qubes-net-firewall': 'firewall',
  'qubes-net-qdb': 'qubesdb',
};

/** The upstream version whose package name we provide (dom0 and other packages ask for it). */
const UPSTREAM_VERSION = process.env.QUBES_NET_UPSTREAM_VERSION ?? '4.4.2';

/** koffi ships prebuilt modules for many platforms; the packages are x86_64 only. */
const KOFFI_TRIPLETS = ['linux_x64'];

const LIB = 'usr/lib/qubes-net';

const say = (msg) => process.stderr.write(`[package] ${msg}\n`);

function fail(msg) {
  say(`error: ${msg}`);
  process.exit(1);
}

function parseCli() {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      release: { type: 'string' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node packaging/build.mjs [--out DIR] [--release N] [--only rpm|deb]\n');
    process.exit(0);
  }
  if (values.only && !['rpm', 'deb'].includes(values.only)) fail(`--only takes rpm or deb, not ${values.only}`);
  const release = values.release ?? process.env.QUBES_NET_PKG_RELEASE ?? '1';
  if (!/^[0-9][0-9A-Za-z.+~]*$/.test(release)) fail(`bad release ${JSON.stringify(release)}`);
  return { out: resolve(values.out ?? join(here, 'out')), release, only: values.only };
}

/** Every input the packages need, checked up front so a half-built workspace fails clearly. */
function checkInputs() {
  const needed = [
    ...Object.values(CLIS).map((pkg) => `packages/${pkg}/dist/cli.js`),
    'native-bindings/build/qubes-net-hotplug',
    'native-bindings/build/qubes-net-uplink',
    'packages/driver-agent/scripts/vif-route-qubes',
  ];
  const missing = needed.filter((p) => !existsSync(join(root, p)));
  if (missing.length) fail(`missing build outputs (run \`npm run build\` and \`make -C native-bindings\`): ${missing.join(', ')}`);
}

// ---- staging --------------------------------------------------------------------------------

class Stage {
  constructor(dir) {
    this.dir = dir;
    this.files = 0;
    this.bytes = 0;
  }
  path(rel) {
    return join(this.dir, rel);
  }
  mkdir(rel) {
    const p = this.path(rel);
    mkdirSync(p, { recursive: true, mode: 0o755 });
    return p;
  }
  /** Copies one file to `rel` with exactly `mode` (no umask surprises in the package). */
  file(src, rel, mode) {
    const dst = this.path(rel);
    mkdirSync(dirname(dst), { recursive: true, mode: 0o755 });
    copyFileSync(src, dst);
    chmodSync(dst, mode);
    this.files++;
    this.bytes += statSync(dst).size;
  }
  text(rel, content, mode) {
    const dst = this.path(rel);
    mkdirSync(dirname(dst), { recursive: true, mode: 0o755 });
    writeFileSync(dst, content);
    chmodSync(dst, mode);
    this.files++;
    this.bytes += Buffer.byteLength(content);
  }
  symlink(target, rel) {
    const dst = this.path(rel);
    mkdirSync(dirname(dst), { recursive: true, mode: 0o755 });
    symlinkSync(target, dst);
    this.files++;
  }
}

/**
 * Copies a directory tree; `keep(relPath, isDir)` decides. Files get `fileMode`, or, without
 * it, 0755/0644 after the source's exec bits.
 */
function copyTree(stage, srcDir, relDst, keep, fileMode) {
  const walk = (rel) => {
    for (const name of readdirSync(join(srcDir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const src = join(srcDir, r);
      const st = lstatSync(src);
      if (st.isDirectory()) {
        if (keep(r, true)) walk(r);
      } else if (st.isSymbolicLink()) {
        if (keep(r, false)) stage.symlink(readlinkSync(src), `${relDst}/${r}`);
      } else if (st.isFile()) {
        if (keep(r, false)) stage.file(src, `${relDst}/${r}`, fileMode ?? (st.mode & 0o111 ? 0o755 : 0o644));
      }
    }
  };
  walk('');
}

/** TypeScript (sources, declarations, type tests) and source maps help nobody on a template. */
const DEV_ONLY_FILE = /\.([cm]?ts|map|tsbuildinfo)$/;

/** A dependency's own tests, benchmarks and docs (top level only): never loaded at run time. */
const DEV_ONLY_DIR = new Set(['test', 'tests', '__tests__', 'benchmarks', 'docs', 'examples', '.github']);

/** Production dependency directories (relative to the workspace root) of the agents, from npm. */
async function productionDependencies() {
  const args = ['ls', '--omit=dev', '--all', '--parseable', ...AGENT_WORKSPACES.flatMap((w) => ['-w', w])];
  const { stdout } = await run('npm', args, { cwd: root });
  const dirs = stdout.split('\n').map((l) => l.trim()).filter(Boolean).map((p) => relative(root, p)).filter((p) => p !== '' && p.startsWith(`node_modules${sep}`));
  for (const w of AGENT_WORKSPACES) {
    if (!dirs.includes(join('node_modules', w))) fail(`npm ls did not list ${w}`);
  }
  return [...new Set(dirs)].sort();
}

function stageWorkspacePackage(stage, relDir) {
  const real = realpathSync(join(root, relDir));
  const dst = `${LIB}/${relDir.split(sep).join('/')}`;
  stage.file(join(real, 'package.json'), `${dst}/package.json`, 0o644);
  if (!existsSync(join(real, 'dist'))) fail(`${relDir} has no dist/ (build it first)`);
  // Plain 0644 whatever the build left: the wrappers in /usr/bin run these files with node.
  copyTree(stage, join(real, 'dist'), `${dst}/dist`, (r, isDir) => isDir || !DEV_ONLY_FILE.test(r), 0o644);
}

function stageThirdParty(stage, relDir) {
  const src = join(root, relDir);
  const dst = `${LIB}/${relDir.split(sep).join('/')}`;
  const isKoffi = relDir.split(sep).at(-1) === 'koffi';
  copyTree(stage, src, dst, (r, isDir) => {
    // Nested node_modules are dependencies of their own, listed (or not) by npm ls.
    if (r === 'node_modules' || r.startsWith('node_modules/')) return false;
    if (isKoffi) {
      // Only what koffi loads at run time: its JS entry points and this platform's binary.
      if (isDir) return r === 'build' || r === 'build/koffi' || KOFFI_TRIPLETS.some((t) => r === `build/koffi/${t}`);
      return r.startsWith('build/') || ['package.json', 'index.js', 'indirect.js', 'LICENSE.txt'].includes(r);
    }
    if (isDir) return r.includes('/') || !DEV_ONLY_DIR.has(r);
    return !DEV_ONLY_FILE.test(r);
  });
}

function wrapper(cmd, pkg) {
  return `#!/bin/sh
# ${cmd}: runs the qubes-net ${pkg} with the system's Node.js (>= 20). The path is taken
# relative to this script, so an unpacked copy of the package runs its own files.
here=$(dirname "$(readlink -f "$0")")
exec node "$here/../lib/qubes-net/node_modules/@qubes-net/${pkg}/dist/cli.js" "$@"
`;
}

async function buildStage(stageDir) {
  rmSync(stageDir, { recursive: true, force: true });
  const stage = new Stage(stageDir);
  stage.mkdir(LIB);

  for (const dep of await productionDependencies()) {
    if (dep.startsWith(join('node_modules', '@qubes-net') + sep)) stageWorkspacePackage(stage, dep);
    else stageThirdParty(stage, dep);
  }
  // Only the template's packages: the resolution root must not be mistaken for a workspace.
  stage.text(`${LIB}/package.json`, `${JSON.stringify({ name: 'qubes-net-runtime', version: rootVersion(), private: true, type: 'module' }, null, 2)}\n`, 0o644);

  stage.file(join(root, 'native-bindings/build/qubes-net-hotplug'), `${LIB}/native/qubes-net-hotplug`, 0o755);
  stage.file(join(root, 'native-bindings/build/qubes-net-uplink'), `${LIB}/native/qubes-net-uplink`, 0o755);
  for (const [cmd, pkg] of Object.entries(CLIS)) stage.text(`usr/bin/${cmd}`, wrapper(cmd, pkg), 0o755);

  stage.file(join(root, 'packages/driver-agent/scripts/vif-route-qubes'), 'etc/xen/scripts/vif-route-qubes', 0o755);
  stage.file(join(here, 'qubes/20-qubes-net-features.sh'), 'etc/qubes/post-install.d/20-qubes-net-features.sh', 0o755);
  stage.file(join(here, 'udev/99-qubes-network.rules'), 'usr/lib/udev/rules.d/99-qubes-network.rules', 0o644);
  for (const unit of readdirSync(join(here, 'systemd')).filter((f) => f.endsWith('.service')).sort()) {
    stage.file(join(here, 'systemd', unit), `usr/lib/systemd/system/${unit}`, 0o644);
  }
  stage.file(join(here, 'systemd/70-qubes-net.preset'), 'usr/lib/systemd/system-preset/70-qubes-net.preset', 0o644);
  stage.file(join(here, 'systemd/80-qubes-vif.link'), 'usr/lib/systemd/network/80-qubes-vif.link', 0o644);
  stage.file(join(here, 'systemd/qubes-net.tmpfiles'), 'usr/lib/tmpfiles.d/qubes-net.conf', 0o644);
  stage.file(join(here, 'README.md'), 'usr/share/doc/qubes-net/README.md', 0o644);
  return stage;
}

function rootVersion() {
  const v = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
  if (!/^[0-9]+\.[0-9]+\.[0-9]+$/.test(v)) fail(`root package.json version ${JSON.stringify(v)} is not x.y.z`);
  return v;
}

// ---- RPM ------------------------------------------------------------------------------------

async function buildRpm(stage, out, version, release) {
  const top = join(out, 'rpmbuild');
  rmSync(top, { recursive: true, force: true });
  for (const d of ['BUILD', 'BUILDROOT', 'RPMS', 'SOURCES', 'SPECS', 'SRPMS', 'tmp']) mkdirSync(join(top, d), { recursive: true });
  const defines = {
    _topdir: top,
    _tmppath: join(top, 'tmp'),
    qn_version: version,
    qn_release: release,
    qn_stage: stage.dir,
    qn_upstream_version: UPSTREAM_VERSION,
  };
  const args = ['-bb', '--nodeps', '--quiet', ...Object.entries(defines).flatMap(([k, v]) => ['--define', `${k} ${v}`]), join(here, 'rpm/qubes-net.spec')];
  const { stderr } = await run('rpmbuild', args, { cwd: top, env: { LC_ALL: 'C' } });
  for (const line of stderr.split('\n').filter((l) => /warning|error/i.test(l))) say(`rpmbuild: ${line.trim()}`);
  const built = join(top, 'RPMS', 'x86_64', `qubes-net-${version}-${release}.x86_64.rpm`);
  if (!existsSync(built)) fail(`rpmbuild did not produce ${built}`);
  const dst = join(out, `qubes-net-${version}-${release}.x86_64.rpm`);
  renameSync(built, dst);
  rmSync(top, { recursive: true, force: true });
  return dst;
}

// ---- .deb -----------------------------------------------------------------------------------

function walkFiles(dir, rel = '') {
  const out = [];
  for (const name of readdirSync(join(dir, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(dir, r));
    if (st.isDirectory()) out.push(...walkFiles(dir, r));
    else out.push({ rel: r, st });
  }
  return out;
}

async function buildDeb(stage, out, version, release) {
  const debian = stage.mkdir('DEBIAN');
  try {
    const files = walkFiles(stage.dir).filter((f) => !f.rel.startsWith('DEBIAN/'));
    // Installed-Size in KiB, as dpkg counts it (one block per file at least).
    const kib = files.reduce((sum, f) => sum + Math.max(1, Math.ceil(f.st.size / 1024)), 0);
    const control = readFileSync(join(here, 'debian/control.in'), 'utf8')
      .replaceAll('@VERSION@', `${version}-${release}`)
      .replaceAll('@INSTALLED_SIZE@', String(kib))
      .replaceAll('@UPSTREAM_VERSION@', UPSTREAM_VERSION);
    if (/@[A-Z_]+@/.test(control)) fail('debian/control.in has an unknown @PLACEHOLDER@');
    writeFileSync(join(debian, 'control'), control);
    chmodSync(join(debian, 'control'), 0o644);
    const sums = files.filter((f) => f.st.isFile()).map((f) => `${createHash('md5').update(readFileSync(join(stage.dir, f.rel))).digest('hex')}  ${f.rel}\n`);
    writeFileSync(join(debian, 'md5sums'), sums.join(''));
    chmodSync(join(debian, 'md5sums'), 0o644);
    for (const script of ['postinst', 'prerm', 'postrm']) {
      copyFileSync(join(here, 'debian', script), join(debian, script));
      chmodSync(join(debian, script), 0o755);
    }
    const dst = join(out, `qubes-net_${version}-${release}_amd64.deb`);
    const { stderr } = await run('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '--build', stage.dir, dst], { env: { LC_ALL: 'C' } });
    for (const line of stderr.split('\n').filter((l) => l.trim())) say(`dpkg-deb: ${line.trim()}`);
    return dst;
  } finally {
    rmSync(debian, { recursive: true, force: true });
  }
}

// ---- main -----------------------------------------------------------------------------------

async function main() {
  const { out, release, only } = parseCli();
  checkInputs();
  const version = rootVersion();
  mkdirSync(out, { recursive: true });
  const stage = await buildStage(join(out, 'stage'));
  say(`staged ${stage.files} files (${(stage.bytes / 1048576).toFixed(1)} MiB) in ${stage.dir}`);
  const result = { version: `${version}-${release}`, rpm: null, deb: null, files: stage.files, bytes: stage.bytes };
  if (only !== 'deb') {
    result.rpm = await buildRpm(stage, out, version, release);
    say(`built ${result.rpm}`);
  }
  if (only !== 'rpm') {
    result.deb = await buildDeb(stage, out, version, release);
    say(`built ${result.deb}`);
  }
  rmSync(stage.dir, { recursive: true, force: true });
  writeFileSync(join(out, 'packages.json'), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => fail(err instanceof Error ? err.message : String(err)));
}

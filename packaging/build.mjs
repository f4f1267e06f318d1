#!/usr/bin/env node
// `npm run package`: builds the template packages, an RPM (rpmbuild) for Fedora templates and a
// .deb (dpkg-deb) for Debian templates, from the already built workspace (setup.mjs runs tsc -b
// and make first; this script builds nothing but the base ruleset files).
//
// The packages are an overlay on upstream's qubes-core-agent-networking, which they depend on:
// upstream's units keep their names and get drop-ins, the paths callers run by name
// (overlay/diversions.txt) become our dispatcher while upstream's files move aside, and each qube
// chooses at boot between our agents and upstream's (overlay/qubes-net-choice). See README.md.
//
// 1. A staging tree holds the packages' exact content, with its modes:
//    /usr/lib/qubes-net/node_modules/…      the agents (dist/ + package.json) and their
//                                           production dependencies, as `npm ls` lists them;
//                                           koffi keeps only its linux_x64 binary
//    /usr/lib/qubes-net/native/             the C helpers (hotplug client, watcher), stripped
//    /usr/lib/qubes-net/nft/                the base rulesets, rendered at build time
//    /usr/lib/qubes-net/qubes-net-{choice,dispatch,overlay}, overlay/   the per-qube switch
//    /usr/lib/qubes-net/vif-route-qubes     our hotplug script (the dispatcher's "ours")
//    /usr/bin/qubes-net-*                   small sh wrappers: node …/cli.js "$@"
//    /usr/lib/systemd/system/…              our units, and drop-ins for upstream's
//    /etc/qubes-net/qubes-net.conf          the template-wide default (conffile)
//    /etc/qubes/post-install.d/20-qubes-net-features.sh   advertises the qubes-net service
// 2. rpmbuild packs it with packaging/rpm/qubes-net.spec; dpkg-deb packs it with the control
//    file and maintainer scripts from packaging/debian/.
//
// Usage: node packaging/build.mjs [--out DIR] [--release N] [--only rpm|deb] [--allow-missing]
// --allow-missing: parts other jobs build this round (network agent, C watcher, base rulesets)
// may be absent; each is replaced by a stub that fails with a clear message, and
// packages.json lists them under "missing". Without it a missing part fails the build.
// Prints one JSON line: {"rpm": path, "deb": path, "files": n, "bytes": n, "missing": []}, and
// writes the same to DIR/packages.json. DIR defaults to packaging/out.
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '@qubes-net/common';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');

/** The agents a template needs; lab and netns are test/demo tools and stay out. */
const AGENT_WORKSPACES = ['@qubes-net/common', '@qubes-net/qubesdb', '@qubes-net/guest-agent', '@qubes-net/driver-agent', '@qubes-net/firewall'];
/** The network agent (driver + firewall in one process), built by the agent job this round. */
const NETWORK_AGENT = '@qubes-net/network-agent';

/** /usr/bin name → the workspace package whose dist/cli.js it runs. */
export const CLIS = {
  'qubes-net-guest': 'guest-agent',
  'qubes-net-agent': 'network-agent',
  'qubes-net-driver': 'driver-agent',
  'qubes-net-firewall': 'firewall',
  'qubes-net-qdb': 'qubesdb',
};

/**
 * One-shot CLIs bundled into one file by scripts/bundle.mjs (a cold start reads one file, not
 * dozens of modules): /usr/bin name → the bundle, relative to its workspace package. Used when
 * the build made it; otherwise the wrapper runs dist/cli.js.
 */
const BUNDLES = {
  'qubes-net-guest': 'bundle/qubes-net-guest.cjs',
  'qubes-net-qdb': 'bundle/qubes-net-qdb.cjs',
  // The bundle's launcher, which keeps a V8 code cache in the unit's CacheDirectory=.
  'qubes-net-agent': 'bundle/qubes-net-agent-cached.cjs',
};

/** C helpers: workspace build output → /usr/lib/qubes-net/native name. */
const NATIVE = ['qubes-net-hotplug', 'qubes-net-watch'];

/**
 * Parts other jobs deliver this round: what provides each. Without --allow-missing their absence
 * fails the build; with it each becomes a stub that says what is missing.
 */
const LATE_PARTS = {
  'packages/network-agent/dist/cli.js': 'the agent job (packages/network-agent)',
  'native-bindings/build/qubes-net-watch': 'the guest job (native-bindings/src/watch.c)',
  'packages/driver-agent/scripts/render-base.mjs': 'the driver job (scripts/render-base.mjs OUTDIR)',
};

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
      'allow-missing': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node packaging/build.mjs [--out DIR] [--release N] [--only rpm|deb] [--allow-missing]\n');
    process.exit(0);
  }
  if (values.only && !['rpm', 'deb'].includes(values.only)) fail(`--only takes rpm or deb, not ${values.only}`);
  const release = values.release ?? process.env.QUBES_NET_PKG_RELEASE ?? '1';
  if (!/^[0-9][0-9A-Za-z.+~]*$/.test(release)) fail(`bad release ${JSON.stringify(release)}`);
  return { out: resolve(values.out ?? join(here, 'out')), release, only: values.only, allowMissing: values['allow-missing'] === true };
}

/**
 * Every input the packages need, checked up front so a half-built workspace fails clearly.
 * Returns the late parts that are missing (only possible with allowMissing).
 */
function checkInputs(allowMissing) {
  const needed = [
    ...Object.entries(CLIS).filter(([, pkg]) => pkg !== 'network-agent').map(([, pkg]) => `packages/${pkg}/dist/cli.js`),
    'native-bindings/build/qubes-net-hotplug',
    'packages/driver-agent/scripts/vif-route-qubes',
  ];
  const missing = needed.filter((p) => !existsSync(join(root, p)));
  if (missing.length) fail(`missing build outputs (run \`npm run build\` and \`make -C native-bindings\`): ${missing.join(', ')}`);
  const late = Object.keys(LATE_PARTS).filter((p) => !existsSync(join(root, p)));
  if (late.length && !allowMissing) {
    fail(`missing parts of this round (or pass --allow-missing for stubs): ${late.map((p) => `${p} from ${LATE_PARTS[p]}`).join('; ')}`);
  }
  for (const p of late) say(`warning: ${p} is missing (${LATE_PARTS[p]}): the package gets a stub`);
  return late;
}

/** The diverted upstream paths and their dispatcher roles (overlay/diversions.txt). */
export function diversions() {
  return readFileSync(join(here, 'overlay/diversions.txt'), 'utf8').split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'))
    .map((l) => {
      const [path, role] = l.trim().split(/\s+/);
      if (!/^\/[a-z0-9/._-]+$/.test(path ?? '') || !/^[a-z-]+$/.test(role ?? '')) fail(`bad line in overlay/diversions.txt: ${l}`);
      return { path, role };
    });
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
  const workspaces = [...AGENT_WORKSPACES, ...(existsSync(join(root, 'node_modules', NETWORK_AGENT)) ? [NETWORK_AGENT] : [])];
  const args = ['ls', '--omit=dev', '--all', '--parseable', ...workspaces.flatMap((w) => ['-w', w])];
  const { stdout } = await run('npm', args, { cwd: root });
  const dirs = stdout.split('\n').map((l) => l.trim()).filter(Boolean).map((p) => relative(root, p)).filter((p) => p !== '' && p.startsWith(`node_modules${sep}`));
  for (const w of workspaces) {
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
  if (existsSync(join(real, 'bundle'))) copyTree(stage, join(real, 'bundle'), `${dst}/bundle`, (r, isDir) => isDir || /\.c?js$/.test(r), 0o644);
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
    // Dot files (.npmignore, .gitattributes) and HTML doc pages are for the npm registry.
    const base = r.split('/').at(-1);
    return !DEV_ONLY_FILE.test(r) && !base.startsWith('.') && !base.endsWith('.html');
  });
}

function wrapper(cmd, pkg) {
  const entry = BUNDLES[cmd] && existsSync(join(root, 'packages', pkg, BUNDLES[cmd])) ? BUNDLES[cmd] : 'dist/cli.js';
  return `#!/bin/sh
# ${cmd}: runs the qubes-net ${pkg} with the system's Node.js (>= 20). The path is taken
# relative to this script, so an unpacked copy of the package runs its own files.
# QUBES_NET_NODE_FLAGS: V8 flags a unit sets, given on the command line (some flags are
# refused in NODE_OPTIONS).
here=$(dirname "$(readlink -f "$0")")
set -f
# shellcheck disable=SC2086
exec node \${QUBES_NET_NODE_FLAGS:-} "$here/../lib/qubes-net/node_modules/@qubes-net/${pkg}/${entry}" "$@"
`;
}

/** Stands in for a part this build did not have (--allow-missing): fails, saying what and why. */
function stub(what, by) {
  return `#!/bin/sh
echo "qubes-net: this package was built without ${what} (from ${by}); rebuild it with every part" >&2
exit 70
`;
}

/** A diverted path's content: hand over to the dispatcher with this path's role. */
function dispatcherEntry(role) {
  return `#!/bin/sh
# qubes-net overlay: upstream's file is PATH.qubes-upstream; the dispatcher runs it or ours,
# after this qube's choice (/run/qubes-net/choice).
exec /usr/lib/qubes-net/qubes-net-dispatch ${role} "$@"
`;
}

/** ELF files lose symbols and notes, as dh_strip does (lintian: unstripped-binary-or-object). */
async function strip(file) {
  await run('strip', ['--strip-unneeded', '--remove-section=.comment', '--remove-section=.note', file]);
}

/** Arguments for a unit's ExecStart, an option and its value per line, the command after `--` on one. */
function unitArgLines(args) {
  const lines = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--') {
      lines[lines.length - 1] += ` -- ${args.slice(i + 1).join(' ')}`;
      break;
    }
    if (args[i].startsWith('--') && i + 1 < args.length && !args[i + 1].startsWith('--')) lines.push(`${args[i]} ${args[++i]}`);
    else lines.push(args[i]);
  }
  return lines.join(' \\\n    ');
}

/** What an argument in a unit's ExecStart or in agent-watch.args may be: no quoting needed. */
const PLAIN_ARG = /^[A-Za-z0-9_./@%:=+-]+$/;

/**
 * The C watcher's arguments, from the agents' own watch-args (one list of keys, kept by the
 * agents): the uplink's for qubes-net-uplink-watch@.service (instance %i), the network agent's
 * for agent-watch.args, which the dispatcher reads. Under systemd the agent's socket belongs to
 * qubes-net-agent.socket, so the watcher notifies it (--notify) instead of activating the agent
 * itself (--activate), and asks for one sync at start (boot, or a restart of the unit). The
 * network qube's file carries its uplink's group too (one watcher process per qube).
 */
async function watchArguments(late) {
  const guest = await import(join(root, 'packages/guest-agent/dist/model/watch-args.js'));
  const uplink = guest.watchArgs('%i', { cli: ['/usr/bin/qubes-net-guest'] });
  let agent;
  if (late.includes('packages/network-agent/dist/cli.js')) {
    agent = ['--run-at-start', '--notify', '/run/qubes-net/agent.sock'];
  } else {
    const net = await import(join(root, 'packages/network-agent/dist/watch-args.js'));
    agent = ['--run-at-start', ...net.agentWatchArgs({ cli: ['/usr/bin/qubes-net-agent'], mode: 'notify' })];
    if (agent.includes('--activate') || agent.at(-2) !== '--notify') fail(`agentWatchArgs({ mode: 'notify' }) gave ${agent.join(' ')}`);
  }
  // A network qube runs one watcher (docs/runtime-shape.md): the agent's group and its own
  // uplink's (eth0, as upstream names a network qube's uplink; without a netvm it has no eth0 and
  // no /qubes-ip, so that group never fires), so qubes-net-uplink-watch@ stands down there.
  const uplinkGroup = guest.watchArgs('eth0', { cli: ['/usr/bin/qubes-net-guest'] });
  if (uplinkGroup.includes('--group') || agent.includes('--group')) fail('a watch group cannot contain the argument --group');
  agent = [...agent, '--group', ...uplinkGroup];
  for (const a of [...uplink, ...agent]) if (!PLAIN_ARG.test(a)) fail(`watcher argument ${JSON.stringify(a)} would need quoting in a unit`);
  return { uplink, agent };
}

/** The base rulesets: the driver's render-base.mjs writes them into DIR at build time. */
async function stageBaseRulesets(stage, late) {
  const script = join(root, 'packages/driver-agent/scripts/render-base.mjs');
  const dir = stage.mkdir(`${LIB}/nft`);
  if (late.includes('packages/driver-agent/scripts/render-base.mjs')) return;
  await run(process.execPath, [script, dir], { cwd: root });
  const files = readdirSync(dir).filter((f) => f.endsWith('.nft'));
  if (!files.includes('base-ipv4.nft') || !files.includes('base-dual.nft')) fail(`render-base.mjs wrote ${files.join(', ') || 'nothing'}, not base-ipv4.nft and base-dual.nft`);
  for (const f of readdirSync(dir)) {
    chmodSync(join(dir, f), 0o644);
    stage.files++;
  }
}

async function buildStage(stageDir, late) {
  rmSync(stageDir, { recursive: true, force: true });
  const stage = new Stage(stageDir);
  stage.mkdir(LIB);

  for (const dep of await productionDependencies()) {
    if (dep.startsWith(join('node_modules', '@qubes-net') + sep)) stageWorkspacePackage(stage, dep);
    else stageThirdParty(stage, dep);
  }
  // Only the template's packages: the resolution root must not be mistaken for a workspace.
  stage.text(`${LIB}/package.json`, `${JSON.stringify({ name: 'qubes-net-runtime', version: rootVersion(), private: true, type: 'module' }, null, 2)}\n`, 0o644);
  for (const f of walkFiles(stage.path(LIB)).filter((f) => f.rel.endsWith('.node'))) await strip(stage.path(`${LIB}/${f.rel}`));

  for (const name of NATIVE) {
    const src = join(root, 'native-bindings/build', name);
    if (existsSync(src)) {
      stage.file(src, `${LIB}/native/${name}`, 0o755);
      await strip(stage.path(`${LIB}/native/${name}`));
    } else {
      stage.text(`${LIB}/native/${name}`, stub(name, LATE_PARTS[`native-bindings/build/${name}`]), 0o755);
    }
  }
  for (const [cmd, pkg] of Object.entries(CLIS)) {
    const built = existsSync(join(root, 'packages', pkg, 'dist/cli.js'));
    stage.text(`usr/bin/${cmd}`, built ? wrapper(cmd, pkg) : stub(cmd, LATE_PARTS[`packages/${pkg}/dist/cli.js`]), 0o755);
  }
  await stageBaseRulesets(stage, late);

  // The per-qube switch and the overlay on upstream's paths.
  for (const script of ['qubes-net-choice', 'qubes-net-dispatch', 'qubes-net-overlay']) {
    stage.file(join(here, 'overlay', script), `${LIB}/${script}`, 0o755);
  }
  stage.file(join(here, 'overlay/diversions.txt'), `${LIB}/overlay/diversions.txt`, 0o644);
  for (const { path, role } of diversions()) stage.text(`${LIB}/overlay/${path.split('/').at(-1)}`, dispatcherEntry(role), 0o755);
  stage.file(join(root, 'packages/driver-agent/scripts/vif-route-qubes'), `${LIB}/vif-route-qubes`, 0o755);
  stage.file(join(here, 'overlay/qubes-net.conf'), 'etc/qubes-net/qubes-net.conf', 0o644);
  stage.file(join(here, 'qubes/20-qubes-net-features.sh'), 'etc/qubes/post-install.d/20-qubes-net-features.sh', 0o755);

  const watch = await watchArguments(late);
  stage.text(`${LIB}/agent-watch.args`, watch.agent.map((a) => `${a}\n`).join(''), 0o644);
  for (const unit of readdirSync(join(here, 'systemd')).filter((f) => /\.(service|socket)$/.test(f)).sort()) {
    const text = readFileSync(join(here, 'systemd', unit), 'utf8').replaceAll('@UPLINK_WATCH_ARGS@', unitArgLines(watch.uplink));
    if (/@[A-Z_]+@/.test(text)) fail(`systemd/${unit} has an unknown @PLACEHOLDER@`);
    stage.text(`usr/lib/systemd/system/${unit}`, text, 0o644);
  }
  for (const dir of readdirSync(join(here, 'systemd/dropins')).sort()) {
    for (const conf of readdirSync(join(here, 'systemd/dropins', dir)).sort()) {
      stage.file(join(here, 'systemd/dropins', dir, conf), `usr/lib/systemd/system/${dir}/${conf}`, 0o644);
    }
  }
  stage.file(join(here, 'systemd/70-qubes-net.preset'), 'usr/lib/systemd/system-preset/70-qubes-net.preset', 0o644);
  stage.file(join(here, 'systemd/qubes-net.tmpfiles'), 'usr/lib/tmpfiles.d/qubes-net.conf', 0o644);
  stage.file(join(here, 'README.md'), 'usr/share/doc/qubes-net/README.md', 0o644);
  stage.file(join(here, 'debian/copyright'), 'usr/share/doc/qubes-net/copyright', 0o644);
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

/** Files under /etc the .deb ships: conffiles (kept on remove, gone on purge). */
const CONFFILES = ['/etc/qubes-net/qubes-net.conf', '/etc/qubes/post-install.d/20-qubes-net-features.sh'];

/** libc and whatever else the ELF files need, as dpkg-shlibdeps computes it for Depends. */
async function shlibDepends(stage) {
  const elves = walkFiles(stage.dir).filter((f) => f.st.isFile() && readFileSync(stage.path(f.rel)).subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])));
  const tmp = join(stage.dir, '..', 'shlibdeps');
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, 'debian'), { recursive: true });
  writeFileSync(join(tmp, 'debian/control'), 'Source: qubes-net\n\nPackage: qubes-net\nArchitecture: amd64\n');
  try {
    const { stdout } = await run('dpkg-shlibdeps', ['-O', ...elves.map((f) => stage.path(f.rel))], { cwd: tmp, env: { LC_ALL: 'C' } });
    const m = /shlibs:Depends=(.*)/.exec(stdout);
    if (!m) fail(`dpkg-shlibdeps printed no shlibs:Depends: ${stdout}`);
    return m[1].trim();
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

async function buildDeb(stage, out, version, release) {
  // Debian wants its changelog in the package's doc directory, compressed.
  const changelog = readFileSync(join(here, 'debian/changelog.in'), 'utf8').replaceAll('@VERSION@', `${version}-${release}`);
  stage.text('usr/share/doc/qubes-net/changelog.Debian.gz', '', 0o644);
  writeFileSync(stage.path('usr/share/doc/qubes-net/changelog.Debian.gz'), gzipSync(changelog, { level: 9 }));
  const debian = stage.mkdir('DEBIAN');
  try {
    const files = walkFiles(stage.dir).filter((f) => !f.rel.startsWith('DEBIAN/'));
    // Installed-Size in KiB, as dpkg counts it (one block per file at least).
    const kib = files.reduce((sum, f) => sum + Math.max(1, Math.ceil(f.st.size / 1024)), 0);
    const control = readFileSync(join(here, 'debian/control.in'), 'utf8')
      .replaceAll('@VERSION@', `${version}-${release}`)
      .replaceAll('@INSTALLED_SIZE@', String(kib))
      .replaceAll('@SHLIBS@', await shlibDepends(stage));
    if (/@[A-Z_]+@/.test(control)) fail('debian/control.in has an unknown @PLACEHOLDER@');
    writeFileSync(join(debian, 'control'), control);
    chmodSync(join(debian, 'control'), 0o644);
    const sums = files.filter((f) => f.st.isFile()).map((f) => `${createHash('md5').update(readFileSync(join(stage.dir, f.rel))).digest('hex')}  ${f.rel}\n`);
    writeFileSync(join(debian, 'md5sums'), sums.join(''));
    chmodSync(join(debian, 'md5sums'), 0o644);
    for (const c of CONFFILES) if (!existsSync(stage.path(c.slice(1)))) fail(`conffile ${c} is not in the package`);
    writeFileSync(join(debian, 'conffiles'), CONFFILES.map((c) => `${c}\n`).join(''));
    chmodSync(join(debian, 'conffiles'), 0o644);
    const diverted = diversions().map((d) => d.path).join(' ');
    for (const script of ['preinst', 'postinst', 'prerm', 'postrm']) {
      writeFileSync(join(debian, script), readFileSync(join(here, 'debian', script), 'utf8').replaceAll('@DIVERTED@', diverted));
      chmodSync(join(debian, script), 0o755);
    }
    const dst = join(out, `qubes-net_${version}-${release}_amd64.deb`);
    const { stderr } = await run('dpkg-deb', ['--root-owner-group', '-Zxz', '-z6', '--build', stage.dir, dst], { env: { LC_ALL: 'C' } });
    for (const line of stderr.split('\n').filter((l) => l.trim())) say(`dpkg-deb: ${line.trim()}`);
    return dst;
  } finally {
    rmSync(debian, { recursive: true, force: true });
  }
}

// ---- main -----------------------------------------------------------------------------------

async function main() {
  const { out, release, only, allowMissing } = parseCli();
  const late = checkInputs(allowMissing);
  const version = rootVersion();
  mkdirSync(out, { recursive: true });
  const stage = await buildStage(join(out, 'stage'), late);
  say(`staged ${stage.files} files (${(stage.bytes / 1048576).toFixed(1)} MiB) in ${stage.dir}`);
  const result = { version: `${version}-${release}`, rpm: null, deb: null, files: stage.files, bytes: stage.bytes, missing: late };
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

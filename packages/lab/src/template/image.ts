// The template image: the Debian 13 root with our .deb installed by apt, as a user installs it
// into a template, plus the stand-ins for what a Qubes template has and Debian lacks, packaged
// as .debs too so apt resolves our package's dependencies the same way:
//   - `libqubesdb`: native-bindings' libqubesdb.so (upstream's ABI) at /usr/lib/libqubesdb.so;
//   - `xenstore-utils`: the lab's file-backed xenstore-read/-write/-rm/-exists, which read
//     /run/qubes-net-xenstore (the lab binds each qube's fake xenstore there).
// Cached like the base root, keyed by the base root and the bytes of every .deb installed.
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '@qubes-net/common';
import { DEBIAN_13, ensureCachedRoot, ensureDebianRoot, hashKey, removeTree, type CachedRoot, type DebianRootSpec, type RootLog } from './root.js';

/** This checkout's root (dist/template → lab → packages → root). */
export const CHECKOUT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

const STANDIN_VERSION = '4.2.0-99qubesnetlab1';

/** Environment every systemd-nspawn call needs on this kernel (cgroup v1 host, see README). */
export function nspawnEnv(): Record<string, string> {
  // SYSTEMD_NSPAWN_LOCK=0: no lock files under /run/systemd/nspawn/locks (named by inode, so
  // nothing could remove them by name afterwards); the lab's instance names are unique anyway.
  return { SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1', SYSTEMD_NSPAWN_API_VFS_WRITABLE: 'network', SYSTEMD_NSPAWN_LOCK: '0' };
}

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

interface StandinFile {
  from: string;
  to: string;
  mode: number;
}

/** Builds one stand-in .deb with dpkg-deb into OUTDIR and returns its path. */
async function buildStandin(outDir: string, name: string, description: string, files: StandinFile[], extra: string[] = []): Promise<string> {
  const stage = join(outDir, `${name}.stage`);
  await removeTree(stage);
  mkdirSync(join(stage, 'DEBIAN'), { recursive: true });
  for (const f of files) {
    const dest = join(stage, f.to);
    mkdirSync(dirname(dest), { recursive: true });
    copyFileSync(f.from, dest);
    chmodSync(dest, f.mode);
  }
  writeFileSync(join(stage, 'DEBIAN', 'control'), [
    `Package: ${name}`,
    `Version: ${STANDIN_VERSION}`,
    'Architecture: amd64',
    'Maintainer: qubes-net lab <qubes-net@localhost>',
    ...extra,
    `Description: ${description}`,
    ' Built by qubes-net-lab for its booted templates; not for real Qubes systems.',
    '',
  ].join('\n'));
  const deb = join(outDir, `${name}_${STANDIN_VERSION}_amd64.deb`);
  // --root-owner-group: files owned by root whoever builds; -Zgzip: fast, and any dpkg reads it.
  await run('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', stage, deb]);
  await removeTree(stage);
  return deb;
}

interface StandinSpec {
  name: string;
  description: string;
  files: StandinFile[];
}

/** The stand-in packages and the checkout files they are made of. */
function standinSpecs(): StandinSpec[] {
  const nsBin = join(CHECKOUT, 'packages', 'netns', 'bin');
  return [
    // packaging's stand-ins include libqubesdb (with this same library) when they exist.
    ...(existsSync(PACKAGING_STANDINS) ? [] : [{ name: 'libqubesdb', description: 'QubesDB client library (qubes-net stand-in)',
      files: [{ from: join(CHECKOUT, 'native-bindings', 'build', 'libqubesdb.so'), to: 'usr/lib/libqubesdb.so', mode: 0o644 }] }]),
    { name: 'xenstore-utils', description: 'file-backed xenstore tools (qubes-net lab stand-in)',
      files: ['xenstore-read', 'xenstore-write', 'xenstore-rm', 'xenstore-exists', 'qn-xenstore-lib'].map((n) => ({ from: join(nsBin, n), to: `usr/bin/${n}`, mode: 0o755 })) },
  ];
}

/**
 * packaging's stand-ins for the Qubes packages a Debian template has (qubes-core-agent-networking
 * and what it depends on, upstream's names and paths), which our overlay package depends on.
 */
export const PACKAGING_STANDINS = join(CHECKOUT, 'packaging', 'standins', 'build.mjs');

/** What the stand-ins are made of, for the cache key (built .debs differ by their mtimes). */
function standinsFingerprint(): unknown {
  const packaging = existsSync(PACKAGING_STANDINS)
    ? [sha256File(PACKAGING_STANDINS), sha256File(join(CHECKOUT, 'native-bindings', 'build', 'libqubesdb.so'))]
    : null;
  return [STANDIN_VERSION, packaging, standinSpecs().map((s) => [s.name, s.files.map((f) => [f.to, f.mode, sha256File(f.from)])])];
}

/** Builds the stand-in packages (the lab's, then packaging's when present) into OUTDIR. */
export async function buildStandins(outDir: string): Promise<string[]> {
  mkdirSync(outDir, { recursive: true });
  const debs: string[] = [];
  for (const s of standinSpecs()) debs.push(await buildStandin(outDir, s.name, s.description, s.files));
  if (existsSync(PACKAGING_STANDINS)) {
    const r = await run(process.execPath, [PACKAGING_STANDINS, '--out', join(outDir, 'packaging')], { cwd: CHECKOUT, timeoutMs: 120_000 });
    const built = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { debs: Record<string, string> };
    debs.push(...Object.values(built.debs));
  }
  return debs;
}

/**
 * What a .deb installs, without the build's timestamps: every rebuild of an unchanged checkout
 * gives another file (mtimes), and must still find the cached image.
 */
export async function debFingerprint(deb: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'qubes-net-tlab-debfp-'));
  try {
    await run('dpkg-deb', ['-R', deb, dir]);
    const h = createHash('sha256');
    const walk = (rel: string): void => {
      for (const name of readdirSync(join(dir, rel)).sort()) {
        const p = join(rel, name);
        const st = lstatSync(join(dir, p));
        h.update(`${p}\0${st.mode}\0`);
        if (st.isDirectory()) walk(p);
        else if (st.isSymbolicLink()) h.update(readlinkSync(join(dir, p)));
        else h.update(readFileSync(join(dir, p)));
        h.update('\0');
      }
    };
    walk('.');
    return h.digest('hex');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface TemplateImage extends CachedRoot {
  /** The .debs installed, by file name. */
  debs: string[];
}

export interface TemplateImageOptions {
  /** Our package (packaging's `npm run package` output). */
  deb: string;
  base?: DebianRootSpec;
  log?: RootLog;
  /** Where the stand-in .debs are built (default next to the temporary tree, then removed). */
  workDir?: string;
}

/**
 * The Debian 13 template with qubes-net installed: base root (cached), stand-ins and our .deb
 * installed with apt inside a non-booted container (so maintainer scripts run as on a template).
 */
export async function ensureTemplateImage(opts: TemplateImageOptions): Promise<TemplateImage> {
  const log = opts.log ?? (() => {});
  const base = await ensureDebianRoot(opts.base ?? DEBIAN_13, log);
  const deb = resolve(opts.deb);
  const key = hashKey([base.key, standinsFingerprint(), await debFingerprint(deb)]);
  const names = [...standinSpecs().map((s) => s.name), ...(existsSync(PACKAGING_STANDINS) ? ['packaging stand-ins'] : []), basename(deb)];
  const image = await ensureCachedRoot(`template-debian-13-${key}`, log, async (tmp) => {
    const workDir = opts.workDir ?? `${tmp}.standins`;
    const debs = [...(await buildStandins(workDir)), deb];
    log('template image: copying the base root', { base: base.dir });
    await run('cp', ['--reflink=auto', '-a', '--', `${base.dir}/.`, tmp]);
    const inRoot = join(tmp, 'var', 'cache', 'qubes-net-lab-debs');
    mkdirSync(inRoot, { recursive: true });
    for (const d of debs) copyFileSync(d, join(inRoot, basename(d)));
    // A template has no resolver of the build host; each qube's agents write their own.
    writeFileSync(join(tmp, 'etc', 'resolv.conf'), '');
    const inside = readdirSync(inRoot).map((n) => `/var/cache/qubes-net-lab-debs/${n}`);
    log('template image: apt-get install', { debs: inside });
    const r = await run('systemd-nspawn', ['--register=no', '--keep-unit', '--quiet', '--private-network', '--resolv-conf=off', '-D', tmp, '--',
      'apt-get', 'install', '-y', '--no-install-recommends', '-o', 'Dpkg::Use-Pty=0', ...inside], {
      env: { ...nspawnEnv(), DEBIAN_FRONTEND: 'noninteractive' }, allowFailure: true, timeoutMs: 10 * 60_000,
    });
    if (r.exitCode !== 0) throw new Error(`apt-get install of ${debs.map((d) => basename(d)).join(', ')} in the template failed (exit ${r.exitCode}): ${r.stderr.trim().slice(-2000) || r.stdout.trim().slice(-2000)}`);
    await removeTree(inRoot);
    if (!opts.workDir) await removeTree(workDir);
  }, { base: base.key, debs: names });
  return { ...image, debs: names };
}

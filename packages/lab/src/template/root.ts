// The template root: a Debian 13 (trixie) system built with debootstrap from Debian's own
// packages, cached under /var/cache/qubes-net-lab so that it is built once and reused while the
// package set is unchanged. Layers on top of it (our .deb installed, stand-ins for Qubes' own
// packages) use the same cache: `ensureCachedRoot` with a key and a function that customises a
// copy of a parent root. Each qube then boots a copy-on-write instance (`instantiateRoot`).
//
// Why a cache keyed by content: the first build takes about a minute and 400 MB, every test file
// and the lab need the same tree, and a stale tree (another package list, another .deb) must
// never be reused silently. Why the lock: test files run two at a time and both may find the
// cache empty; the second waits for the first instead of building it again.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync, writeSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from '@qubes-net/common';
import { pidAlive } from '../runtime/processes.js';

export const CACHE_DIR = process.env.QUBES_NET_LAB_CACHE ?? '/var/cache/qubes-net-lab';
/** Where per-qube copy-on-write layers live: on disk, not in /run (tmpfs would cost RAM). */
export const INSTANCE_DIR = process.env.QUBES_NET_LAB_INSTANCES ?? '/var/tmp/qubes-net-lab';

/** Bumped when the way a root is built changes, so older caches are not reused. */
const BUILDER_VERSION = 1;

/** What a Qubes template needs for networking, plus tools the lab's checks use. */
export const DEBIAN_13_PACKAGES: readonly string[] = [
  'systemd', 'systemd-sysv', 'dbus', 'udev', 'iproute2', 'nftables', 'conntrack', 'nodejs',
  'iputils-ping', 'procps', 'kmod', 'ca-certificates',
  // /etc/protocols: nft resolves protocol names (ipv6-icmp) through it; every Qubes template has it.
  'netbase',
];

export interface DebianRootSpec {
  /** Debian suite, e.g. "trixie". */
  suite: string;
  mirror: string;
  variant: 'minbase';
  packages: readonly string[];
}

export const DEBIAN_13: DebianRootSpec = {
  suite: 'trixie',
  mirror: process.env.QUBES_NET_LAB_MIRROR ?? 'http://deb.debian.org/debian',
  variant: 'minbase',
  packages: DEBIAN_13_PACKAGES,
};

export interface CachedRoot {
  /** The finished tree; never modified after it is in place (copy it with `instantiateRoot`). */
  dir: string;
  key: string;
  /** True when this call built it, false when it came from the cache. */
  built: boolean;
}

export interface RootLog {
  (msg: string, fields?: Record<string, unknown>): void;
}

const quiet: RootLog = () => {};

/** Name rule for cache entries and instances: no path tricks from callers' labels. */
const SAFE_NAME = /^[a-z0-9][a-z0-9._-]{0,99}$/;
function checkName(what: string, name: string): void {
  if (!SAFE_NAME.test(name)) throw new Error(`${what} ${JSON.stringify(name)} is not a safe name (${SAFE_NAME})`);
}

export function hashKey(parts: readonly unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

/** The cache key of a debootstrap root: suite, mirror, variant and the sorted package list. */
export function debianRootKey(spec: DebianRootSpec): string {
  return hashKey([BUILDER_VERSION, spec.suite, spec.mirror, spec.variant, [...new Set(spec.packages)].sort()]);
}

/** The Debian 13 base root, built with debootstrap on first use. */
export async function ensureDebianRoot(spec: DebianRootSpec = DEBIAN_13, log: RootLog = quiet): Promise<CachedRoot> {
  const key = debianRootKey(spec);
  return ensureCachedRoot(`debian-${spec.suite}-${key}`, log, async (tmp) => {
    const packages = [...new Set(spec.packages)].sort();
    log('debootstrap starts', { suite: spec.suite, packages: packages.length, dir: tmp });
    await run('debootstrap', [`--variant=${spec.variant}`, `--include=${packages.join(',')}`, spec.suite, tmp, spec.mirror], {
      timeoutMs: 30 * 60_000,
    });
    await finishDebianRoot(tmp);
  }, { suite: spec.suite, mirror: spec.mirror, packages: [...spec.packages].sort() });
}

/** Makes a fresh debootstrap tree a template: no machine identity, no downloaded archives. */
async function finishDebianRoot(dir: string): Promise<void> {
  // An empty machine-id makes systemd generate one per boot, as a template's AppVMs get.
  writeFileSync(join(dir, 'etc/machine-id'), '');
  writeFileSync(join(dir, 'etc/hostname'), 'debian-13\n');
  // Units that wait for hardware or a console nspawn does not give only slow the boot down.
  for (const unit of ['getty@tty1.service', 'systemd-networkd-wait-online.service']) {
    await run('systemctl', ['--root', dir, 'mask', unit], { allowFailure: true });
  }
  await run('chroot', [dir, 'apt-get', 'clean'], { allowFailure: true });
}

/**
 * The cache entry NAME: returned as is when complete, otherwise built by `build(tmpDir)` into a
 * temporary directory that is renamed into place only after `build` succeeded (a crash leaves no
 * half tree under the final name). One builder at a time per name, across processes.
 */
export async function ensureCachedRoot(
  name: string,
  log: RootLog,
  build: (tmpDir: string) => Promise<void>,
  manifest: Record<string, unknown> = {},
): Promise<CachedRoot> {
  checkName('cache entry', name);
  const rootsDir = join(CACHE_DIR, 'roots');
  mkdirSync(rootsDir, { recursive: true });
  const dir = join(rootsDir, name);
  const key = name;
  if (isComplete(dir)) return usedRoot(rootsDir, name, { dir, key, built: false }, log);
  const release = await acquireLock(join(rootsDir, `${name}.lock`), log);
  try {
    if (isComplete(dir)) return usedRoot(rootsDir, name, { dir, key, built: false }, log);
    await removeStaleBuilds(rootsDir, name);
    if (existsSync(dir)) await removeTree(dir); // an incomplete entry from an older builder
    const tmp = join(rootsDir, `${name}.tmp-${process.pid}`);
    mkdirSync(tmp);
    const started = Date.now();
    try {
      await build(tmp);
      writeFileSync(join(tmp, COMPLETE), JSON.stringify({ name, builtAt: new Date().toISOString(), ms: Date.now() - started, ...manifest }) + '\n');
      renameSync(tmp, dir);
    } catch (err) {
      await removeTree(tmp).catch(() => {});
      throw err;
    }
    log('root built', { name, ms: Date.now() - started });
  } finally {
    release();
  }
  return usedRoot(rootsDir, name, { dir, key, built: true }, log);
}

/**
 * How many other entries of one family (the name without its key: every build of our .deb makes
 * a new `template-debian-13-<key>`, about 440 MB each) stay in the cache besides the one in use,
 * and how long an entry counts as in use after its last use. Older ones are removed, so a
 * developer's cache no longer grows by one image per change.
 */
const KEEP_PER_FAMILY = 3;
const RECENT_USE_MS = 2 * 60 * 60_000;
const FAMILY_KEY = /^(.+)-([0-9a-f]{16})$/;

/** Records the use (a stamp beside the tree: the tree itself may be an overlay's lower layer) and prunes its family. */
async function usedRoot(rootsDir: string, name: string, root: CachedRoot, log: RootLog): Promise<CachedRoot> {
  writeFileSync(join(rootsDir, `${name}.used`), `${new Date().toISOString()}\n`);
  await pruneFamily(rootsDir, name, log).catch((err) => log('cache pruning failed', { name, error: String(err) }));
  return root;
}

/** The complete entries of NAME's family other than NAME that may go: beyond the newest kept, not recently used, not mounted. */
export function prunableEntries(entries: readonly { name: string; lastUsedMs: number }[], name: string, nowMs: number, mountedLowerDirs: ReadonlySet<string>): string[] {
  const family = FAMILY_KEY.exec(name)?.[1];
  if (family === undefined) return [];
  const others = entries
    .filter((e) => e.name !== name && FAMILY_KEY.exec(e.name)?.[1] === family)
    .sort((a, b) => b.lastUsedMs - a.lastUsedMs);
  return others.slice(KEEP_PER_FAMILY)
    .filter((e) => nowMs - e.lastUsedMs > RECENT_USE_MS && !mountedLowerDirs.has(e.name))
    .map((e) => e.name);
}

async function pruneFamily(rootsDir: string, name: string, log: RootLog): Promise<void> {
  const entries = readdirSync(rootsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && isComplete(join(rootsDir, d.name)))
    .map((d) => ({ name: d.name, lastUsedMs: lastUsed(rootsDir, d.name) }));
  const mounted = mountedCacheEntries(rootsDir);
  for (const victim of prunableEntries(entries, name, Date.now(), mounted)) {
    // Its build lock, taken without waiting: an entry being (re)built or pruned elsewhere is left.
    const lock = join(rootsDir, `${victim}.lock`);
    let fd: number;
    try { fd = openSync(lock, 'wx'); } catch { continue; }
    try {
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      await removeTree(join(rootsDir, victim));
      try { unlinkSync(join(rootsDir, `${victim}.used`)); } catch { /* never stamped */ }
      log('old cache entry removed', { name: victim });
    } finally {
      try { unlinkSync(lock); } catch { /* already gone */ }
    }
  }
}

function lastUsed(rootsDir: string, name: string): number {
  for (const f of [join(rootsDir, `${name}.used`), join(rootsDir, name, COMPLETE)]) {
    try { return statSync(f).mtimeMs; } catch { /* next */ }
  }
  return 0;
}

/** Entries an overlay mount of this machine still uses as its lower layer (a running qube's instance). */
function mountedCacheEntries(rootsDir: string): Set<string> {
  const out = new Set<string>();
  let info = '';
  try { info = readFileSync('/proc/self/mountinfo', 'utf8'); } catch { return out; }
  for (const m of info.matchAll(/lowerdir=([^,\s]+)/g)) {
    for (const lower of m[1]!.split(':')) {
      if (lower.startsWith(`${rootsDir}/`)) out.add(lower.slice(rootsDir.length + 1).split('/')[0]!);
    }
  }
  return out;
}

/** Marker written last into a tree: its presence means the build finished. */
const COMPLETE = '.qubes-net-lab-root.json';

function isComplete(dir: string): boolean {
  return existsSync(join(dir, COMPLETE));
}

export function readManifest(dir: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, COMPLETE), 'utf8')) as Record<string, unknown>;
}


/**
 * A lock file created with O_EXCL holding the owner's pid. A lock whose owner is gone (killed
 * build) is taken over; a live owner is waited for (a debootstrap run takes about a minute).
 */
async function acquireLock(path: string, log: RootLog, timeoutMs = 45 * 60_000): Promise<() => void> {
  const deadline = Date.now() + timeoutMs;
  let said = false;
  for (;;) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => {
        try { unlinkSync(path); } catch { /* already gone */ }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let owner = NaN;
    try { owner = Number.parseInt(readFileSync(path, 'utf8'), 10); } catch { /* raced with its release */ }
    if (Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) {
      try { unlinkSync(path); } catch { /* someone else took it over */ }
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for the build lock ${path} (held by pid ${owner})`);
    if (!said) {
      log('waiting for another build of the same root', { lock: path, owner });
      said = true;
    }
    await sleep(500);
  }
}

/** Temporary trees of builds whose process died. */
async function removeStaleBuilds(rootsDir: string, name: string): Promise<void> {
  const prefix = `${name}.tmp-`;
  for (const entry of readdirSync(rootsDir)) {
    if (!entry.startsWith(prefix)) continue;
    const pid = Number.parseInt(entry.slice(prefix.length), 10);
    if (Number.isInteger(pid) && pid !== process.pid && pidAlive(pid)) continue;
    await removeTree(join(rootsDir, entry));
  }
}

/**
 * Removes a tree we made. debootstrap mounts /proc and /sys inside its target while it runs; a
 * killed build leaves them mounted, so everything mounted below is unmounted first, and rm stays
 * on this file system whatever happens.
 */
export async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  await unmountBelow(dir);
  await run('rm', ['-rf', '--one-file-system', '--', dir]);
}

/** Unmounts every mount at or below DIR, deepest first. */
export async function unmountBelow(dir: string): Promise<void> {
  const r = await run('findmnt', ['-rn', '-o', 'TARGET'], { allowFailure: true });
  const targets = r.stdout.split('\n')
    .map((t) => t.replace(/\\x([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16))))
    .filter((t) => t === dir || t.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const t of targets) await run('umount', ['-l', t], { allowFailure: true });
}

export interface RootInstance {
  /** The tree to boot (`systemd-nspawn -D`); writes land in this instance only. */
  dir: string;
  mode: 'overlay' | 'copy';
  /** Unmounts and deletes the instance (exact paths, nothing else). */
  remove(): Promise<void>;
}

/**
 * A copy-on-write instance of a cached root for one container, as an AppVM's root is a layer
 * over its template: overlayfs where the kernel has it (instant, shares the page cache), else a
 * full `cp --reflink=auto -a`. NAME must be unique (the lab puts its qube and lab id in it).
 */
export async function instantiateRoot(base: string, name: string, opts: { mode?: 'overlay' | 'copy' } = {}): Promise<RootInstance> {
  checkName('instance', name);
  const home = join(INSTANCE_DIR, name);
  if (existsSync(home)) throw new Error(`instance ${home} exists already (names must be unique)`);
  mkdirSync(home, { recursive: true });
  const dir = join(home, 'root');
  mkdirSync(dir);
  const remove = async (): Promise<void> => removeTree(home);
  const mode = opts.mode ?? (overlaySupported() ? 'overlay' : 'copy');
  try {
    if (mode === 'overlay') {
      const upper = join(home, 'upper');
      const work = join(home, 'work');
      mkdirSync(upper);
      mkdirSync(work);
      await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${base},upperdir=${upper},workdir=${work}`, dir]);
    } else {
      await run('cp', ['--reflink=auto', '-a', '--', `${base}/.`, dir]);
    }
  } catch (err) {
    await remove().catch(() => {});
    throw err;
  }
  return { dir, mode, remove };
}

function overlaySupported(): boolean {
  try {
    return /\toverlay$/m.test(readFileSync('/proc/filesystems', 'utf8'));
  } catch {
    return false;
  }
}

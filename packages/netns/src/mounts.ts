// The mount side of a qube: a persistent mount namespace (kept alive by bind-mounting its nsfs
// file into the session's private `mnt` directory) in which the qube's own directories cover
// /run, /rw, /etc/qubes, /etc/resolv.conf, and a fresh sysfs covers /sys.
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { run } from '@qubes-net/common';
import { BIN_DIR, NETNS_RUN_DIR } from './paths.js';

/** Mount points (decoded) of the current mount namespace, from /proc/self/mountinfo. */
export function mountPoints(): string[] {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

/** Mount points at or below `dir`, deepest first (the order to unmount them). */
export function mountsUnder(dir: string): string[] {
  return mountPoints()
    .filter((m) => m === dir || m.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}

/**
 * unshare refuses to bind a mount namespace file onto a shared mount (propagation could create
 * loops), so the session's `mnt` directory is bound onto itself and made private.
 */
export async function makePrivateDir(dir: string): Promise<void> {
  await run('mount', ['--bind', dir, dir]);
  await run('mount', ['--make-private', dir]);
}

/**
 * Creates the qube's mount namespace, entered from inside its network namespace so that the
 * fresh sysfs shows the qube's interfaces. The setup script (bin/qn-qube-setup) detaches the
 * copies of the host's netns mounts first: otherwise this namespace would keep every other
 * qube's network namespace (and its veths) alive after `ip netns del`.
 */
export async function createMountNamespace(netns: string, mntFile: string, root: string): Promise<void> {
  await run('nsenter', [`--net=${join(NETNS_RUN_DIR, netns)}`, '--', 'unshare', `--mount=${mntFile}`, '--propagation', 'private', '--', 'sh', join(BIN_DIR, 'qn-qube-setup'), root]);
}

/** Unmounts (lazily: a process may still be exiting) every mount at or below `path`; tolerates none. */
export async function unmountAll(path: string): Promise<void> {
  for (const m of mountsUnder(path)) {
    await run('umount', ['-l', m], { allowFailure: true });
  }
}

export function unmountAllSync(path: string): void {
  for (const m of mountsUnder(path)) spawnSync('umount', ['-l', m], { stdio: 'ignore' });
}

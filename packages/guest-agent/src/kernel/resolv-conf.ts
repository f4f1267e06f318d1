// resolv.conf: written atomically (temp file + rename, which also replaces a systemd-resolved
// symlink by a file), never when the user protected it, never rewritten when already right.
import { lstat, readFile, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import type { Dirent } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export const DEFAULT_PROTECTED_DIRS: readonly string[] = ['/etc/qubes/protected-files.d', '/rw/config/protected-files.d'];

/**
 * Names in a protected-files directory that are not lists: package-manager leftovers and
 * editor backups. Upstream skips *.rpmsave, *.rpmnew, *.rpmold and *~; we also skip Debian's
 * *.dpkg-* (old, new, dist, bak, tmp) and vim's swap files (.*.swp/.swo), which play the same
 * role on Debian templates.
 */
export function isBackupName(name: string): boolean {
  return /(\.rpmsave|\.rpmnew|\.rpmold|~|\.swp|\.swo)$/.test(name) || /\.dpkg-[A-Za-z]+$/.test(name);
}

/** Subdirectory levels searched below each protected-files directory (a loop guard; grep -r has none). */
const MAX_DEPTH = 16;

/**
 * Whether `path` is listed, as an exact line, in a file below one of the protected-files
 * dirs, as upstream's `grep -Fxr` finds it: subdirectories are searched, backups skipped
 * (isBackupName), symbolic links met inside a directory neither followed nor read (grep -r
 * follows only the ones it was given). Files are read in name order, first match wins.
 */
export async function isProtectedFile(path: string, dirs: readonly string[] = DEFAULT_PROTECTED_DIRS): Promise<{ protected: boolean; listedIn?: string }> {
  for (const dir of dirs) {
    const listedIn = await searchDir(dir, path, 0);
    if (listedIn !== undefined) return { protected: true, listedIn };
  }
  return { protected: false };
}

async function searchDir(dir: string, path: string, depth: number): Promise<string | undefined> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return undefined; // no such directory (or not one): nothing protected there
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (isBackupName(e.name)) continue;
    const full = join(dir, e.name);
    if (e.isDirectory()) {
      if (depth >= MAX_DEPTH) continue;
      const found = await searchDir(full, path, depth + 1);
      if (found !== undefined) return found;
    } else if (e.isFile()) {
      let text: string;
      try {
        text = await readFile(full, 'utf8');
      } catch {
        continue; // unreadable: lists nothing
      }
      if (text.split('\n').some((line) => line === path)) return full;
    }
  }
  return undefined;
}

export type ResolvWrite = 'unchanged' | 'written' | 'replaced-symlink' | 'written-in-place';

/** Reads the current content, or undefined when it is missing or not a regular file. */
export async function readRegularFile(path: string): Promise<string | undefined> {
  try {
    const st = await lstat(path);
    if (!st.isFile()) return undefined;
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Makes `path` a regular file holding exactly `content`. A bind-mounted file (tests, some
 * containers) cannot be renamed onto (EBUSY): it is then rewritten in place, which the caller
 * logs.
 */
export async function writeResolvConf(path: string, content: string): Promise<ResolvWrite> {
  let isSymlink = false;
  try {
    const st = await lstat(path);
    isSymlink = st.isSymbolicLink();
    if (st.isFile() && (await readFile(path, 'utf8')) === content) return 'unchanged';
  } catch {
    // missing: created below
  }
  const tmp = join(dirname(path), `.${basename(path)}.qubes-net-${process.pid}`);
  await writeFile(tmp, content, { mode: 0o644 });
  try {
    await rename(tmp, path);
    return isSymlink ? 'replaced-symlink' : 'written';
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EBUSY' && code !== 'EXDEV') throw err;
    await writeFile(path, content, { mode: 0o644 });
    return 'written-in-place';
  }
}

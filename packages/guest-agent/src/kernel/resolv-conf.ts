// resolv.conf: written atomically (temp file + rename, which also replaces a systemd-resolved
// symlink by a file), never when the user protected it, never rewritten when already right.
import { lstat, readFile, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export const DEFAULT_PROTECTED_DIRS: readonly string[] = ['/etc/qubes/protected-files.d', '/rw/config/protected-files.d'];

/** Whether `path` is listed, as an exact line, in a file of one of the protected-files dirs. */
export async function isProtectedFile(path: string, dirs: readonly string[] = DEFAULT_PROTECTED_DIRS): Promise<{ protected: boolean; listedIn?: string }> {
  for (const dir of dirs) {
    let names: string[];
    try {
      names = (await readdir(dir)).sort();
    } catch {
      continue; // no such directory: nothing protected there
    }
    for (const name of names) {
      const file = join(dir, name);
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch {
        continue; // a subdirectory or an unreadable entry lists nothing
      }
      if (text.split('\n').some((line) => line === path)) return { protected: true, listedIn: file };
    }
  }
  return { protected: false };
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

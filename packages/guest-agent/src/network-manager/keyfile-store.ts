// The uplink's keyfile on disk: written only when its content changes, atomically (a temporary
// file with mode 0600 in the same directory, then rename), so NetworkManager never reads half a
// file and a file left by an older build with other permissions is replaced, not reused.
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { keyfileName } from './keyfile.js';
import { readRegularFile } from '../kernel/resolv-conf.js';

/** NetworkManager refuses keyfiles that others can read or write; upstream writes 0600. */
export const KEYFILE_MODE = 0o600;

export function keyfilePath(dir: string, ifname: string): string {
  return join(dir, keyfileName(ifname));
}

/** The file's content, or undefined when there is none (or it is not a regular file). */
export const readKeyfile = readRegularFile;

/** 'unchanged' when the file already holds CONTENT as a 0600 regular file; else rewrites it. */
export async function writeKeyfile(path: string, dir: string, content: string): Promise<'written' | 'unchanged'> {
  try {
    const st = await lstat(path);
    if (st.isFile() && (st.mode & 0o777) === KEYFILE_MODE && await readFile(path, 'utf8') === content) return 'unchanged';
  } catch { /* absent: written below */ }
  // Upstream's network-manager-prepare-conf-dir makes this directory; a fresh template may lack it.
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = join(dir, `.${randomBytes(6).toString('hex')}.qubes-net-tmp`);
  try {
    // 'wx': a fresh file with our mode, never an existing one (or a link someone put there).
    await writeFile(tmp, content, { mode: KEYFILE_MODE, flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  return 'written';
}

/** The connection's uuid as the file states it, for deleting it from NetworkManager. */
export function uuidOf(content: string): string | undefined {
  return /^uuid=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/m.exec(content)?.[1];
}

// The fake xenstore of a qube: each key is a file below /run/qubes-net-xenstore inside the
// qube (the bin/xenstore-* scripts use the same layout). A leading '/' is optional: `/a/b` and
// `a/b` are the same key (the fake does not know the qube's domid, so relative paths are not
// resolved against /local/domain/<domid>). A key that has children is a directory and reads
// as the empty string, as a parent node does in xenstore.
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const COMPONENT_RE = /^[A-Za-z0-9_@:-][A-Za-z0-9_@:.-]*$/;

/** Validates a xenstore path and returns its components; throws on '..', empty parts, odd characters. */
export function xenstoreKeyParts(path: string): string[] {
  if (typeof path !== 'string' || path.length === 0 || path.length > 1024) throw new Error(`invalid xenstore path ${JSON.stringify(path)}`);
  const parts = path.replace(/^\//, '').split('/');
  for (const part of parts) {
    if (!COMPONENT_RE.test(part) || part === '.' || part === '..') throw new Error(`invalid xenstore path ${JSON.stringify(path)}`);
  }
  return parts;
}

export async function xenstoreWriteFile(dir: string, path: string, value: string): Promise<void> {
  const file = join(dir, ...xenstoreKeyParts(path));
  await mkdir(join(file, '..'), { recursive: true });
  // Write then rename so a reader never sees half a value.
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
  await writeFile(tmp, value);
  await rename(tmp, file);
}

export async function xenstoreReadFile(dir: string, path: string): Promise<string | undefined> {
  const file = join(dir, ...xenstoreKeyParts(path));
  try {
    if ((await stat(file)).isDirectory()) return '';
    return await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Removes a key and its children; tolerates absence. */
export async function xenstoreRmFile(dir: string, path: string): Promise<void> {
  await rm(join(dir, ...xenstoreKeyParts(path)), { recursive: true, force: true });
}

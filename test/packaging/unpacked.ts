// Shared by the packaging tests: build the packages into a scratch directory and unpack the RPM
// there, so the agents run from the package's files rather than from the workspace.
import { dirname, join, resolve } from 'node:path';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { run } from '@qubes-net/common';

/** The checkout (test/dist/packaging → root). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface BuiltPackages {
  version: string;
  rpm: string | null;
  deb: string | null;
  missing: string[];
}

/**
 * Runs packaging/build.mjs into `out` (a directory of the caller's, never packaging/out).
 * allowMissing: stubs for this round's parts other jobs deliver (packages.test.ts insists on them).
 */
export async function buildPackages(out: string, only?: 'rpm' | 'deb', allowMissing = false): Promise<BuiltPackages> {
  const args = [join(ROOT, 'packaging', 'build.mjs'), '--out', out, ...(only ? ['--only', only] : []), ...(allowMissing ? ['--allow-missing'] : [])];
  const r = await run(process.execPath, args, { cwd: ROOT });
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as BuiltPackages;
}

/** Unpacks an RPM's payload into `dir` (rpm2archive: no cpio needed) and returns `dir`. */
export async function unpackRpm(rpm: string, dir: string): Promise<string> {
  mkdirSync(dir, { recursive: true });
  await run('rpm2archive', [rpm]);
  await run('tar', ['-xzf', `${rpm}.tgz`, '-C', dir]);
  return dir;
}

/** Environment for the packaged CLIs: `node` on PATH, nothing pointing back at the workspace. */
export function cliEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  return {
    PATH: `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    NODE_PATH: undefined,
    NODE_OPTIONS: undefined,
    LC_ALL: 'C',
    ...extra,
  };
}

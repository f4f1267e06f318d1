// Our .deb, built from this checkout by packaging's build (the `npm run package` step without
// the set-up): the template lab installs exactly what users get.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '@qubes-net/common';
import { CHECKOUT } from './image.js';

/**
 * Builds the .deb into OUTDIR (default a new temporary directory) and returns its path.
 * RELEASE (the Debian revision) makes an upgrade of an installed build.
 */
export async function buildDeb(outDir = mkdtempSync(join(tmpdir(), 'qubes-net-tlab-deb-')), release?: number): Promise<string> {
  await run(process.execPath, [join(CHECKOUT, 'packaging', 'build.mjs'), '--out', outDir, '--only', 'deb', ...(release ? ['--release', String(release)] : [])], { cwd: CHECKOUT, timeoutMs: 5 * 60_000 });
  const manifest = JSON.parse(readFileSync(join(outDir, 'packages.json'), 'utf8')) as { deb?: string | null };
  if (!manifest.deb) throw new Error(`packaging/build.mjs built no .deb (${join(outDir, 'packages.json')})`);
  return manifest.deb;
}

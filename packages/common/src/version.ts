// `--version` for every CLI: the version in the package.json next to the caller's dist/.
import { readFileSync } from 'node:fs';

/** Version of the package whose module is `moduleUrl` (pass import.meta.url from dist/…). */
export function packageVersion(moduleUrl: string): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, moduleUrl), 'utf8')) as { name?: string; version?: string };
      if (pkg.name?.startsWith('@qubes-net/') && pkg.version) return pkg.version;
    } catch {
      // not there: try one level up
    }
  }
  return 'unknown';
}

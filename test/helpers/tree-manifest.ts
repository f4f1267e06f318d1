// A manifest of a root tree (a template's /), for round trips that must leave it as they found
// it: every path with its content hash and mode (files), its target (links) or "dir", minus
// the paths that change by themselves (package databases, logs, run-time state).
import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

/** What changes in any Debian root without the package under test (dpkg's and apt's state, logs, caches). */
export const VOLATILE = /^\/(proc|sys|dev|run|tmp|var\/tmp|var\/lib\/dpkg|var\/log|var\/cache|var\/lib\/apt|var\/lib\/systemd|\.qubes-net-lab-root\.json)(\/|$)/;

export const sha256File = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

/** Every path under ROOT (as seen from inside: "/etc/…") not matching SKIP, with what it holds. */
export function treeManifest(root: string, skip: RegExp = VOLATILE): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(root, rel))) {
      const r = `${rel}/${name}`;
      if (skip.test(r)) continue;
      const st = lstatSync(join(root, r));
      if (st.isSymbolicLink()) out.set(r, `-> ${readlinkSync(join(root, r))}`);
      else if (st.isDirectory()) { out.set(r, 'dir'); walk(r); }
      else if (st.isFile()) out.set(r, `${(st.mode & 0o7777).toString(8)} ${sha256File(join(root, r))}`);
    }
  };
  walk('');
  return out;
}

/** The paths whose entry differs between two manifests, sorted. */
export function manifestDiff(a: Map<string, string>, b: Map<string, string>): string[] {
  return [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k)).sort();
}

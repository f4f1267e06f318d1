#!/usr/bin/env node
// Bundles each one-shot entry point into one CommonJS file with esbuild, so that a cold start
// reads and compiles one file instead of resolving and loading dozens of ES modules:
//   packages/guest-agent/bundle/qubes-net-guest.cjs   apply / remove / status / watch-args
//   packages/qubesdb/bundle/qubes-net-qdb.cjs         the qdb CLI
//   packages/network-agent/bundle/qubes-net-agent.cjs the on-demand agent (koffi, pino outside)
// (plus any entry listed in ENTRIES whose dist file exists: the network agent's hotplug
// fallback adds itself there). Runs after `tsc -b` (it bundles dist/), from `npm run build`
// and scripts/setup.mjs.
//
// pino, execa and koffi stay outside the bundle: the one-shot paths never load them (a test
// checks that), and the deprecated daemon path that does finds them in node_modules.
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** [dist entry, bundle file] relative to the repository root. Missing entries are skipped. */
export const ENTRIES = [
  ['packages/guest-agent/dist/cli.js', 'packages/guest-agent/bundle/qubes-net-guest.cjs'],
  ['packages/qubesdb/dist/cli.js', 'packages/qubesdb/bundle/qubes-net-qdb.cjs'],
  // The network agent: started on demand, so its start and its resident set matter too (one
  // file to compile: ~4 MB less RSS and ~25 % faster to ready than dist/, bench/network-agent).
  ['packages/network-agent/dist/cli.js', 'packages/network-agent/bundle/qubes-net-agent.cjs'],
  // Hook for the network agent's one-shot fallback (`qubes-net-agent hotplug`):
  ['packages/network-agent/dist/hotplug-cli.js', 'packages/network-agent/bundle/qubes-net-agent-hotplug.cjs'],
];

export const EXTERNAL = ['pino', 'pino-*', 'thread-stream', 'execa', 'koffi'];

export async function bundleAll({ quiet = false } = {}) {
  const { build } = await import('esbuild');
  const made = [];
  for (const [entry, out] of ENTRIES) {
    const src = join(root, entry);
    if (!existsSync(src)) continue;
    const outfile = join(root, out);
    mkdirSync(dirname(outfile), { recursive: true });
    await build({
      entryPoints: [src],
      outfile,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      external: EXTERNAL,
      // ESM's import.meta.url (the --version lookup, file locations) has no CJS meaning:
      // give it the bundle's own URL. The bundle sits in <pkg>/bundle/, as dist/ sits in <pkg>/.
      define: { 'import.meta.url': '__bundleUrl', 'import.meta.resolve': '__bundleResolve' },
      banner: { js: 'const __bundleUrl = require("node:url").pathToFileURL(__filename).href;\nconst __bundleResolve = (s) => require("node:url").pathToFileURL(require.resolve(s)).href;' },
      logLevel: 'warning',
      legalComments: 'none',
      sourcemap: false,
    });
    made.push(relative(root, outfile));
  }
  if (!quiet) process.stdout.write(`bundled: ${made.join(', ')}\n`);
  return made;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await bundleAll({ quiet: process.argv.includes('--quiet') });
}

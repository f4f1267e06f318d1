#!/usr/bin/env node
// `npm run bench`: runs every compiled bench (bench/dist/*.bench.js) in turn. Each prints its
// figures as JSON lines, each figure next to a baseline measured in the same run.
import { spawnSync } from 'node:child_process';
import { readdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const filters = process.argv.slice(2);
const files = existsSync(dist) ? readdirSync(dist, { recursive: true }).map(String).filter((f) => f.endsWith('.bench.js')).filter((f) => !filters.length || filters.some((x) => f.includes(x))).sort() : [];
let failed = 0;
for (const f of files) {
  process.stderr.write(`\n=== bench ${f}\n`);
  const r = spawnSync(process.execPath, ['--expose-gc', join(dist, f)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);

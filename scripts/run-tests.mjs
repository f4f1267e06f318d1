#!/usr/bin/env node
// Runs every compiled test file (test/dist/**/*.test.js) with node's test runner. Node 20's
// runner takes no globs, so the files are listed here. Arguments narrow the run to files whose
// path contains one of them, e.g. `node scripts/run-tests.mjs guest-agent`.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const testDist = join(root, 'test', 'dist');

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const filters = process.argv.slice(2);
const files = walk(testDist)
  .filter((f) => filters.length === 0 || filters.some((x) => relative(root, f).includes(x)))
  .sort();
if (files.length === 0) {
  process.stderr.write('no test files found (did the build run?)\n');
  process.exit(1);
}
const concurrency = process.env.QUBES_NET_TEST_CONCURRENCY ?? '2';
// The tests are not a systemd service, even when the CI runner is one: without this, hooks that
// tests run would be put in transient scopes of the host's systemd (runProcess's scope: 'hook').
delete process.env.INVOCATION_ID;
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...files], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);

// The bundled one-shot (scripts/bundle.mjs → packages/guest-agent/bundle/qubes-net-guest.cjs):
// it configures the uplink exactly as the dist CLI does, and its path loads neither pino nor
// execa nor koffi (a preload hook records every require of them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { needRoot, isRoot } from '../helpers/root.js';
import { APPENDIX_A_STATE, GuestLab, LAB_UPLINK_ENV, parseLogLines } from './harness.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const BUNDLE = join(repoRoot, 'packages', 'guest-agent', 'bundle', 'qubes-net-guest.cjs');
const HEAVY = /^(pino|execa|koffi)(\/|$)/;

let lab: GuestLab | undefined;
let dir: string;
let hook: string;
let record: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qn-guest-bundle-'));
  hook = join(dir, 'record-requires.cjs');
  record = join(dir, 'requires');
  await writeFile(hook, [
    `const Module = require('node:module');`,
    `const fs = require('node:fs');`,
    `const load = Module._load;`,
    `Module._load = function (request, ...rest) {`,
    `  if (${HEAVY}.test(request)) fs.appendFileSync(${JSON.stringify(record)}, request + '\\n');`,
    `  return load.call(this, request, ...rest);`,
    `};`,
    '',
  ].join('\n'));
  if (isRoot()) lab = await GuestLab.create('guest-bundle');
});
after(async () => {
  await lab?.destroy();
  await rm(dir, { recursive: true, force: true });
});

test('the bundle is built (npm run build / setup run scripts/bundle.mjs)', () => {
  assert.ok(existsSync(BUNDLE), `${BUNDLE} missing: run node scripts/bundle.mjs`);
});

test('bundled apply configures the uplink like the dist CLI, loading no pino, execa or koffi', async (t) => {
  if (!needRoot(t)) return;
  await lab!.clearKeys();
  await lab!.writeAppendixA();
  const res = await lab!.client.exec(process.execPath, ['-r', hook, BUNDLE, 'apply', 'eth0'], { allowFailure: true, env: { ...LAB_UPLINK_ENV } });
  assert.equal(res.exitCode, 0, res.stdout + res.stderr);
  const logs = parseLogLines(res.stdout);
  assert.ok(logs.some((l) => l.msg === 'uplink configured' && l.changed === true), res.stdout);
  assert.deepEqual(await lab!.eth0(), APPENDIX_A_STATE);
  assert.equal(await readFile(record, 'utf8').catch(() => ''), '', 'heavy modules loaded on the one-shot path');
  // remove and watch-args stay light as well.
  const rmRes = await lab!.client.exec(process.execPath, ['-r', hook, BUNDLE, 'remove', 'eth0'], { allowFailure: true, env: { ...LAB_UPLINK_ENV } });
  assert.equal(rmRes.exitCode, 0, rmRes.stdout + rmRes.stderr);
  const wa = await lab!.client.exec(process.execPath, ['-r', hook, BUNDLE, 'watch-args', 'eth0', '--json'], { allowFailure: true });
  assert.ok((JSON.parse(wa.stdout) as string[]).includes('/qubes-ip'));
  assert.equal(await readFile(record, 'utf8').catch(() => ''), '');
});

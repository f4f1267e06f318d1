// Hand edits survive (issue 16.5): the guest re-applies only when QubesDB or the link
// changes, never on a timer. The deprecated run mode is started in a private, empty network
// namespace (`unshare --net`, nothing configured: its uplink does not exist) with a QubesDB
// that never changes; once its first pass is done it must hold no timer at all, so nothing
// can undo a route or resolv.conf line a user changed by hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { needRoot } from '../helpers/root.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const INDEX = pathToFileURL(join(repoRoot, 'packages', 'guest-agent', 'dist', 'index.js')).href;

const SCRIPT = `
import { GuestDaemon, DEFAULT_PATHS } from ${JSON.stringify(INDEX)};
const dir = process.argv[1];
let wake;
const quiet = () => undefined;
const log = { debug: quiet, info: quiet, warn: quiet, error: quiet, trace: quiet, fatal: quiet, child() { return log; } };
const db = {
  read: async () => undefined,
  multiread: async () => new Map(),
  write: async () => undefined,
  // A watch on which nothing ever changes, until close().
  watch: () => ({
    [Symbol.asyncIterator]() { return this; },
    next: () => new Promise((r) => { wake = r; }),
    close: async () => wake?.({ done: true, value: undefined }),
  }),
};
const daemon = new GuestDaemon({
  db, log, iface: 'qngp0',
  paths: { ...DEFAULT_PATHS, stateDir: dir, resolvConf: dir + '/resolv.conf', protectedDirs: [], hooks: [], driverSocket: dir + '/none.sock' },
});
await daemon.start();
await daemon.idle();
const timers = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
const passes = daemon.passes;
await daemon.stop();
console.log(JSON.stringify({ timers, passes }));
`;

test('run mode: after its first pass the daemon holds no timer (no periodic re-apply)', async (t) => {
  if (!needRoot(t)) return;
  const dir = await mkdtemp(join(tmpdir(), 'qn-gparity-'));
  try {
    const r = spawnSync('unshare', ['--net', process.execPath, '--input-type=module', '-e', SCRIPT, dir], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { timers: number; passes: number };
    assert.equal(out.passes, 1, 'the start pass ran');
    assert.equal(out.timers, 0, 'a timer left armed would re-apply without any change');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// The feedback key (`/qubes-uplink-status`) counts as written only once QubesDB took it: a
// failed write is tried again on the next pass even when nothing else changed (issue 13.5).
// The passes run in a private, empty network namespace (`unshare --net`): the uplink named
// there does not exist, so nothing is configured and the host's network is never read.
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

/** Three passes sharing one context (as the run mode's do); the first status write fails. */
const SCRIPT = `
import { applyOnce, DEFAULT_PATHS } from ${JSON.stringify(INDEX)};
const dir = process.argv[1];
const writes = [];
let failures = 1;
const db = {
  read: async () => undefined,
  multiread: async () => new Map(),
  write: async (key, value) => { writes.push([key, value]); if (failures-- > 0) throw new Error('EIO (injected)'); },
};
const quiet = () => undefined;
const ctx = {
  db, log: { debug: quiet, info: quiet, warn: quiet, error: quiet },
  paths: { ...DEFAULT_PATHS, stateDir: dir, resolvConf: dir + '/resolv.conf', protectedDirs: [], hooks: [], driverSocket: dir + '/none.sock' },
  iface: 'qngp0', generation: () => String(writes.length + 1), alwaysWriteStatus: false, quietWhenUnchanged: true,
};
const seen = [];
for (let i = 0; i < 3; i++) { await applyOnce(ctx); seen.push(writes.length); }
console.log(JSON.stringify({ seen, writes }));
`;

test('a failed feedback write is retried on the next pass, and only until it succeeds', async (t) => {
  if (!needRoot(t)) return;
  const dir = await mkdtemp(join(tmpdir(), 'qn-gparity-'));
  try {
    const r = spawnSync('unshare', ['--net', process.execPath, '--input-type=module', '-e', SCRIPT, dir], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { seen: number[]; writes: [string, string][] };
    // Pass 1 tries and fails, pass 2 tries again and succeeds, pass 3 has nothing new to say.
    assert.deepEqual(out.seen, [1, 2, 2]);
    for (const [key, value] of out.writes) {
      assert.equal(key, '/qubes-uplink-status');
      assert.match(value, /^\d+ unconfigured qngp0 interface missing$/);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// The agents' pino logger under journald: with stdout the journal's stream (JOURNAL_STREAM
// names its dev:inode), each line carries the <N> syslog priority of its level; otherwise plain
// JSON lines as before.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { journalLine, syslogPriority } from '@qubes-net/common';

test('pino levels map to syslog priorities; only JSON lines get a prefix', () => {
  assert.deepEqual([10, 20, 30, 40, 50, 60].map(syslogPriority), [7, 7, 6, 4, 3, 2]);
  assert.equal(journalLine('{"level":40,"msg":"x"}\n'), '<4>{"level":40,"msg":"x"}\n');
  assert.equal(journalLine('not json\n'), 'not json\n');
});

const SCRIPT = `const { createLogger } = await import('@qubes-net/common');
const log = createLogger('t');
log.info('i'); log.warn('w'); log.error('e');`;

function runWith(journal: boolean): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'qubes-net-log-'));
  try {
    const file = join(dir, 'out');
    const fd = openSync(file, 'w');
    const st = fstatSync(fd);
    const env = { ...process.env, JOURNAL_STREAM: journal ? `${st.dev}:${st.ino}` : '' };
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', SCRIPT], { stdio: ['ignore', fd, 'pipe'], env, cwd: process.cwd() });
    closeSync(fd);
    assert.equal(r.status, 0, r.stderr.toString());
    return readFileSync(file, 'utf8').split('\n').filter(Boolean);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('createLogger prefixes each line with its priority when stdout is the journal stream', () => {
  const lines = runWith(true);
  assert.deepEqual(lines.map((l) => l.slice(0, 3)), ['<6>', '<4>', '<3>'], lines.join('\n'));
  for (const l of lines) JSON.parse(l.slice(3));
  assert.deepEqual(runWith(false).map((l) => l[0]), ['{', '{', '{']);
});

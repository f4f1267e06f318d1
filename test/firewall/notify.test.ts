// 16.6: a desktop alert when a qube's rules are not in force, as upstream: notify-send run as
// QubesDB's /default-user (runuser when we are root) on display :0 with that user's session
// bus; the firewall never waits for it; a burst becomes a few alerts and one summary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, readFile, readdir, chmod, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { MemoryQubesDB } from '@qubes-net/qubesdb';
import { NftTransaction, type ProcessOptions } from '@qubes-net/common/kernel';
import { FirewallEngine, addFirewallSkeleton, createDesktopNotifier, alertText, type Alert } from '@qubes-net/firewall';
import { FirewallFakeKernel } from './fake-kernel.js';
import { needRoot } from '../helpers/root.js';

function logger() {
  const lines: any[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write(c, _e, cb) { lines.push(JSON.parse(String(c))); cb(); } }));
  return { log, lines };
}

/** A directory with a stand-in notify-send that records its argv, user and environment. */
async function standIn(t: import('node:test').TestContext, body = ''): Promise<{ dir: string; calls: () => Promise<{ argv: string[]; user: string; env: Record<string, string> }[]> }> {
  const dir = await mkdtemp(join(tmpdir(), 'qn-fwparity-notify-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  // runuser runs it as the default user: the directory must be theirs to write.
  await chmod(dir, 0o777);
  await writeFile(join(dir, 'notify-send'), [
    '#!/bin/sh',
    `out="${dir}/call-$$"`,
    'for a in "$@"; do printf "%s\\n" "$a"; done > "$out.argv"',
    'id -un > "$out.user"',
    'env > "$out.env"',
    body,
    'mv "$out.argv" "$out.done"',
  ].join('\n') + '\n', { mode: 0o755 });
  return {
    dir,
    calls: async () => {
      const out = [];
      for (const f of (await readdir(dir)).filter((n) => n.endsWith('.done')).sort()) {
        const base = join(dir, f.slice(0, -'.done'.length));
        const env = Object.fromEntries((await readFile(`${base}.env`, 'utf8')).trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
        out.push({ argv: (await readFile(join(dir, f), 'utf8')).replace(/\n$/, '').split('\n'), user: (await readFile(`${base}.user`, 'utf8')).trim(), env });
      }
      return out;
    },
  };
}

test('16.6: notify-send runs as the /default-user through runuser, on :0 with that user\'s session bus', async (t) => {
  if (!needRoot(t)) return;
  const fake = await standIn(t);
  const { log } = logger();
  const db = new MemoryQubesDB({ '/default-user': 'nobody' });
  const notify = createDesktopNotifier({ db, log, path: `${fake.dir}:/usr/sbin:/usr/bin:/sbin:/bin` });
  const alert: Alert = { ip: '10.137.0.7', outcome: 'blocked', reason: 'invalid rules: 0000: bad-ports' };
  notify(alert);
  await notify.idle();
  const calls = await fake.calls();
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0]!.argv, ['-t', '8000', '--icon=network-error', alertText(alert)]);
  assert.match(alertText(alert), /^Qubes firewall: traffic from 10\.137\.0\.7 is blocked \(invalid rules: 0000: bad-ports\)$/);
  assert.equal(calls[0]!.user, 'nobody');
  assert.equal(calls[0]!.env.DISPLAY, ':0');
  assert.equal(calls[0]!.env.DBUS_SESSION_BUS_ADDRESS, 'unix:path=/run/user/65534/bus');
});

test('16.6: the engine alerts for a blocked and a partial qube and does not wait for the alert', async (t) => {
  if (!needRoot(t)) return;
  // This notify-send hangs until told to go on: the engine must finish regardless.
  const fake = await standIn(t, `while [ ! -e "${'$'}(dirname "$0")/go" ]; do sleep 0.05; done`);
  const { log, lines } = logger();
  const db = new MemoryQubesDB({
    '/default-user': 'nobody',
    '/qubes-firewall/10.137.0.7': '', '/qubes-firewall/10.137.0.7/policy': 'drop', '/qubes-firewall/10.137.0.7/0000': 'action=accept dstports=99999',
    '/qubes-firewall/10.137.0.8': '', '/qubes-firewall/10.137.0.8/policy': 'drop', '/qubes-firewall/10.137.0.8/0000': 'action=accept dsthost=gone.test',
    '/qubes-firewall/10.137.0.9': '', '/qubes-firewall/10.137.0.9/policy': 'accept',
  });
  const kernel = new FirewallFakeKernel();
  await kernel.apply(addFirewallSkeleton(new NftTransaction()));
  const notify = createDesktopNotifier({ db, log, path: `${fake.dir}:/usr/sbin:/usr/bin:/sbin:/bin` });
  const engine = new FirewallEngine({ db, log, kernel, notify, resolve: async () => ({ ok: false, error: 'no such name' }), readDnsServers: async () => ({ v4: [], v6: [] }) });
  await engine.start();
  // Applied while the first alert is still showing.
  assert.match((await db.read('/qubes-firewall-applied/10.137.0.7'))!, /^1 blocked/);
  assert.match((await db.read('/qubes-firewall-applied/10.137.0.8'))!, /^1 partial/);
  assert.deepEqual(await fake.calls(), []);
  await writeFile(join(fake.dir, 'go'), '');
  await notify.idle();
  await engine.stop();
  const texts = (await fake.calls()).map((c) => c.argv.at(-1)).sort();
  assert.equal(texts.length, 2);
  assert.match(texts[0]!, /^Qubes firewall: some rules for 10\.137\.0\.8 are not in force \(rule 0000 left out: dsthost gone\.test did not resolve/);
  assert.match(texts[1]!, /^Qubes firewall: traffic from 10\.137\.0\.7 is blocked \(invalid rules/);
  assert.ok(!lines.some((l) => l.msg === 'desktop alert failed'));
});

test('16.6: a hung notify-send is killed at its time limit and logged', async (t) => {
  if (!needRoot(t)) return;
  const fake = await standIn(t, 'sleep 30');
  const { log, lines } = logger();
  const notify = createDesktopNotifier({ db: new MemoryQubesDB({ '/default-user': 'nobody' }), log, path: `${fake.dir}:/usr/sbin:/usr/bin:/sbin:/bin`, timeoutMs: 300 });
  notify({ ip: '10.137.0.7', outcome: 'blocked', reason: 'x' });
  await notify.idle();
  assert.ok(lines.some((l) => l.msg === 'desktop alert failed' && l.timedOut === true), JSON.stringify(lines));
});

test('16.6: a burst gives the first alerts and one summary; a bad /default-user falls back to "user"; not root: notify-send directly', async () => {
  const runs: { argv: readonly string[]; opts: ProcessOptions }[] = [];
  const { log, lines } = logger();
  const path = await mkdtemp(join(tmpdir(), 'qn-fwparity-path-'));
  await writeFile(join(path, 'notify-send'), '#!/bin/sh\n', { mode: 0o755 });
  const run = async (argv: readonly string[], opts: ProcessOptions) => {
    runs.push({ argv, opts });
    return { stdout: '', stderr: '', exitCode: 0, timedOut: false };
  };
  const notify = createDesktopNotifier({ db: new MemoryQubesDB({ '/default-user': '-rf' }), log, path, maxQueued: 2, asRoot: true, run, passwdFile: '/nonexistent' });
  for (let i = 1; i <= 10; i++) notify({ ip: `10.137.0.${i}`, outcome: 'blocked', reason: 'r' });
  await notify.idle();
  assert.equal(runs.length, 4);
  assert.deepEqual(runs[0]!.argv.slice(0, 4), ['runuser', '-u', 'user', '--']);
  assert.equal(runs[0]!.opts.env!.DBUS_SESSION_BUS_ADDRESS, 'unix:path=/run/user/1000/bus', 'uid 1000 when the user is unknown');
  assert.ok(runs[0]!.opts.timeoutMs! > 0);
  assert.match(String(runs[3]!.argv.at(-1)), /^Qubes firewall: 7 more qubes with rules not in force/);
  assert.ok(lines.some((l) => l.msg === 'invalid default user: alerting "user"'));

  runs.length = 0;
  const direct = createDesktopNotifier({ db: new MemoryQubesDB({}), log, path, asRoot: false, run });
  direct({ ip: '10.137.0.7', outcome: 'partial', reason: 'r' });
  await direct.idle();
  assert.equal(runs[0]!.argv[0], 'notify-send');
  await rm(path, { recursive: true, force: true });

  // Without notify-send the alert goes to the log only, and no process starts.
  runs.length = 0;
  const none = createDesktopNotifier({ db: new MemoryQubesDB({}), log, path: '/nonexistent', run });
  none({ ip: '10.137.0.7', outcome: 'partial', reason: 'r' });
  await none.idle();
  assert.equal(runs.length, 0);
});

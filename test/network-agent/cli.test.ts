// The agent's command line and pure parts: strict options, the watcher's argv, the idle clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { parseOptions, agentWatchArgs, AGENT_WATCHED_KEYS, WorkClock } from '@qubes-net/network-agent';
import { EXIT } from '@qubes-net/common/exit-codes';
import { AGENT_CLI } from './harness.js';

test('options: defaults, one flag name for the QubesDB directory, strict values', () => {
  const o = parseOptions(['run']);
  assert.equal(o.command, 'run');
  assert.equal(o.socket, '/run/qubes-net/agent.sock');
  assert.equal(o.idleExitMs, 30_000);
  assert.equal(o.firewall, 'auto');
  assert.equal(parseOptions(['run', '--qubesdb-run-dir', '/tmp/q']).qubesdbDir, '/tmp/q');
  assert.equal(parseOptions(['run', '--idle-exit', '0']).idleExitMs, 0);
  assert.throws(() => parseOptions(['run', '--idle-exit', '-1']));
  assert.throws(() => parseOptions(['run', '--idle-exit', '1e3']));
  assert.throws(() => parseOptions(['run', '--firewall', 'maybe']));
  assert.throws(() => parseOptions(['run', '--no-such-flag']));
});

test('the CLI exits with the shared codes: usage errors 64, --help 0', () => {
  const bad = spawnSync(process.execPath, [AGENT_CLI, 'run', '--idle-exit', 'x'], { encoding: 'utf8' });
  assert.equal(bad.status, EXIT.usage);
  assert.equal(spawnSync(process.execPath, [AGENT_CLI, 'frobnicate'], { encoding: 'utf8' }).status, EXIT.usage);
  assert.equal(spawnSync(process.execPath, [AGENT_CLI, '--help'], { encoding: 'utf8' }).status, EXIT.ok);
});

test('the watcher argv: every key the agent serves, resolv.conf, the uplink, the wake file, then --activate', () => {
  const a = agentWatchArgs({ cli: ['/usr/bin/qubes-net-agent'], uplinks: ['eth0'], runArgs: ['--idle-exit', '5000'] });
  for (const k of ['/qubes-netvm-gateway', '/qubes-firewall/', '/connected-ips', '/qubes-service/qubes-firewall']) assert.ok(AGENT_WATCHED_KEYS.includes(k), k);
  const qdb = a.flatMap((x, i) => (x === '--qdb' ? [a[i + 1]] : []));
  assert.deepEqual(qdb, [...AGENT_WATCHED_KEYS]);
  assert.deepEqual(a.flatMap((x, i) => (x === '--file' ? [a[i + 1]] : [])), ['/etc/resolv.conf', '/run/systemd/resolve/resolv.conf']);
  const act = a.indexOf('--activate');
  assert.ok(act > a.indexOf('--wake-file') && a.indexOf('--link') < act);
  assert.deepEqual(a.slice(act), ['--activate', '/run/qubes-net/agent.sock', '--', '/usr/bin/qubes-net-agent', 'run', '--socket', '/run/qubes-net/agent.sock', '--wake-file', '/run/qubes-net/agent.wake', '--idle-exit', '5000']);
  const printed = spawnSync(process.execPath, [AGENT_CLI, 'watch-args', '--json', '--idle-exit', '5000'], { encoding: 'utf8' });
  assert.deepEqual(JSON.parse(printed.stdout), a);
  // Under systemd the .socket unit holds the socket: the watcher only pokes it.
  const n = agentWatchArgs({ cli: ['/usr/bin/qubes-net-agent'], mode: 'notify' });
  assert.deepEqual(n.slice(-2), ['--notify', '/run/qubes-net/agent.sock']);
  assert.ok(!n.includes('--activate') && !n.includes('run'));
});

test('the idle clock fires once, and not while work is in flight', async () => {
  let fired = 0;
  let release!: () => void;
  const clock = new WorkClock(5, () => fired++);
  clock.start();
  const work = clock.around(() => new Promise<void>((r) => (release = r)));
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(fired, 0, 'in-flight work holds the agent up');
  release();
  await work;
  await new Promise<void>((r) => {
    const t = setInterval(() => {
      if (fired) {
        clearInterval(t);
        r();
      }
    }, 5);
  });
  clock.touch();
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(fired, 1);
});

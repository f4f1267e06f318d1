// `qubes-net-watch` (native-bindings/src/watch.c) against the real QubesDB daemon: every
// trigger source (QubesDB keys, files, links, the wake file, start), every action (--run,
// --notify, --activate), debounce, one run at a time with exactly one more run, reconnect after
// a daemon restart, and a clean SIGTERM. The commands it runs are small stand-ins that only
// record that they ran; the link test creates veth links inside a throwaway namespace.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openQubesDB, type QubesDB } from '@qubes-net/qubesdb';
import { NetnsSession } from '@qubes-net/netns';
import { startQubesDB, type RunningQubesDB } from '../helpers/qubesdb.js';
import { needRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const WATCH = join(repoRoot, 'native-bindings', 'build', 'qubes-net-watch');

let dir: string;
let qdb: RunningQubesDB;
let db: QubesDB;
let seq = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qn-guest-watch-'));
  qdb = await startQubesDB();
  db = openQubesDB({ runDir: qdb.runDir });
});
after(async () => {
  await db?.close().catch(() => undefined);
  await qdb?.stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

interface LogLine { msg: string; [k: string]: unknown }

/** A running watcher: its JSON log lines (stderr) and a clean stop. */
class Watcher {
  readonly logs: LogLine[] = [];
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      buf += s;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        // Anything else on stderr (a child's error) is kept as a line of its own.
        this.logs.push(line.startsWith('{') ? JSON.parse(line) as LogLine : { msg: 'stderr', line });
      }
    });
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }
  count(msg: string): number {
    return this.logs.filter((l) => l.msg === msg).length;
  }
  waitLog(msg: string, n = 1): Promise<true> {
    return waitFor(`${n}× "${msg}" from the watcher`, () => this.count(msg) >= n || undefined);
  }
  /** SIGTERM and the exit code; a watcher still there after a generous guard is killed and reported. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill('SIGTERM');
    let guard: NodeJS.Timeout | undefined;
    const hung = new Promise<'hung'>((resolve) => (guard = setTimeout(() => resolve('hung'), 15_000)));
    const res = await Promise.race([this.exited, hung]);
    clearTimeout(guard);
    if (res === 'hung') {
      this.child.kill('SIGKILL');
      throw new Error(`the watcher did not stop on SIGTERM; its log: ${JSON.stringify(this.logs)}`);
    }
    return res;
  }
}

/** This process's environment without the test runner's marker, which would make a Node child run as a test file. */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

function startWatcher(args: string[], spawnFn: (cmd: string, args: string[]) => ChildProcess = (c, a) => spawn(c, a, { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv() })): Watcher {
  const w = new Watcher(spawnFn(WATCH, args));
  return w;
}

/** A command that appends one line to `marker` per run and then takes `ms` to finish. */
function recorder(marker: string, ms = 0): string[] {
  return ['/bin/sh', '-c', 'echo run >> "$1"; [ "$2" = 0 ] || sleep "$2"', 'recorder', marker, String(ms / 1000)];
}

async function runs(marker: string): Promise<number> {
  return readFile(marker, 'utf8').then((t) => t.split('\n').filter(Boolean).length, () => 0);
}

function fresh(name: string): string {
  return join(dir, `${++seq}-${name}`);
}

test('--qdb --run: a burst of writes is one run; writes during a run give exactly one more', async () => {
  const marker = fresh('runs');
  const key = `/watch-test-${seq}`;
  const w = startWatcher(['--qdb-dir', qdb.runDir, '--debounce-ms', '150', '--qdb', key, '--qdb', `${key}-dir/`, '--run', '--', ...recorder(marker, 600)]);
  try {
    await w.waitLog('watching');
    for (let i = 0; i < 5; i++) await db.write(key, String(i));
    await w.waitLog('run started');
    // During the run: several changes, also under the watched directory.
    await db.write(`${key}-dir/a`, '1');
    await db.write(key, 'x');
    await db.write(`${key}-dir/b`, '2');
    await w.waitLog('run finished', 2);
    // A later change is a third run; had the burst or the run's triggers made more, we would see 4.
    await db.rm(key);
    await w.waitLog('run finished', 3);
    assert.equal(await runs(marker), 3);
    assert.equal(w.count('run started'), 3);
    assert.ok(w.logs.some((l) => l.msg === 'trigger' && l.source === 'qubesdb' && l.detail === `${key}-dir/b`));
    assert.equal(await w.stop(), 0);
  } finally {
    await w.stop();
  }
});

test('--run-at-start runs once at start; a key outside the watched ones does not trigger', async () => {
  const marker = fresh('runs');
  const key = `/watch-test-${seq}`;
  const w = startWatcher(['--qdb-dir', qdb.runDir, '--run-at-start', '--debounce-ms', '0', '--qdb', key, '--run', '--', ...recorder(marker)]);
  try {
    await w.waitLog('run finished');
    await db.write(`${key}-other`, '1'); // a prefix of nothing we watch
    await db.write(key, '1');
    await w.waitLog('run finished', 2);
    assert.equal(await runs(marker), 2);
    assert.ok(!w.logs.some((l) => l.detail === `${key}-other`));
  } finally {
    await w.stop();
  }
});

test('QubesDB daemon restart: the watcher reconnects, runs once, and its watches still work', async () => {
  const marker = fresh('runs');
  const key = `/watch-test-${seq}`;
  const w = startWatcher(['--qdb-dir', qdb.runDir, '--debounce-ms', '0', '--qdb', key, '--run', '--', ...recorder(marker)]);
  try {
    await w.waitLog('watching');
    await qdb.restart();
    await w.waitLog('run finished');
    assert.ok(w.logs.some((l) => l.msg === 'trigger' && l.detail === 'reconnected'), JSON.stringify(w.logs));
    await db.write(key, 'after restart');
    await w.waitLog('run finished', 2);
    assert.ok(w.logs.some((l) => l.msg === 'trigger' && l.detail === key));
  } finally {
    await w.stop();
  }
});

test('--file: rename over, symlink replacement, in-place write and removal trigger; other names do not; a missing directory is waited for', async () => {
  const marker = fresh('runs');
  const etc = fresh('etc');
  const resolv = join(etc, 'resolv.conf');
  const w = startWatcher(['--debounce-ms', '0', '--file', resolv, '--run', '--', ...recorder(marker)]);
  try {
    await w.waitLog('watching');
    await mkdir(etc); // the directory appears later (retried)
    await w.waitLog('run finished');
    await writeFile(join(etc, 'other'), 'x');
    await writeFile(join(etc, 'resolv.conf.tmp'), 'nameserver 10.139.1.1\n');
    await rename(join(etc, 'resolv.conf.tmp'), resolv);
    await w.waitLog('run finished', 2);
    await writeFile(join(etc, 'stub'), 'nameserver 127.0.0.53\n');
    await symlink('stub', join(etc, 'link.tmp'));
    await rename(join(etc, 'link.tmp'), resolv);
    await w.waitLog('run finished', 3);
    await writeFile(resolv, 'nameserver 10.139.1.2\n'); // through the symlink: the target changes, written in place
    await writeFile(join(etc, 'resolv.conf.new'), 'x');
    await rm(resolv);
    await w.waitLog('run finished', 4);
    assert.ok(w.logs.filter((l) => l.msg === 'trigger').every((l) => l.detail === 'resolv.conf'), JSON.stringify(w.logs));
  } finally {
    await w.stop();
  }
});

test('--link: a link appearing, going down and going away triggers; being brought up does not', async (t) => {
  if (!needRoot(t)) return;
  const session = await NetnsSession.create('guest-watch');
  try {
    const q = await session.qube('w');
    const marker = fresh('runs');
    const w = startWatcher(['--debounce-ms', '0', '--link', 'eth5', '--run', '--', ...recorder(marker)], (c, a) => q.spawn(c, a, { stdio: ['ignore', 'ignore', 'pipe'] }));
    try {
      await w.waitLog('watching');
      await q.exec('ip', ['link', 'add', 'eth6', 'type', 'veth', 'peer', 'name', 'eth6p']); // not ours
      await q.exec('ip', ['link', 'add', 'eth5', 'type', 'veth', 'peer', 'name', 'eth5p']);
      await w.waitLog('run finished');
      await q.exec('ip', ['link', 'set', 'eth5', 'up']);
      await q.exec('ip', ['link', 'set', 'eth5', 'down']);
      await w.waitLog('run finished', 2);
      await q.exec('ip', ['link', 'del', 'eth5']);
      await w.waitLog('run finished', 3);
      const details = w.logs.filter((l) => l.msg === 'trigger').map((l) => l.detail);
      assert.deepEqual(details, ['eth5 appeared', 'eth5 down', 'eth5 removed']);
    } finally {
      await w.stop();
    }
  } finally {
    await session.destroy();
  }
});

/** A stand-in agent socket: records request lines and answers each with `reply`. */
async function agentSocket(path: string, reply = '{"ok":true,"code":"ok","message":"synced","details":{}}'): Promise<{ server: Server; lines: string[] }> {
  const lines: string[] = [];
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (s: string) => {
      buf += s;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        lines.push(buf.slice(0, nl));
        sock.end(reply + '\n');
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { server, lines };
}

test('--notify: one JSON line per (debounced) trigger, {"op":"sync"} by default or --request; retried until the socket answers', async () => {
  const sock = fresh('agent.sock');
  const key = `/watch-test-${seq}`;
  // Nobody listens yet: the request at start fails and is retried with back-off.
  const w = startWatcher(['--qdb-dir', qdb.runDir, '--run-at-start', '--debounce-ms', '0', '--qdb', key, '--notify', sock]);
  try {
    await w.waitLog('request failed, retrying');
    const agent = await agentSocket(sock);
    try {
      await w.waitLog('reply');
      assert.deepEqual(agent.lines, ['{"op":"sync"}']);
      await db.write(key, '1');
      await w.waitLog('reply', 2);
      assert.deepEqual(agent.lines, ['{"op":"sync"}', '{"op":"sync"}']);
    } finally {
      agent.server.close();
    }
  } finally {
    await w.stop();
  }
  const sock2 = fresh('agent.sock');
  const agent2 = await agentSocket(sock2);
  const w2 = startWatcher(['--run-at-start', '--notify', sock2, '--request', '{"op":"sync","reason":"resolv.conf"}']);
  try {
    await w2.waitLog('reply');
    assert.deepEqual(agent2.lines, ['{"op":"sync","reason":"resolv.conf"}']);
  } finally {
    await w2.stop();
    agent2.server.close();
  }
});

/** An agent for --activate: takes the socket on fd 3 (LISTEN_FDS), answers, exits when idle. */
async function activatedAgent(log: string): Promise<string> {
  const path = fresh('agent.mjs');
  await writeFile(path, `
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:net';
const log = (o) => appendFileSync(${JSON.stringify(log)}, JSON.stringify(o) + '\\n');
log({ start: true, fds: process.env.LISTEN_FDS, pidOk: process.env.LISTEN_PID === String(process.pid) });
let idle;
const arm = () => { clearTimeout(idle); idle = setTimeout(() => { server.close(); process.exit(0); }, 300); };
const server = createServer((sock) => {
  arm();
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (s) => { buf += s; const nl = buf.indexOf('\\n'); if (nl >= 0) { log({ request: buf.slice(0, nl) }); sock.end('{"ok":true,"code":"ok"}\\n'); } });
});
server.listen({ fd: 3 }, arm);
`);
  return path;
}

async function agentLog(path: string): Promise<Record<string, unknown>[]> {
  return readFile(path, 'utf8').then((t) => t.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>), () => []);
}

test('--activate: a client connecting or a trigger starts the agent with the socket as fd 3; it is started again after it exits', async () => {
  const sock = fresh('act.sock');
  const log = fresh('agent-log');
  const key = `/watch-test-${seq}`;
  const wake = fresh('wake');
  const agent = await activatedAgent(log);
  const w = startWatcher(['--qdb-dir', qdb.runDir, '--debounce-ms', '0', '--qdb', key, '--wake-file', wake, '--activate', sock, '--', process.execPath, agent]);
  try {
    await w.waitLog('watching');
    assert.equal((await agentLog(log)).length, 0, 'nothing started before there is work');
    // A client (the hotplug client) connects: the agent starts and answers it.
    const reply = await new Promise<string>((resolve, reject) => {
      const c = connect(sock, () => c.write('{"op":"status"}\n'));
      let got = '';
      c.setEncoding('utf8');
      c.on('data', (s: string) => (got += s));
      c.on('end', () => resolve(got));
      c.on('error', reject);
      setTimeout(() => reject(new Error(`no reply; watcher log: ${JSON.stringify(w.logs)}`)), 15_000).unref();
    });
    assert.equal(reply, '{"ok":true,"code":"ok"}\n');
    await w.waitLog('agent exited');
    // A QubesDB change: the watcher's own request starts it again.
    await db.write(key, '1');
    await w.waitLog('agent exited', 2);
    // The wake file: a deadline the agent asked for.
    await writeFile(wake, String(Date.now() + 200));
    await w.waitLog('agent exited', 3);
    const entries = await agentLog(log);
    assert.deepEqual(entries.filter((e) => e.start).map((e) => [e.fds, e.pidOk]), [['1', true], ['1', true], ['1', true]]);
    assert.deepEqual(entries.filter((e) => e.request).map((e) => e.request), ['{"op":"status"}', '{"op":"sync"}', '{"op":"sync"}']);
    assert.ok(w.logs.some((l) => l.msg === 'trigger' && l.source === 'wake'));
    assert.equal(await w.stop(), 0);
    assert.equal(existsSync(sock), false, 'the socket is removed on stop');
  } finally {
    await w.stop();
  }
});

test('--group: one process carries an uplink-like --run group and an agent-like --activate group; each acts only on its own triggers', async () => {
  const marker = fresh('runs');
  const sock = fresh('grp.sock');
  const log = fresh('agent-log');
  const keyA = `/watch-test-${seq}-uplink`;
  const dirB = `/watch-test-${seq}-agent/`;
  const file = fresh('resolv.conf');
  const agent = await activatedAgent(log);
  const w = startWatcher([
    '--qdb-dir', qdb.runDir,
    '--debounce-ms', '0', '--qdb', keyA, '--run', '--', ...recorder(marker),
    '--group', '--debounce-ms', '150', '--qdb', dirB, '--qdb', keyA, '--file', file, '--activate', sock, '--', process.execPath, agent,
  ]);
  try {
    await w.waitLog('watching', 2);
    assert.deepEqual(w.logs.filter((l) => l.msg === 'watching').map((l) => [l.group, l.action]), [[0, 'run'], [1, 'activate']]);
    // One QubesDB connection for both: the shared key is registered once.
    assert.equal(w.logs.find((l) => l.msg === 'qubesdb watches registered')?.count, 2);
    // Only the agent's group watches this directory.
    await db.write(`${dirB}x`, '1');
    await w.waitLog('agent exited');
    assert.equal(await runs(marker), 0, 'the uplink group stays quiet on the agent\'s keys');
    // Only the agent's group watches the file.
    await writeFile(file, 'nameserver 192.0.2.1\n');
    await w.waitLog('agent exited', 2);
    assert.equal(await runs(marker), 0);
    // The shared key wakes both, each once.
    await db.write(keyA, '1');
    await w.waitLog('run finished');
    await w.waitLog('agent exited', 3);
    assert.equal(await runs(marker), 1);
    const entries = await agentLog(log);
    assert.deepEqual(entries.filter((e) => e.request).map((e) => e.request), ['{"op":"sync"}', '{"op":"sync"}', '{"op":"sync"}']);
    assert.ok(w.logs.filter((l) => l.msg === 'run started').every((l) => l.group === 0));
    assert.ok(w.logs.filter((l) => l.msg === 'activated').every((l) => l.group === 1));
    assert.equal(await w.stop(), 0);
    assert.equal(existsSync(sock), false, 'the socket is removed on stop');
  } finally {
    await w.stop();
  }
});

test('SIGTERM: the running command is stopped and the watcher exits 0', async () => {
  const marker = fresh('runs');
  const w = startWatcher(['--run-at-start', '--debounce-ms', '0', '--run', '--', ...recorder(marker, 30_000)]);
  await w.waitLog('run started');
  const child = w.logs.find((l) => l.msg === 'run started')!.child as number;
  assert.equal(await w.stop(), 0);
  assert.ok(w.logs.some((l) => l.msg === 'run killed' && l.signal === 15), JSON.stringify(w.logs));
  assert.equal(existsSync(`/proc/${child}`), false);
});

test('bad arguments are refused with exit 64 before anything starts', async () => {
  for (const args of [
    [],
    ['--qdb', 'no-slash', '--notify', '/x'],
    ['--qdb', '/a', '--run'],
    ['--link', 'eth0;x', '--notify', '/x'],
    ['--file', 'relative', '--notify', '/x'],
    ['--notify', '/x', '--request', 'not json'],
    ['--notify', '/x', '--run', '--', 'true'],
    ['--debounce-ms', '-1', '--notify', '/x'],
    ['--notify', '/x', '--group'],
    ['--run', '--', 'true', '--group', '--qdb', '/a'],
    ['--activate', '/tmp/x.sock', '--', 'true', '--group', '--activate', '/tmp/x.sock', '--', 'true'],
  ]) {
    const w = startWatcher(args);
    assert.equal(await w.exited, 64, JSON.stringify(args));
  }
});

test('under journald (JOURNAL_STREAM names its stderr) every line carries the <N> priority of its level', async () => {
  const { openSync, closeSync, fstatSync, readFileSync } = await import('node:fs');
  const logFile = fresh('journal.log');
  const marker = fresh('marker');
  const fd = openSync(logFile, 'w');
  const st = fstatSync(fd);
  // A --file in a directory that does not exist yet logs a warning (40) besides the info (30) lines.
  const missing = join(fresh('absent-dir'), 'resolv.conf');
  const child = spawn(WATCH, ['--file', missing, '--run-at-start', '--run', '--', ...recorder(marker)], {
    stdio: ['ignore', 'ignore', fd],
    env: { ...childEnv(), JOURNAL_STREAM: `${st.dev}:${st.ino}` },
  });
  closeSync(fd);
  await waitFor('the start run', async () => ((await runs(marker)) >= 1) || undefined);
  child.kill('SIGTERM');
  await new Promise((resolve) => child.on('exit', resolve));
  const lines = readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
  assert.ok(lines.length >= 2, lines.join('\n'));
  const priority: Record<number, string> = { 60: '2', 50: '3', 40: '4', 30: '6', 20: '7', 10: '7' };
  for (const line of lines) {
    const m = /^<(\d)>(\{.*\})$/.exec(line);
    assert.ok(m, `not a prefixed JSON line: ${line}`);
    assert.equal(m[1], priority[(JSON.parse(m[2]!) as { level: number }).level], line);
  }
});

// The CLI as users run it: `up` leaves a supervisor, separate invocations control the lab,
// `down` removes every namespace and process by exact name; a dead supervisor's leftovers are
// removed by the next `down`.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { needRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'packages', 'lab', 'dist', 'cli.js');
const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function setup(): Promise<{ root: string; file: string; lab: string; cli: (...args: string[]) => { code: number; out: string; err: string } }> {
  const root = await mkdtemp(join(tmpdir(), 'qnet-e2e-cli-'));
  dirs.push(root);
  const lab = `c${randomBytes(3).toString('hex')}`;
  const file = join(root, 'topology.yaml');
  await writeFile(file, `name: ${lab}
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }
  - { name: work, qid: 7, netvm: sys-firewall }
`);
  const cli = (...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, QUBES_NET_LAB_STATE_ROOT: join(root, 'state') }, encoding: 'utf8', timeout: 120_000 });
    return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
  };
  return { root, file, lab, cli };
}

function namespacesOf(session: string): string[] {
  return existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(`${session}-`)) : [];
}

test('up, status, exec, netvm, firewall, down from separate invocations', async (t) => {
  if (!needRoot(t)) return;
  const { root, file, lab, cli } = await setup();
  t.after(() => void cli('--lab', lab, 'down'));
  const up = cli('up', file);
  assert.equal(up.code, 0, up.out + up.err);
  assert.match(up.out, /work\s+running/);

  const st = cli('status', '--json');
  assert.equal(st.code, 0, st.err);
  const status = JSON.parse(st.out) as { session: string; qubes: Array<{ name: string; state: string; ip?: string; dnsOk?: boolean; uplink?: string; agents: Array<{ role: string; running: boolean }> }> };
  const work = status.qubes.find((q) => q.name === 'work')!;
  assert.equal(work.state, 'running');
  assert.equal(work.ip, '10.137.0.7');
  assert.equal(work.dnsOk, true);
  assert.match(work.uplink ?? '', / ok /);
  assert.deepEqual(work.agents.map((a) => [a.role, a.running]), [['qubesdb', true], ['guest', true]]);
  assert.equal(namespacesOf(status.session).length, 4, 'three qubes and the internet');

  const table = cli('status', '--no-probe');
  assert.match(table.out, /^QUBE\s+STATE/m);

  const ex = cli('exec', 'work', '--', 'qn-http-get', 'http://www.example.test/');
  assert.equal(ex.code, 0, ex.err);
  assert.equal(ex.out, 'qubes-net fake internet\n');

  assert.equal(cli('netvm', 'work', 'sys-net').code, 0);
  assert.equal(cli('exec', 'work', '--', 'qn-ping', '203.0.113.80').code, 0);
  const fw = cli('firewall', 'work', 'action=drop');
  assert.equal(fw.code, 0, fw.err);
  assert.match(fw.out, /10\.137\.0\.7: ok/);
  assert.notEqual(cli('exec', 'work', '--', 'qn-ping', '-W', '800', '203.0.113.80').code, 0);
  assert.equal(cli('firewall', 'work', 'action=accept colour=red').code, 1, 'a bad rule is refused');

  const again = cli('up', file);
  assert.notEqual(again.code, 0);
  assert.match(again.err, /already up/);

  const down = cli('down');
  assert.equal(down.code, 0, down.err);
  assert.deepEqual(namespacesOf(status.session), []);
  assert.equal(existsSync(join(root, 'state', lab)), false);
  assert.equal(cli('status').code, 3);
});

test('a supervisor that died is cleaned up by down, by exact name', async (t) => {
  if (!needRoot(t)) return;
  const { root, file, lab, cli } = await setup();
  t.after(() => void cli('--lab', lab, 'down'));
  assert.equal(cli('up', file).code, 0);
  const state = JSON.parse(readFileSync(join(root, 'state', lab, 'state.json'), 'utf8')) as { supervisorPid: number; session: string };
  assert.ok(namespacesOf(state.session).length > 0);
  process.kill(state.supervisorPid, 'SIGKILL');
  // Reaped (not just a zombie): then its session is stale for @qubes-net/netns.
  await waitFor('the supervisor to be reaped', () => !existsSync(`/proc/${state.supervisorPid}`));
  const down = cli('down');
  assert.equal(down.code, 0, down.out + down.err);
  assert.deepEqual(namespacesOf(state.session), []);
  assert.equal(existsSync(join(root, 'state', lab)), false);
});

test('topology errors are reported with file, line and field; nothing is started', async (t) => {
  if (!needRoot(t)) return;
  const { root, cli } = await setup();
  const bad = join(root, 'bad.yaml');
  await writeFile(bad, 'qubes:\n  - name: work\n    qid: 7\n    netvm: nowhere\n');
  const r = cli('up', bad);
  assert.equal(r.code, 2);
  assert.match(r.err, /bad\.yaml:4: qubes\[0\]\.netvm: no qube named "nowhere"/);
  assert.equal(existsSync(join(root, 'state')), false);
});

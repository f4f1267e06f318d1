// Issue 16.7, guest parts, against the real kernel in a private network namespace
// (`unshare --net`, a veth pair as the uplink, gone with the process): `resolvectl dns IF …`
// when systemd-resolved is in use (resolvectl installed, the unit enabled, and we are in the
// system's network namespace), never otherwise; disable-dns-server read from QubesDB or,
// without a QubesDB entry, from upstream's flag file, and then resolv.conf emptied and
// resolved not told. resolvectl and systemctl are stand-in scripts that record their argv.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isRoot, needRoot } from '../helpers/root.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const INDEX = pathToFileURL(join(repoRoot, 'packages', 'guest-agent', 'dist', 'index.js')).href;

const SCRIPT = `
import { applyOnce, DEFAULT_PATHS } from ${JSON.stringify(INDEX)};
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
const [dir, scenarioJson] = process.argv.slice(1);
const sc = JSON.parse(scenarioJson);
const made = spawnSync('ip', ['link', 'add', 'qngp0', 'type', 'veth', 'peer', 'name', 'qngp1'], { encoding: 'utf8' });
if (made.status !== 0) throw new Error(made.stderr);
const keys = new Map(Object.entries({
  '/qubes-ip': '10.137.0.7', '/qubes-netmask': '255.255.255.255', '/qubes-gateway': '10.137.0.3',
  '/qubes-primary-dns': '10.139.1.1', '/qubes-secondary-dns': '10.139.1.2', ...sc.keys,
}));
const db = { read: async (k) => keys.get(k), multiread: async () => new Map(), write: async () => undefined };
const quiet = () => undefined;
const ctx = {
  db, log: { debug: quiet, info: quiet, warn: quiet, error: quiet }, iface: 'qngp0', generation: () => '1',
  paths: {
    ...DEFAULT_PATHS, stateDir: dir, resolvConf: dir + '/resolv.conf', protectedDirs: [], hooks: [], driverSocket: dir + '/none.sock',
    serviceDir: dir + '/qubes-service',
    resolved: { resolvectl: dir + '/resolvectl', systemctl: dir + '/systemctl', initNetns: sc.systemNetns ? '/proc/1/ns/net' : '/proc/self/ns/net' },
  },
};
const res = await applyOnce(ctx);
console.log(JSON.stringify({ status: res.status, resolvConf: readFileSync(dir + '/resolv.conf', 'utf8') }));
`;

interface Scenario {
  keys?: Record<string, string>;
  /** The flag file /run/qubes-service/disable-dns-server exists. */
  flag?: boolean;
  /** systemctl is-enabled's exit code. */
  enabled?: boolean;
  /** Compare with PID 1's namespace (which differs here) instead of our own. */
  systemNetns?: boolean;
}

let dir: string;

/** A stand-in program: records its argv as one JSON line in `log`, exits with `code`. */
async function recorder(path: string, log: string, code: string): Promise<void> {
  await writeFile(path, [
    `#!${process.execPath}`,
    `require('node:fs').appendFileSync(${JSON.stringify(log)}, JSON.stringify(process.argv.slice(2)) + '\\n');`,
    `process.exit(Number(require('node:fs').readFileSync(${JSON.stringify(code)}, 'utf8')));`,
    '',
  ].join('\n'));
  await chmod(path, 0o755);
}

async function lines(path: string): Promise<string[][]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as string[]);
}

async function run(sc: Scenario): Promise<{ status: string; resolvConf: string; resolvectl: string[][]; systemctl: string[][] }> {
  await rm(join(dir, 'resolvectl.log'), { force: true });
  await rm(join(dir, 'systemctl.log'), { force: true });
  await rm(join(dir, 'resolv.conf'), { force: true });
  await rm(join(dir, 'qubes-service'), { recursive: true, force: true });
  await mkdir(join(dir, 'qubes-service'));
  if (sc.flag) await writeFile(join(dir, 'qubes-service', 'disable-dns-server'), '');
  await writeFile(join(dir, 'systemctl.code'), sc.enabled === false ? '1' : '0');
  const r = spawnSync('unshare', ['--net', process.execPath, '--input-type=module', '-e', SCRIPT, dir, JSON.stringify(sc)], {
    encoding: 'utf8', timeout: 30_000, env: { ...process.env, QUBES_NET_UPLINK_DRIVERS: 'vif,none' },
  });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { status: string; resolvConf: string };
  return { ...out, resolvectl: await lines(join(dir, 'resolvectl.log')), systemctl: await lines(join(dir, 'systemctl.log')) };
}

before(async () => {
  if (!isRoot()) return;
  dir = await mkdtemp(join(tmpdir(), 'qn-gparity-'));
  await writeFile(join(dir, 'resolvectl.code'), '0');
  await recorder(join(dir, 'resolvectl'), join(dir, 'resolvectl.log'), join(dir, 'resolvectl.code'));
  await recorder(join(dir, 'systemctl'), join(dir, 'systemctl.log'), join(dir, 'systemctl.code'));
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('systemd-resolved in use: resolvectl dns IF with the servers, after resolv.conf', async (t) => {
  if (!needRoot(t)) return;
  const r = await run({});
  assert.equal(r.status, 'ok');
  assert.equal(r.resolvConf, 'nameserver 10.139.1.1\nnameserver 10.139.1.2\n');
  assert.deepEqual(r.systemctl, [['is-enabled', '--quiet', 'systemd-resolved.service']]);
  assert.deepEqual(r.resolvectl, [['dns', 'qngp0', '10.139.1.1', '10.139.1.2']]);
});

test('systemd-resolved not enabled, or another network namespace than the system\'s: resolvectl not run', async (t) => {
  if (!needRoot(t)) return;
  const off = await run({ enabled: false });
  assert.equal(off.status, 'ok');
  assert.equal(off.systemctl.length, 1);
  assert.deepEqual(off.resolvectl, []);
  const elsewhere = await run({ systemNetns: true });
  assert.deepEqual(elsewhere.systemctl, [], 'decided before asking systemctl');
  assert.deepEqual(elsewhere.resolvectl, []);
});

test('a failing resolvectl is logged, not fatal: the uplink stays ok', async (t) => {
  if (!needRoot(t)) return;
  await writeFile(join(dir, 'resolvectl.code'), '1');
  t.after(() => writeFile(join(dir, 'resolvectl.code'), '0'));
  const r = await run({});
  assert.equal(r.status, 'ok');
  assert.equal(r.resolvectl.length, 1);
});

test('disable-dns-server (QubesDB "1", or no entry and the flag file): resolv.conf emptied, resolved not told', async (t) => {
  if (!needRoot(t)) return;
  for (const sc of [{ keys: { '/qubes-service/disable-dns-server': '1' } }, { flag: true }] as Scenario[]) {
    const r = await run(sc);
    assert.equal(r.status, 'ok', JSON.stringify(sc));
    assert.equal(r.resolvConf, '\n', JSON.stringify(sc));
    assert.deepEqual(r.resolvectl, [], JSON.stringify(sc));
  }
  // QubesDB's explicit "0" wins over a flag file left from boot.
  const r = await run({ flag: true, keys: { '/qubes-service/disable-dns-server': '0' } });
  assert.equal(r.resolvConf, 'nameserver 10.139.1.1\nnameserver 10.139.1.2\n');
  assert.equal(r.resolvectl.length, 1);
});

// `qubes-net-uplink` (native-bindings/src/uplink.c) against stand-in daemons on a socket in a
// temporary directory: what it sends, how it reads replies (exit code from the reply, strict
// about everything else), and when it falls back to the CLI. The CLI here is a stand-in that
// only records its arguments and exits 42, so nothing touches any network.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeDaemon, replyWith } from './fake-daemon.js';
import { UPLINK } from './harness.js';

let dir: string;
let fakeCli: string;
let cliArgsFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qn-uplink-'));
  fakeCli = join(dir, 'fake-cli.mjs');
  cliArgsFile = join(dir, 'cli-args');
  await writeFile(fakeCli, `#!${process.execPath}\nimport { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(cliArgsFile)}, JSON.stringify(process.argv.slice(2)));\nprocess.exit(42);\n`);
  await chmod(fakeCli, 0o755);
});
after(() => rm(dir, { recursive: true, force: true }));

function runUplink(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(UPLINK, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', QUBES_NET_GUEST_CLI: fakeCli, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

async function withDaemon(reply: (line: string, sock: Socket) => void, args: string[], env: Record<string, string> = {}) {
  const d = await fakeDaemon(dir, reply);
  try {
    await rm(cliArgsFile, { force: true });
    const res = await runUplink(args, { QUBES_NET_GUEST_SOCKET: d.path, ...env });
    const cliArgs = await readFile(cliArgsFile, 'utf8').then((t) => JSON.parse(t) as string[], () => undefined);
    return { ...res, requests: d.requests, cliArgs };
  } finally {
    await new Promise((r) => d.server.close(r));
  }
}


test('sends one request line and exits with the reply\'s exitCode', async () => {
  const r = await withDaemon(replyWith('{"ok":true,"ifname":"eth0","result":"ok","detail":"eth0 10.137.0.7/32","exitCode":0}\n'), ['apply', 'eth0']);
  assert.deepEqual(r.requests, ['{"op":"apply","iface":"eth0"}']);
  assert.equal(r.code, 0);
  assert.equal(r.cliArgs, undefined, 'no CLI run');
  const rm1 = await withDaemon(replyWith('{"ok":true,"result":"unconfigured","detail":"eth1 removed","exitCode":0}\n'), ['remove', 'eth1']);
  assert.deepEqual(rm1.requests, ['{"op":"remove","iface":"eth1"}']);
  assert.equal(rm1.code, 0);
  for (const code of [2, 3, 4]) {
    const r2 = await withDaemon(replyWith(`{"ok":true,"result":"error","detail":"eth0 /qubes-ip: bad","exitCode":${code}}\n`), ['apply', 'eth0']);
    assert.equal(r2.code, code);
    assert.match(r2.stderr, /apply eth0: error: eth0 \/qubes-ip: bad/);
  }
});

test('only top-level members count: text in strings and nested values is not mistaken for them', async () => {
  const tricky = '{"ok":true,"detail":"\\"exitCode\\":9, \\"ok\\":false \\u00e9","x":{"exitCode":7,"a":[1,{"ok":false}],"b":null},"y":[true,false,-1.5e3],"exitCode":2}\n';
  assert.equal((await withDaemon(replyWith(tricky), ['apply', 'eth0'])).code, 2);
});

test('refusals and unreadable replies are failures (64 or 3), never a silent success', async () => {
  const refused = await withDaemon(replyWith('{"ok":false,"error":"iface is not an interface name","exitCode":64}\n'), ['apply', 'eth0']);
  assert.equal(refused.code, 64);
  assert.match(refused.stderr, /the daemon refused: iface is not an interface name/);
  assert.equal((await withDaemon(replyWith('{"ok":false,"error":"x"}\n'), ['apply', 'eth0'])).code, 3);
  for (const bad of ['hello\n', '{"ok":true}\n', '{"ok":true,"exitCode":300}\n', '{"ok":true,"exitCode":"0"}\n', '{"ok":true,"exitCode":0\n', '[]\n', '{"ok":tru,"exitCode":0}\n']) {
    const r = await withDaemon(replyWith(bad), ['apply', 'eth0']);
    assert.equal(r.code, 3, bad);
    assert.equal(r.cliArgs, undefined, bad);
  }
  const huge = await withDaemon(replyWith(`{"ok":true,"detail":"${'x'.repeat(20_000)}","exitCode":0}\n`), ['apply', 'eth0']);
  assert.equal(huge.code, 3, 'a reply over the size limit is not read as success');
});

test('falls back to the CLI when no daemon answers, or the daemon closes without a reply', async () => {
  const missing = await runUplink(['apply', 'eth0'], { QUBES_NET_GUEST_SOCKET: join(dir, 'absent.sock') });
  assert.equal(missing.code, 42);
  assert.deepEqual(JSON.parse(await readFile(cliArgsFile, 'utf8')), ['apply', 'eth0', '--no-daemon']);
  const closed = await withDaemon((_l, sock) => sock.destroy(), ['remove', 'eth3']);
  assert.equal(closed.code, 42);
  assert.deepEqual(closed.cliArgs, ['remove', 'eth3', '--no-daemon']);
  const noCli = await runUplink(['apply', 'eth0'], { QUBES_NET_GUEST_SOCKET: join(dir, 'absent.sock'), QUBES_NET_GUEST_CLI: join(dir, 'no-such-cli') });
  assert.equal(noCli.code, 3);
  assert.match(noCli.stderr, /no guest daemon, and cannot run/);
});

test('a daemon that never replies: exit 3 after QUBES_NET_UPLINK_TIMEOUT, no fallback', async () => {
  const r = await withDaemon(() => undefined, ['apply', 'eth0'], { QUBES_NET_UPLINK_TIMEOUT: '1' });
  assert.equal(r.code, 3);
  assert.match(r.stderr, /no reply from .*timed out/i);
  assert.equal(r.cliArgs, undefined);
});

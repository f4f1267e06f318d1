// The kernel-writing layer without root: transaction validation and rendering, the fake
// kernel's nft semantics, and the process runner.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, chmod, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NftTransaction, FakeKernel, runProcess, ProcessError, IpBatchWriter, ipBatchLine, hookScopeArgv, underSystemd, HOOK_SCOPE_PREFIX, type NftTableRef } from '@qubes-net/common/kernel';

/** Running (a killed process whose parent is gone may stay a zombie where pid 1 does not reap). */
async function alive(pid: number): Promise<boolean> {
  const { readFile } = await import('node:fs/promises');
  try {
    return !/^\d+ \(.*\) [ZX]/.test(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const T: NftTableRef = { family: 'ip', name: 'qubes-test' };
const T6: NftTableRef = { family: 'ip6', name: 'qubes-test' };

function skeleton(): NftTransaction {
  return new NftTransaction()
    .addTable(T)
    .addSet(T, 'dns-addr', { type: 'ipv4_addr' })
    .addMap(T, 'dispatch', { type: 'ipv4_addr', value: 'verdict' })
    .addChain(T, 'forward', { type: 'filter', hook: 'forward', priority: 'filter + 10', policy: 'drop' })
    .flushChain(T, 'forward')
    .addRule(T, 'forward', 'ct state established,related accept')
    .addRule(T, 'forward', 'iifname != "vif*" accept')
    .addRule(T, 'forward', ['ip', 'saddr', 'vmap', '@dispatch']);
}

test('a transaction renders one line per operation in nft syntax', () => {
  const text = skeleton()
    .addChain(T, 'qbs-10-137-0-5')
    .addRule(T, 'qbs-10-137-0-5', 'meta l4proto icmp accept', { comment: '0000' })
    .addElements(T, 'dispatch', [{ key: '10.137.0.5', value: { jump: 'qbs-10-137-0-5' } }])
    .addSet(T6, 'allowed', { type: ['ifname', 'ipv6_addr'], elements: [['vif3.0', 'FD09::0A89:5']] })
    .destroyElements(T, 'dns-addr', ['10.139.1.1'])
    .destroyTable({ family: 'inet', name: 'old' })
    .render();
  assert.equal(
    text,
    [
      'add table ip qubes-test',
      'add set ip qubes-test dns-addr { type ipv4_addr; }',
      'add map ip qubes-test dispatch { type ipv4_addr : verdict; }',
      'add chain ip qubes-test forward { type filter hook forward priority filter + 10; policy drop; }',
      'flush chain ip qubes-test forward',
      'add rule ip qubes-test forward ct state established,related accept',
      'add rule ip qubes-test forward iifname != "vif*" accept',
      'add rule ip qubes-test forward ip saddr vmap @dispatch',
      'add chain ip qubes-test qbs-10-137-0-5',
      'add rule ip qubes-test qbs-10-137-0-5 meta l4proto icmp accept comment "0000"',
      'add element ip qubes-test dispatch { 10.137.0.5 : jump qbs-10-137-0-5 }',
      'add set ip6 qubes-test allowed { type ifname . ipv6_addr; elements = { "vif3.0" . fd09::a89:5 }; }',
      'add element ip qubes-test dns-addr { 10.139.1.1 }',
      'delete element ip qubes-test dns-addr { 10.139.1.1 }',
      'add table inet old',
      'delete table inet old',
      '',
    ].join('\n'),
  );
});

test('every smuggling attempt is kept as the first error and refused at render', () => {
  const bad: [string, (tx: NftTransaction) => unknown][] = [
    ['newline in a chain name', (tx) => tx.addChain(T, 'a\nflush ruleset')],
    ['semicolon in a table name', (tx) => tx.addTable({ family: 'ip', name: 'x;flush ruleset' })],
    ['bad family', (tx) => tx.addTable({ family: 'ipx' as 'ip', name: 'x' })],
    ['name starting with a digit', (tx) => tx.addChain(T, '10-137')],
    ['element with a brace', (tx) => tx.addElements(T, 'dns-addr', ['10.0.0.1 }; flush ruleset; add element ip t s { 1.1.1.1'])],
    ['non-canonical address', (tx) => tx.addElements(T, 'dns-addr', ['010.0.0.1'])],
    ['bad prefix', (tx) => tx.addElements(T, 'dns-addr', ['10.0.0.0/33'])],
    ['quote in an interface', (tx) => tx.addElements(T, 'allowed', [['vif"3', '10.0.0.1']])],
    ['hash in a rule', (tx) => tx.addRule(T, 'forward', 'accept # and more')],
    ['semicolon in a rule', (tx) => tx.addRule(T, 'forward', 'accept; flush ruleset')],
    ['newline in a rule', (tx) => tx.addRule(T, 'forward', 'accept\nflush ruleset')],
    ['quote smuggling in a rule', (tx) => tx.addRule(T, 'forward', 'iifname "a\nb" accept')],
    ['unterminated quote', (tx) => tx.addRule(T, 'forward', 'iifname "vif accept')],
    ['variable', (tx) => tx.addRule(T, 'forward', 'ip saddr $x accept')],
    ['comment with a quote', (tx) => tx.addRule(T, 'forward', 'accept', { comment: 'a" accept' })],
    ['bad priority', (tx) => tx.addChain(T, 'c', { type: 'filter', hook: 'forward', priority: 'filter; policy accept' })],
    ['bad hook', (tx) => tx.addChain(T, 'c', { type: 'filter', hook: 'sideways' as 'input', priority: 0 })],
    ['bad device', (tx) => tx.addChain({ family: 'netdev', name: 'n' }, 'c', { type: 'filter', hook: 'ingress', device: 'eth0"', priority: 0 })],
    ['bad set type', (tx) => tx.addSet(T, 's', { type: 'ipv4_addr; flags' as 'ipv4_addr' })],
    ['map element without value', (tx) => tx.addMap(T, 'm', { type: 'ipv4_addr', value: 'verdict', elements: ['10.0.0.1'] })],
    ['bad jump target', (tx) => tx.addElements(T, 'dispatch', [{ key: '10.0.0.1', value: { jump: 'x y' } }])],
    ['bad handle', (tx) => tx.deleteRule(T, 'forward', 0)],
    ['keyword as a chain name', (tx) => tx.addChain(T, 'dnat')],
  ];
  for (const [what, make] of bad) {
    const tx = new NftTransaction().addTable(T);
    make(tx);
    tx.addChain(T, 'x\n'); // a later error does not replace the first
    assert.ok(tx.error, what);
    assert.equal(tx.error!.opIndex, 1, what);
    assert.throws(() => tx.render(), /nft transaction op 1/, what);
  }
});

test('the fake kernel applies a transaction all or nothing and dumps sorted state', async () => {
  const k = new FakeKernel();
  assert.deepEqual(await k.apply(skeleton()), { ok: true });
  const before = k.dump();
  const tx = new NftTransaction()
    .addChain(T, 'qbs-10-137-0-5')
    .addRule(T, 'qbs-10-137-0-5', 'accept')
    .addElements(T, 'dispatch', [{ key: '10.137.0.5', value: { jump: 'qbs-10-137-0-5' } }])
    .deleteElements(T, 'dns-addr', ['10.139.1.1']); // missing: the whole transaction fails
  const res = await k.apply(tx);
  assert.equal(res.ok, false);
  assert.equal(!res.ok && res.code, 'rejected');
  assert.match(!res.ok ? res.error : '', /No such file or directory \(element 10\.139\.1\.1/);
  assert.equal(k.dump(), before, 'nothing of a rejected transaction stays');
  assert.equal(k.applied.length, 2);

  const ok = new NftTransaction()
    .addChain(T, 'qbs-10-137-0-5')
    .addRule(T, 'qbs-10-137-0-5', 'accept', { comment: 'policy' })
    .addElements(T, 'dispatch', [{ key: '10.137.0.5', value: { jump: 'qbs-10-137-0-5' } }])
    .addElements(T, 'dns-addr', ['10.139.1.2', '10.139.1.1']);
  assert.deepEqual(await k.apply(ok), { ok: true });
  assert.equal(
    k.dump(),
    [
      'table ip qubes-test',
      '  map dispatch { type ipv4_addr : verdict }',
      '    10.137.0.5 : jump qbs-10-137-0-5',
      '  set dns-addr { type ipv4_addr }',
      '    10.139.1.1',
      '    10.139.1.2',
      '  chain forward { type filter hook forward priority filter + 10; policy drop }',
      '    ct state established,related accept',
      '    iifname != "vif*" accept',
      '    ip saddr vmap @dispatch',
      '  chain qbs-10-137-0-5',
      '    accept comment "policy"',
      '',
    ].join('\n'),
  );
  assert.deepEqual(k.rules(T, 'qbs-10-137-0-5'), ['accept comment "policy"']);
  assert.deepEqual(k.elements(T, 'dispatch'), ['10.137.0.5 : jump qbs-10-137-0-5']);
});

test('the fake kernel refuses what nft refuses', async () => {
  const k = new FakeKernel();
  await k.apply(skeleton().addChain(T, 'qbs-a').addRule(T, 'qbs-a', 'accept').addElements(T, 'dispatch', [{ key: '10.0.0.1', value: { jump: 'qbs-a' } }]));
  const refused: [string, NftTransaction, RegExp][] = [
    ['missing table', new NftTransaction().addChain({ family: 'ip', name: 'nope' }, 'c'), /table ip nope/],
    ['flush of a missing chain', new NftTransaction().flushChain(T, 'nope'), /chain nope/],
    ['rule in a missing chain', new NftTransaction().addRule(T, 'nope', 'accept'), /chain nope/],
    ['jump to a missing chain', new NftTransaction().addRule(T, 'forward', 'jump nope'), /jump target nope/],
    ['reference to a missing set', new NftTransaction().addRule(T, 'forward', 'ip daddr @nope accept'), /set nope/],
    ['delete of a chain with rules', new NftTransaction().deleteChain(T, 'qbs-a'), /has rules/],
    ['delete of a referenced chain', new NftTransaction().flushChain(T, 'qbs-a').deleteChain(T, 'qbs-a'), /referenced/],
    ['element with another value', new NftTransaction().addChain(T, 'qbs-b').addElements(T, 'dispatch', [{ key: '10.0.0.1', value: { jump: 'qbs-b' } }]), /another value/],
    ['element of the wrong family', new NftTransaction().addElements(T, 'dns-addr', ['fd09::1']), /does not match the type/],
    ['prefix without interval flag', new NftTransaction().addElements(T, 'dns-addr', ['10.0.0.0/8']), /interval/],
    ['delete of a missing element', new NftTransaction().deleteElements(T, 'dispatch', ['10.0.0.9']), /element 10\.0\.0\.9/],
    ['delete of a missing table', new NftTransaction().deleteTable({ family: 'ip6', name: 'nope' }), /table ip6 nope/],
    ['base chain with another hook', new NftTransaction().addChain(T, 'forward', { type: 'filter', hook: 'input', priority: 'filter + 10' }), /busy/],
    ['set used by a rule', new NftTransaction().deleteSet(T, 'dispatch', 'map'), /used by a rule/],
    ['missing rule handle', new NftTransaction().deleteRule(T, 'forward', 999), /handle 999/],
  ];
  const before = k.dump();
  for (const [what, tx, re] of refused) {
    const res = await k.apply(tx);
    assert.equal(res.ok, false, what);
    assert.match(!res.ok ? res.error : '', re, what);
  }
  assert.equal(k.dump(), before);
  // What nft allows: re-adding the same element, an existing chain, a destroy of missing things.
  const fine = new NftTransaction()
    .addElements(T, 'dispatch', [{ key: '10.0.0.1', value: { jump: 'qbs-a' } }])
    .addChain(T, 'forward', { type: 'filter', hook: 'forward', priority: 'filter + 10', policy: 'drop' })
    .destroyElements(T, 'dns-addr', ['10.1.1.1'])
    .destroyChain(T, 'qbs-gone')
    .destroyTable({ family: 'inet', name: 'gone' });
  assert.deepEqual(await k.apply(fine), { ok: true });
  assert.equal(k.dump(), before);
  // The fault hook rejects like nft would.
  k.rejectIf = (text) => (text.includes('qbs-a') ? 'Error: injected' : undefined);
  assert.deepEqual(await k.apply(new NftTransaction().flushChain(T, 'qbs-a')), { ok: false, code: 'rejected', error: 'Error: injected' });
  const invalid = await k.apply(new NftTransaction().addChain(T, 'bad;'));
  assert.equal(!invalid.ok && invalid.code, 'invalid');
});

test('rules keep their order, handles and positions as nft does', async () => {
  const k = new FakeKernel();
  await k.apply(new NftTransaction().addTable(T).addChain(T, 'c').addRule(T, 'c', 'counter').addRule(T, 'c', 'accept'));
  const list = await k.list(['table', 'ip', 'qubes-test']);
  const handles = list!.nftables.filter((o) => o.rule).map((o) => o.rule.handle as number);
  assert.equal(handles.length, 2);
  await k.apply(new NftTransaction().addRule(T, 'c', 'drop', { insert: true }).addRule(T, 'c', 'return', { position: handles[0]! }).deleteRule(T, 'c', handles[1]!));
  assert.deepEqual(k.rules(T, 'c'), ['drop', 'counter', 'return']);
  assert.equal(await k.list(['table', 'ip', 'qubes-absent']), undefined);
});

test('the fake kernel lists like nft -j: chains, sets with elements, map verdicts', async () => {
  const k = new FakeKernel();
  await k.apply(skeleton().addChain(T, 'qbs-a').addElements(T, 'dispatch', [{ key: '10.0.0.1', value: { jump: 'qbs-a' } }]).addElements(T, 'dns-addr', ['10.139.1.1']));
  const json = (await k.list(['table', 'ip', 'qubes-test']))!.nftables;
  const fwd = json.find((o) => o.chain?.name === 'forward')!.chain;
  assert.equal(fwd.policy, 'drop');
  assert.equal(fwd.hook, 'forward');
  assert.deepEqual(json.find((o) => o.map?.name === 'dispatch')!.map.elem, [['10.0.0.1', { jump: { target: 'qbs-a' } }]]);
  assert.deepEqual(json.find((o) => o.set?.name === 'dns-addr')!.set.elem, ['10.139.1.1']);
});

test('runProcess: argv without a shell, input, exit code, timeout that kills the group', async () => {
  const r = await runProcess(['cat'], { input: 'hello $(id)\n' });
  assert.equal(r.stdout, 'hello $(id)\n');
  assert.equal(r.exitCode, 0);
  const f = await runProcess(['sh', '-c', 'echo oops >&2; exit 3'], { allowFailure: true });
  assert.equal(f.exitCode, 3);
  assert.equal(f.stderr, 'oops\n');
  await assert.rejects(runProcess(['sh', '-c', 'exit 4']), (e: unknown) => e instanceof ProcessError && e.exitCode === 4 && !e.timedOut);
  await assert.rejects(runProcess(['/nonexistent/qubes-net-x']), (e: unknown) => e instanceof ProcessError && /not found/.test(e.stderr));
  await assert.rejects(runProcess([]), /empty argv/);
  await assert.rejects(runProcess(['true'], { netns: 'x;y' }), /invalid netns/);
  // A hang: the program and the child it started are both killed.
  const dir = await mkdtemp(join(tmpdir(), 'qn-kernel-'));
  try {
    const pidFile = join(dir, 'child.pid');
    const hung = await runProcess(['sh', '-c', `sleep 30 & echo $! > ${pidFile}; wait`], { timeoutMs: 200, allowFailure: true });
    assert.equal(hung.timedOut, true);
    const { readFile } = await import('node:fs/promises');
    const childPid = Number((await readFile(pidFile, 'utf8')).trim());
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(!(await alive(childPid)), 'the background child was killed with the group');
    await assert.rejects(runProcess(['sleep', '30'], { timeoutMs: 100 }), (e: unknown) => e instanceof ProcessError && e.timedOut);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('runProcess returns when the program exits, even if a daemon it started keeps the pipes', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'qn-kernel-'));
  try {
    const hook = join(dir, 'hook');
    const pidFile = join(dir, 'daemon.pid');
    // The daemon inherits stdout/stderr (our pipes) and outlives the hook.
    await writeFile(hook, `#!/bin/sh\nsleep 30 &\necho $! > ${pidFile}\necho started\n`);
    await chmod(hook, 0o755);
    const r = await runProcess([hook], { timeoutMs: 10_000 });
    assert.equal(r.stdout, 'started\n');
    assert.equal(r.timedOut, false);
    const { readFile } = await import('node:fs/promises');
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    assert.ok(await alive(pid), 'still running: not ours to kill on success');
    process.kill(pid, 'SIGKILL');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a hook under systemd runs through systemd-run in a transient scope of its own, the command unchanged after --', () => {
  assert.deepEqual(hookScopeArgv(['/rw/config/qubes-firewall-user-script'], 'ab12cd'),
    ['systemd-run', '--scope', '--quiet', '--collect', '--unit=qubes-net-hook-ab12cd', '--', '/rw/config/qubes-firewall-user-script']);
  // Arguments that look like options stay the hook's: they come after `--`.
  const a = hookScopeArgv(['/hooks/h', '--unit=x', 'online', 'vif3.0', 'vif', '10.137.0.5']);
  assert.deepEqual(a.slice(a.indexOf('--') + 1), ['/hooks/h', '--unit=x', 'online', 'vif3.0', 'vif', '10.137.0.5']);
  assert.match(a[4]!, new RegExp(`^--unit=${HOOK_SCOPE_PREFIX}[0-9a-f]{12}$`));
  assert.notEqual(hookScopeArgv(['x'])[4], hookScopeArgv(['x'])[4], 'a fresh unit name per run');
  assert.throws(() => hookScopeArgv(['x'], 'a.service b'), /invalid unit suffix/);
  // Only a unit's process on a systemd-booted system uses a scope (not the lab, not a shell).
  assert.equal(underSystemd({ INVOCATION_ID: 'f00' }, '/'), true);
  assert.equal(underSystemd({}, '/'), false);
  assert.equal(underSystemd({ INVOCATION_ID: 'f00' }, '/nonexistent/qubes-net'), false);
});

test('a hook outside systemd runs as any program (scope: hook is a no-op without INVOCATION_ID)', async () => {
  const saved = process.env.INVOCATION_ID;
  delete process.env.INVOCATION_ID;
  try {
    const r = await runProcess(['sh', '-c', 'echo $$; exit 3'], { scope: 'hook', allowFailure: true });
    assert.equal(r.exitCode, 3);
    assert.match(r.stdout, /^\d+\n$/);
    await assert.rejects(runProcess(['sh', '-c', 'exit 5'], { scope: 'hook' }), (e: unknown) => e instanceof ProcessError && e.command === 'sh' && e.exitCode === 5);
  } finally {
    if (saved !== undefined) process.env.INVOCATION_ID = saved;
  }
});

test('ip batch lines are checked word by word', async () => {
  assert.equal(ipBatchLine(['route', 'replace', '10.137.0.5/32', 'dev', 'vif3.0']), 'route replace 10.137.0.5/32 dev vif3.0');
  for (const bad of [['-n', 'x', 'link'], ['addr', 'add', '10.0.0.1\nlink del eth0'], ['link', 'set', 'a;b'], [], ['neigh', 'add', '"x"']]) {
    assert.throws(() => ipBatchLine(bad), Error, JSON.stringify(bad));
  }
  const w = new IpBatchWriter();
  const res = await w.apply([['link', 'set', 'x y']]);
  assert.equal(!res.ok && res.code, 'invalid');
  const ns = await w.apply([['link', 'show']], { netns: '-x' });
  assert.equal(!ns.ok && ns.code, 'invalid');
});

// The network agent end to end in a provider qube: vif events over its control socket, a
// status that answers while QubesDB does not (10.7), idle exit (10.2), and a burst of vif
// events across SIGTERM/SIGKILL of the agent in which every vif still ends up online (13.3).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { needRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { AgentLab, AGENT_CLI } from './harness.js';
import { provider } from '../driver-agent/lab.js';

/**
 * Every vif is configured in the kernel (its /32 route), and none is in error in the agent that
 * runs now. (A vif the previous instance configured just before it stopped, whose hotplug
 * script had not yet written hotplug-status, is not adopted by the next instance's start from
 * Xen; its kernel state stays. That is the driver's start rule, reported to the driver job.)
 */
async function everyVifConfigured(al: AgentLab, vifs: { vif: string; domid: number; ip: string }[]): Promise<void> {
  for (const v of vifs) assert.deepEqual((await al.lab.vifKernel(v.vif)).routes, [`${v.ip} metric ${32752 - v.domid}`], v.vif);
  const st = await al.request({ op: 'status' });
  const listed = (st.details as any).parts.driver.vifs as { vif: string; state: string }[];
  assert.deepEqual(listed.filter((x) => x.state !== 'online'), [], JSON.stringify(listed));
}

test('vifs come online through the agent, which exits 0 after --idle-exit and leaves them configured', async (t) => {
  if (!needRoot(t)) return;
  const al = await AgentLab.create('agent-idle');
  try {
    const a = await al.start(['--idle-exit', '1500']);
    const v = await al.plainVif(7);
    const r = await al.lab.hotplug('online', v.vif, v.domid);
    assert.equal(r.code, 0, r.stderr);
    const st = await al.request({ op: 'status' });
    assert.equal(st.ok, true);
    assert.equal((st.details as any).agent, 'qubes-net-agent');
    assert.deepEqual(((st.details as any).parts.driver.vifs as any[]).map((x) => `${x.vif} ${x.state}`), ['vif7.0 online']);
    assert.equal(await a.exited, 0, 'idle exit is a clean exit');
    assert.ok(a.logs.some((l) => l.msg === 'idle: exiting'));
    // Bound by itself (no activator): the socket goes with it, so the C client uses the one-shot path.
    assert.equal(existsSync(al.socketHostPath()), false);
    const k = await al.lab.vifKernel(v.vif);
    assert.deepEqual(k.routes, [`${v.ip} metric ${32752 - v.domid}`]);
  } finally {
    await al.destroy();
  }
});

test('the control socket answers status while the QubesDB daemon is stopped (SIGSTOP)', async (t) => {
  if (!needRoot(t)) return;
  const al = await AgentLab.create('agent-qdbstop');
  const pid = al.lab.qdb.pid;
  try {
    await al.start(['--idle-exit', '0', '--qubesdb-timeout-ms', '60000']);
    const v = await al.plainVif(8);
    process.kill(pid, 'SIGSTOP');
    // A vif event whose feedback write now waits on QubesDB, in flight while status is asked.
    const online = al.lab.hotplug('online', v.vif, v.domid);
    await waitFor('online request in the agent', async () => ((await al.request({ op: 'status' }, 5_000)).details as any).inFlight >= 1);
    const st = await al.request({ op: 'status' }, 5_000);
    assert.equal(st.code, 'ok', st.message);
    process.kill(pid, 'SIGCONT');
    assert.equal((await online).code, 0);
  } finally {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* already gone */
    }
    await al.destroy();
  }
});

for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
  test(`24 vifs plugged in a burst across a ${signal} of the agent all end up online`, async (t) => {
    if (!needRoot(t)) return;
    const al = await AgentLab.create(`agent-${signal.toLowerCase()}`);
    try {
      await al.start(['--idle-exit', '0']);
      const vifs = [];
      for (let d = 10; d < 34; d++) vifs.push(await al.plainVif(d));
      const events = vifs.map((v) => al.lab.hotplug('online', v.vif, v.domid, { QUBES_NET_HOTPLUG_TIMEOUT: '60' }));
      await waitFor('some vifs handled', () => al.agent!.logs.filter((l) => typeof l.vif === 'string').length >= 3);
      await al.stop(signal);
      // What systemd (Restart=) or the activator does: the next instance on the same socket.
      await al.start(['--idle-exit', '0']);
      const results = await Promise.all(events);
      for (const [i, r] of results.entries()) assert.equal(r.code, 0, `${vifs[i]!.vif}: ${r.stderr}`);
      await everyVifConfigured(al, vifs);
    } finally {
      await al.destroy();
    }
  });
}

test('without an agent socket the hotplug client runs the one-shot `qubes-net-agent hotplug`', async (t) => {
  if (!needRoot(t)) return;
  const al = await AgentLab.create('agent-oneshot');
  try {
    // What packaging installs as /usr/bin/qubes-net-agent.
    const wrapper = '/run/qn-drv/qubes-net-agent';
    await writeFile(al.lab.netvm.hostPath(wrapper), `#!/bin/sh\nexec "$QN_NODE" ${JSON.stringify(AGENT_CLI)} "$@" --no-resolved --resolv-conf /run/qn-drv/resolv.conf\n`, { mode: 0o755 });
    assert.equal(existsSync(al.socketHostPath()), false);
    const v = await al.plainVif(9);
    const r = await al.lab.hotplug('online', v.vif, v.domid, { QUBES_NET_AGENT_CLI: wrapper });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await al.lab.vifKernel(v.vif)).routes, [`${v.ip} metric ${32752 - v.domid}`]);
    const off = await al.lab.hotplug('offline', v.vif, v.domid, { QUBES_NET_AGENT_CLI: wrapper });
    assert.equal(off.code, 0, off.stderr);
    assert.deepEqual((await al.lab.vifKernel(v.vif)).routes, []);
  } finally {
    await al.destroy();
  }
});

test('under the activating watcher, a SIGKILL of the agent mid-burst loses no vif: the next instance answers', async (t) => {
  if (!needRoot(t)) return;
  const al = await AgentLab.create('agent-activate');
  try {
    al.startWatched(['--idle-exit', '0', '--firewall', 'off']);
    await waitFor('the watcher holds the socket', () => existsSync(al.socketHostPath()));
    const vifs = [];
    for (let d = 40; d < 64; d++) vifs.push(await al.plainVif(d));
    const events = vifs.map((v) => al.lab.hotplug('online', v.vif, v.domid, { QUBES_NET_HOTPLUG_TIMEOUT: '60' }));
    // The first connection started the agent; kill it as soon as it answers anything.
    const first = await al.request({ op: 'status' }, 30_000);
    assert.equal(first.ok, true, first.message);
    process.kill((first.details as { pid: number }).pid, 'SIGKILL');
    const results = await Promise.all(events);
    for (const [i, r] of results.entries()) assert.equal(r.code, 0, `${vifs[i]!.vif}: ${r.stderr}`);
    const st = await al.request({ op: 'status' });
    assert.notEqual((st.details as { pid: number }).pid, (first.details as { pid: number }).pid, 'a new instance');
    await everyVifConfigured(al, vifs);
  } finally {
    await al.destroy();
  }
});

test('after a QubesDB daemon restart the agent reconnects: a new vif comes online and is recorded', async (t) => {
  if (!needRoot(t)) return;
  const al = await AgentLab.create('agent-qdbrestart');
  try {
    await al.start(['--idle-exit', '0', '--firewall', 'off']);
    const a = await al.plainVif(11);
    assert.equal((await al.lab.hotplug('online', a.vif, a.domid)).code, 0);
    // As after a real restart: the daemon starts empty and dom0 writes the keys again.
    await al.lab.qdb.restart();
    await al.lab.writeKeys(provider());
    const b = await al.plainVif(12);
    const r = await al.lab.hotplug('online', b.vif, b.domid);
    assert.equal(r.code, 0, r.stderr);
    await al.lab.waitEntry(b.vif, 'online');
    const st = await al.request({ op: 'status' });
    assert.equal(st.ok, true);
  } finally {
    await al.destroy();
  }
});

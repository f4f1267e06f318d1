// The lab's fault operations (issue 13): each kills or restarts one process of a qube the way
// it happens on a real system, and what brings it back on a real system brings it back here
// (Restart=, socket activation, dom0 rewriting QubesDB). After each, the qube still works:
// a firewall change applies and traffic flows.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLogger } from '@qubes-net/common';
import { INTERNET, ping } from '@qubes-net/netns';
import { Lab, parseTopology, upAll, agentFault, qubesdbRestart, networkAgentPid, parseFaultAgent, setFirewall, parseRuleList, pidAlive } from '@qubes-net/lab';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';

let lab: Lab | undefined;

before(async () => {
  if (!isRoot()) return;
  const model = parseTopology(`
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }
  - { name: a, qid: 7, netvm: sys-firewall }
`, 'faults.yaml');
  model.name = `f${randomBytes(3).toString('hex')}`;
  lab = await Lab.create(model, { stateDir: await mkdtemp(join(tmpdir(), 'qnet-lab-faults-')), logger: createLogger('lab-faults', 'warn') });
  await upAll(lab);
});

after(async () => {
  await lab?.destroy();
});

/** a's firewall to drop and back: the network agent in sys-firewall must apply both. */
async function firewallStillApplies(): Promise<void> {
  const L = lab!;
  const a = L.runningQube('a').ns;
  await setFirewall(L, 'a', parseRuleList(['action=drop']));
  assert.equal(await ping(a, INTERNET.web4, { timeoutMs: 1000 }), false, 'a is blocked after the tightening');
  await setFirewall(L, 'a', parseRuleList([]));
  assert.ok(await ping(a, INTERNET.web4), 'a reaches the internet again');
}

test('aliases: driver and firewall name the one network agent, guest the uplink watcher', () => {
  assert.equal(parseFaultAgent('driver').agent, 'agent');
  assert.match(parseFaultAgent('firewall').note ?? '', /one process/);
  assert.equal(parseFaultAgent('guest').agent, 'uplink');
  assert.throws(() => parseFaultAgent('sshd'), /unknown agent/);
});

test('agent kill: SIGKILL; socket activation starts it again on the next request', async (t) => {
  if (!needRoot(t)) return;
  const r = await agentFault(lab!, 'sys-firewall', 'driver', 'kill');
  if (r.pid !== undefined) await waitFor('the killed agent to be gone', () => !pidAlive(r.pid!));
  await firewallStillApplies();
  const now = networkAgentPid(lab!, 'sys-firewall');
  assert.ok(now !== undefined && now !== r.pid, `a new agent runs (was ${r.pid}, now ${now})`);
});

test('agent restart: clean exit, started again through its socket', async (t) => {
  if (!needRoot(t)) return;
  const r = await agentFault(lab!, 'sys-firewall', 'agent', 'restart');
  assert.ok(r.newPid !== undefined && r.newPid !== r.pid, JSON.stringify(r));
  await firewallStillApplies();
});

test('watch kill: the watcher and the agent it started go, the watcher comes back and activates', async (t) => {
  if (!needRoot(t)) return;
  const before = networkAgentPid(lab!, 'sys-firewall');
  const r = await agentFault(lab!, 'sys-firewall', 'watch', 'kill');
  assert.ok(r.newPid !== r.pid);
  if (before !== undefined) assert.equal(pidAlive(before), false, 'the old agent was stopped with its unit');
  await firewallStillApplies();
});

test('uplink kill: the watcher is restarted and its start re-applies the uplink', async (t) => {
  if (!needRoot(t)) return;
  const gen = await lab!.uplinkGeneration('a');
  const r = await agentFault(lab!, 'a', 'uplink', 'kill');
  assert.ok(r.newPid !== r.pid);
  await lab!.waitUplink('a', gen);
  assert.ok(await ping(lab!.runningQube('a').ns, INTERNET.web4));
});

test("qubesdb-restart: the daemon comes back empty, dom0's keys are written again, agents reconnect", async (t) => {
  if (!needRoot(t)) return;
  const L = lab!;
  const rp = L.runningQube('sys-firewall');
  const r = await qubesdbRestart(L, 'sys-firewall');
  assert.ok(r.newPid !== r.pid && rp.qdbDaemon.running);
  const ip = L.runningQube('a').vif!.addresses[0]!;
  assert.ok(await rp.db.read('/qubes-ip'), "sys-firewall's own keys are back");
  assert.ok(await rp.db.read(`/qubes-firewall/${ip}`) !== undefined, "a's firewall marker is back");
  await firewallStillApplies();
});

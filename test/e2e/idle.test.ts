// Issue 10's runtime shape in the lab: once it has settled and the agents' idle time has
// passed without work, no qube holds a Node process (only the C watchers stay; the lab's
// QubesDB stand-in daemon does not count, a template has upstream's C daemon). Then a vif
// plugged after idle and a firewall change after idle still work: the watcher starts the
// agent on demand. --idle-exit is short here (QUBES_NET_LAB_IDLE_EXIT_MS) instead of 30 s.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync, readdirSync } from 'node:fs';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { INTERNET, ping } from '@qubes-net/netns';
import { startQube, setFirewall, parseRuleList } from '@qubes-net/lab';
import { startLab, chainTopology, type E2ELab } from './fixture.js';

const IDLE_MS = 2_000;
let L: E2ELab;

before(async () => {
  if (!isRoot()) return;
  process.env.QUBES_NET_LAB_IDLE_EXIT_MS = String(IDLE_MS);
  L = await startLab(chainTopology(`
  - { name: a, qid: 7, netvm: sys-firewall }
  - { name: b, qid: 8, netvm: sys-firewall, start: false }`), 'idle');
});

after(async () => {
  delete process.env.QUBES_NET_LAB_IDLE_EXIT_MS;
  await L?.destroy();
});

function netnsOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/** Node processes per running qube (matched by network namespace), the QubesDB stand-in left out. */
function nodeProcesses(): Map<string, string[]> {
  const byNs = new Map<string, { qube: string; skip: number }>();
  for (const rq of L.lab.running.values()) {
    const ns = netnsOf(rq.qdbDaemon.pid);
    if (ns) byNs.set(ns, { qube: rq.name, skip: rq.qdbDaemon.pid });
  }
  const out = new Map<string, string[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    const q = byNs.get(netnsOf(pid) ?? '');
    if (!q || pid === q.skip) continue;
    let exe = '';
    try {
      exe = readlinkSync(`/proc/${pid}/exe`);
    } catch {
      continue;
    }
    if (!/\/node$/.test(exe)) continue;
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    out.set(q.qube, [...(out.get(q.qube) ?? []), `${pid} ${cmd}`]);
  }
  return out;
}

async function noNodeAnywhere(): Promise<void> {
  let last = new Map<string, string[]>();
  await waitFor('no qube holds a Node process', () => {
    last = nodeProcesses();
    return last.size === 0;
  }, { timeoutMs: IDLE_MS * 10 + 20_000, intervalMs: 250 }).catch((err: Error) => {
    throw new Error(`${err.message}: ${JSON.stringify([...last])}`);
  });
}

test('after the lab settles and the idle time passes, no qube holds a Node process', async (t) => {
  if (!needRoot(t)) return;
  await noNodeAnywhere();
  // What stays is the watchers: one per qube (a network qube's carries its uplink and its agent).
  for (const rq of L.lab.running.values()) for (const p of rq.agents.values()) assert.ok(p.running, `${rq.name}/${p.role} watcher running`);
  for (const rq of L.lab.running.values()) assert.equal(new Set(rq.agents.values()).size, 1, `${rq.name}: one watcher process`);
  assert.ok(await ping(L.ns('a'), INTERNET.web4), 'traffic flows with every agent gone');
});

test('a vif plugged after idle comes online (the agent starts on demand) and the agents go idle again', async (t) => {
  if (!needRoot(t)) return;
  await noNodeAnywhere();
  await startQube(L.lab, 'b');
  assert.ok(await ping(L.ns('b'), INTERNET.web4), 'b reaches the internet');
  await noNodeAnywhere();
});

test('a firewall change after idle applies', async (t) => {
  if (!needRoot(t)) return;
  await noNodeAnywhere();
  await setFirewall(L.lab, 'a', parseRuleList(['action=drop']));
  assert.equal(await ping(L.ns('a'), INTERNET.web4, { timeoutMs: 1500 }), false, 'a is blocked now');
  await setFirewall(L.lab, 'a', parseRuleList([]));
  assert.ok(await ping(L.ns('a'), INTERNET.web4), 'a reaches the internet again');
});

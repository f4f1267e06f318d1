// Lab figures (JSON lines, each next to a baseline measured in the same run):
//  - up of the default topology (target < 10 s); baseline: the same number of bare namespaces
//    and veth links without QubesDB or agents (what the kernel side alone costs);
//  - up of a 50-qube topology; same kind of baseline;
//  - netvm change until the client's traffic flows again (target < 1 s), as the median of
//    several switches: the operation returns once the agents report the new vif online, the
//    firewall applied and the uplink configured; then one ping must succeed. Baseline: the
//    same ping on a path that does not change (the probe's own cost).
import { createLogger } from '@qubes-net/common';
import { NetnsSession, INTERNET, ping } from '@qubes-net/netns';
import { DEFAULT_TOPOLOGY_FILE, Lab, loadTopologyFile, parseTopology, setNetvm, upAll, type LabModel } from '@qubes-net/lab';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

function emit(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ bench: 'lab', ...o }) + '\n');
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function withLab<T>(model: LabModel, fn: (lab: Lab, upMs: number) => Promise<T>): Promise<T> {
  model.name = `b${randomBytes(3).toString('hex')}`;
  const stateDir = await mkdtemp(join(tmpdir(), 'qnet-bench-lab-'));
  const t0 = performance.now();
  const lab = await Lab.create(model, { stateDir, logger: createLogger('bench-lab', 'warn') });
  try {
    await upAll(lab);
    return await fn(lab, performance.now() - t0);
  } finally {
    await lab.destroy();
    await rm(stateDir, { recursive: true, force: true });
  }
}

/** The kernel-only part: `qubes` namespaces plus one veth per client, nothing running in them. */
async function bareNamespaces(model: LabModel): Promise<number> {
  const t0 = performance.now();
  const s = await NetnsSession.create('bench-bare');
  try {
    const qs = new Map(await Promise.all([...model.qubes.keys(), 'internet'].map(async (n) => [n, await s.qube(n)] as const)));
    for (const q of model.qubes.values()) {
      if (q.netvm) await s.link(qs.get(q.netvm)!, `vif${q.qid}.0`, qs.get(q.name)!, 'eth0');
      if (q.uplink) await s.link(qs.get('internet')!, 'uplink0', qs.get(q.name)!, 'eth0');
    }
    return performance.now() - t0;
  } finally {
    await s.destroy();
  }
}

function wideTopology(n: number): LabModel {
  const lines = ['qubes:', '  - { name: sys-net, qid: 2, provides_network: true, uplink: true, features: { ipv6: "1" } }',
    '  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }',
    '  - { name: sys-firewall2, qid: 4, netvm: sys-net, provides_network: true }'];
  for (let i = 0; i < n - 3; i++) lines.push(`  - { name: app${i}, qid: ${10 + i}, netvm: ${i % 2 ? 'sys-firewall2' : 'sys-firewall'} }`);
  return parseTopology(lines.join('\n'));
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    emit({ skipped: 'needs root' });
    return;
  }
  const def = await loadTopologyFile(DEFAULT_TOPOLOGY_FILE);
  const defBase = await bareNamespaces(def);
  await withLab(def, async (_lab, upMs) => {
    emit({ metric: 'up-default', qubes: def.qubes.size, ms: Math.round(upMs), targetMs: 10_000, baseline: { metric: 'bare-namespaces-and-links', ms: Math.round(defBase) } });
  });

  const wide = wideTopology(50);
  const wideBase = await bareNamespaces(wide);
  await withLab(wide, async (lab, upMs) => {
    emit({ metric: 'up-50-qubes', qubes: wide.qubes.size, running: lab.running.size, ms: Math.round(upMs), baseline: { metric: 'bare-namespaces-and-links', ms: Math.round(wideBase) } });
  });

  const small = parseTopology(`
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }
  - { name: sys-firewall2, qid: 4, netvm: sys-net, provides_network: true }
  - { name: app, qid: 7, netvm: sys-firewall }
`);
  await withLab(small, async (lab) => {
    const ns = () => lab.runningQube('app').ns;
    const probe: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      if (!(await ping(ns(), INTERNET.web4))) throw new Error('baseline ping failed');
      probe.push(performance.now() - t0);
    }
    const configured: number[] = [];
    const flowing: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t0 = performance.now();
      await setNetvm(lab, 'app', i % 2 ? 'sys-firewall' : 'sys-firewall2');
      configured.push(performance.now() - t0);
      if (!(await ping(ns(), INTERNET.web4, { timeoutMs: 2000 }))) throw new Error(`no traffic after switch ${i}`);
      flowing.push(performance.now() - t0);
    }
    emit({ metric: 'netvm-change-to-traffic', runs: flowing.length, medianMs: Math.round(median(flowing)), maxMs: Math.round(Math.max(...flowing)), configuredMedianMs: Math.round(median(configured)), targetMs: 1000, baseline: { metric: 'ping-on-unchanged-path', medianMs: Math.round(median(probe)) } });
  });
}

await main();

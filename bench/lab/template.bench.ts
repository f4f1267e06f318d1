// Booted-template figures (JSON lines), each next to a baseline measured in the same run:
//  - boot-to-network per role (container start until the netvm serves its first vif, or the
//    client's uplink is configured); baseline: the same Debian 13 root without qubes-net booted
//    the same way to `is-system-running` (what nspawn and systemd cost by themselves);
//  - memory of the networking units per role, right after boot and after the network agent's
//    idle exit; baseline: the summed RSS of every process of the bare booted root.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NetnsSession } from '@qubes-net/netns';
import { DEFAULT_TOPOLOGY_FILE, loadTopologyFile, template } from '@qubes-net/lab';

const { TemplateLab, Container, buildDeb, ensureDebianRoot, instantiateRoot } = template;

function emit(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ bench: 'lab-template', ...o }) + '\n');
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ROLES: Record<string, string> = { 'sys-net': 'netvm', 'sys-firewall': 'proxyvm', work: 'client' };

/** Boot of the bare Debian 13 root (no qubes-net) in a fresh namespace: ms to running, and its RSS. */
async function bareBoot(): Promise<{ ms: number; rssBytes: number }> {
  const base = await ensureDebianRoot();
  const session = await NetnsSession.create('tlab-bare');
  const logDir = await mkdtemp(join(tmpdir(), 'qnet-bench-tpl-'));
  try {
    const ns = await session.qube('bare');
    const inst = await instantiateRoot(base.dir, `${session.id}-bare`);
    const c = Container.start({ machine: `${session.id}-bare`, hostname: 'bare', root: inst.dir, netnsFile: ns.netnsFile, logFile: join(logDir, 'console.log') });
    try {
      await c.waitBooted();
      const ms = Date.now() - c.startedAt;
      await sleep(2000);
      const r = await c.exec(['sh', '-c', "awk '/^VmRSS:/ { s += $2 } END { print s * 1024 }' /proc/[0-9]*/status"], { allowFailure: true });
      return { ms, rssBytes: Number(r.stdout.trim()) || 0 };
    } finally {
      await c.stop();
      await inst.remove();
    }
  } finally {
    await session.destroy();
    await rm(logDir, { recursive: true, force: true });
  }
}

const sumBytes = (m: Record<string, { bytes: number }>): number => Object.values(m).reduce((s, v) => s + v.bytes, 0);

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    emit({ skipped: 'needs root' });
    return;
  }
  const deb = await buildDeb();
  // Warm the caches first: image builds are not boot figures.
  await template.ensureTemplateImage({ deb });
  const bare: Array<{ ms: number; rssBytes: number }> = [];
  for (let i = 0; i < 3; i++) bare.push(await bareBoot());
  const bareMs = median(bare.map((b) => b.ms));
  const bareRss = median(bare.map((b) => b.rssBytes));

  const runs: Array<Record<string, { networkMs: number; bootMs: number }>> = [];
  let memBoot: Record<string, number> = {};
  let memIdle: Record<string, number> = {};
  for (let i = 0; i < 3; i++) {
    const model = await loadTopologyFile(DEFAULT_TOPOLOGY_FILE);
    model.name = `b${randomBytes(3).toString('hex')}`;
    const lab = await TemplateLab.create(model, { deb });
    try {
      await lab.up(Object.keys(ROLES));
      runs.push(Object.fromEntries(Object.keys(ROLES).map((n) => [n, { networkMs: lab.qube(n).figures.networkMs ?? NaN, bootMs: lab.qube(n).figures.bootMs! }])));
      if (i === 0) {
        for (const n of Object.keys(ROLES)) memBoot[n] = sumBytes(await lab.unitMemory(n));
        await sleep(35_000); // the network agent's --idle-exit is 30 s
        for (const n of Object.keys(ROLES)) memIdle[n] = sumBytes(await lab.unitMemory(n));
      }
    } finally {
      await lab.down();
    }
  }
  for (const [n, role] of Object.entries(ROLES)) {
    const net = median(runs.map((r) => r[n]!.networkMs));
    const boot = median(runs.map((r) => r[n]!.bootMs));
    emit({ metric: 'boot-to-network', role, qube: n, ms: net, bootMs: boot, baselineBareBootMs: bareMs, ratio: Number((net / bareMs).toFixed(2)), runs: runs.length });
    emit({ metric: 'unit-memory', role, qube: n, afterBootBytes: memBoot[n], afterIdleBytes: memIdle[n], baselineBareSystemRssBytes: bareRss,
      ratioAfterIdle: Number(((memIdle[n] ?? 0) / bareRss).toFixed(3)), source: 'cgroup memory.current, or RSS of the cgroup\'s processes without the memory controller' });
  }
}

await main();

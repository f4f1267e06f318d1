// Runtime shape bench (issue 10): what qubes-net costs per qube role and how fast the agent
// answers when it has to be started on demand, each figure next to a baseline measured in
// the same run.
//
// - Resident memory per qube role in the lab (client, sys-firewall, sys-net): every process
//   in the qube's network namespace but the lab's QubesDB stand-in daemon (a template has
//   upstream's C daemon), idle (after --idle-exit) and while working (the agent running);
//   baseline: python3 with the imports of upstream's firewall daemon.
// - First vif online after idle (the hotplug C client connects, the watcher activates the
//   agent, the agent rebuilds its state and answers) vs upstream's vif-route-qubes sequence
//   (bench/driver-agent/upstream-vif-route.sh) for another vif, both run through the same
//   namespace entry; then a 24-vif burst, mean per vif, against the same baseline.
// - Firewall update latency (dom0 writes a qube's rules and marker → the firewall's feedback
//   key changes) with the agent idle (started by the watcher) vs already running.
// - The watcher's own RSS: static vs dynamic, one merged network-qube watcher vs two.
// - The agent's RSS with 1,000 qubes' firewall rules vs one (target <= 75 MB).
//
//   node bench/dist/network-agent/runtime.bench.js [--samples N]
//   ... --ab A.cjs,B.cjs   only the first vif after idle, two agent files interleaved (A/B runs)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(HERE, '..', '..', '..');
const WATCH = join(repoRoot, 'native-bindings', 'build', 'qubes-net-watch');
/** The agent as the lab and the package run it: the esbuild bundle where it was built. */
const AGENT_BUNDLE = join(repoRoot, 'packages', 'network-agent', 'bundle', 'qubes-net-agent.cjs');
const AGENT_LAUNCHER = join(repoRoot, 'packages', 'network-agent', 'bundle', 'qubes-net-agent-cached.cjs');
const AGENT_CLI = [AGENT_LAUNCHER, AGENT_BUNDLE].find((f) => existsSync(f)) ?? join(repoRoot, 'packages', 'network-agent', 'dist', 'cli.js');
const BASELINE = join(repoRoot, 'bench', 'driver-agent', 'upstream-vif-route.sh');
const IDLE_MS = 2_000;
/** The stdlib part of upstream's qubes-firewall daemon's imports (its qubesdb binding is C). */
const PY_IMPORTS = 'import argparse, logging, os, socket, subprocess, sys, signal, ipaddress, datetime, time, functools, enum, shlex, pathlib, asyncio';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

function report(figure: string, unit: string, ours: number, baselineName: string, baseline: number, extra: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ bench: 'network-agent/runtime', figure, unit, ours: Math.round(ours * 100) / 100, baseline: { name: baselineName, value: Math.round(baseline * 100) / 100 }, ratio: Math.round((ours / baseline) * 100) / 100, ...extra }) + '\n');
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rssKb(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function netnsOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/** RSS (MB) of every process in the namespace of `nsPid` but `skip`, and how many run Node. */
function namespaceCost(nsPid: number, skip: number): { mb: number; node: number; procs: number } {
  const ns = netnsOf(nsPid);
  let kb = 0;
  let node = 0;
  let procs = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === skip || netnsOf(Number(d)) !== ns) continue;
    procs++;
    kb += rssKb(Number(d));
    try {
      if (/\/node$/.test(readlinkSync(`/proc/${d}/exe`))) node++;
    } catch {
      /* gone */
    }
  }
  return { mb: kb / 1024, node, procs };
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function pythonBaselineMb(): Promise<number> {
  const py = spawn('python3', ['-c', `${PY_IMPORTS}\nimport time\nprint('ready', flush=True)\ntime.sleep(60)`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((r) => py.stdout!.once('data', () => r()));
  const mb = rssKb(py.pid!) / 1024;
  py.kill('SIGKILL');
  return mb;
}

// ------------------------------------------------------------------ memory per role (lab)

async function memoryPerRole(pyMb: number): Promise<void> {
  const { Lab, parseTopology, upAll, sendAgentRequest } = await import('@qubes-net/lab');
  const { createLogger } = await import('@qubes-net/common');
  process.env.QUBES_NET_LAB_IDLE_EXIT_MS = String(IDLE_MS);
  const model = parseTopology(`
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }
  - { name: work, qid: 7, netvm: sys-firewall }
`, 'bench.yaml');
  model.name = `b${process.pid.toString(36)}`;
  const lab = await Lab.create(model, { stateDir: mkdtempSync(join(tmpdir(), 'qn-agent-bench-')), logger: createLogger('bench', 'warn') });
  try {
    await upAll(lab);
    const roles = [['client', 'work'], ['sys-firewall', 'sys-firewall'], ['sys-net', 'sys-net']] as const;
    // Idle: after --idle-exit, nothing but the watchers.
    await until('no Node process in any qube', () => roles.every(([, q]) => namespaceCost(lab.runningQube(q).qdbDaemon.pid, lab.runningQube(q).qdbDaemon.pid).node === 0), IDLE_MS * 10 + 30_000);
    for (const [role, q] of roles) {
      const rq = lab.runningQube(q);
      const c = namespaceCost(rq.qdbDaemon.pid, rq.qdbDaemon.pid);
      report(`RSS idle, ${role} (all qubes-net processes: ${c.procs})`, 'MB', c.mb, 'python3 with upstream firewall imports', pyMb);
    }
    // Working: the agent started (a status request activates it) and answering.
    for (const [role, q] of roles.slice(1)) {
      const rq = lab.runningQube(q);
      const st = await sendAgentRequest(rq.ns, { op: 'status' });
      if (!st.ok) throw new Error(`status in ${q}: ${st.message}`);
      await sendAgentRequest(rq.ns, { op: 'reconcile' });
      const c = namespaceCost(rq.qdbDaemon.pid, rq.qdbDaemon.pid);
      report(`RSS while working, ${role} (agent running, ${c.procs} processes)`, 'MB', c.mb, 'python3 with upstream firewall imports', pyMb);
    }
  } finally {
    await lab.destroy();
    delete process.env.QUBES_NET_LAB_IDLE_EXIT_MS;
  }
}

// ------------------------------------------------------------------ the watcher itself

/**
 * RSS of one qubes-net-watch: a client's (the uplink's group) and a network qube's (the agent's
 * group and the uplink's in one process), each as built (static-pie where libc.a exists) and
 * linked dynamically (`make STATIC=no`, built here), all in the same provider namespace.
 */
async function watcherMemory(netvm: import('@qubes-net/netns').Qube, tmp: string): Promise<void> {
  const { watchArgs } = await import('@qubes-net/guest-agent/watch-args');
  const { agentWatchArgs, combinedWatchArgs } = await import('@qubes-net/network-agent/watch-args');
  const dynDir = join(tmp, 'dyn');
  const mk = spawnSync('make', ['-s', '-C', join(repoRoot, 'native-bindings'), 'STATIC=no', `BUILD=${dynDir}`, `${dynDir}/qubes-net-watch`], { encoding: 'utf8' });
  if (mk.status !== 0) throw new Error(`building the dynamic watcher failed: ${mk.stderr}`);
  const uplink = watchArgs('eth9', { cli: ['/bin/true'] });
  // --notify to a socket nobody serves: nothing fires without a change, nothing is activated.
  const agent = agentWatchArgs({ cli: ['/bin/true'], socket: join(tmp, 'nobody.sock'), wakeFile: join(tmp, 'wake'), resolvConf: join(tmp, 'resolv.conf'), resolvedFile: null, uplinks: ['eth9'], mode: 'notify' });
  const rss = async (bin: string, args: string[]) => {
    const w = netvm.spawn(bin, args, { stdio: ['ignore', 'ignore', 'ignore'] });
    await sleep(700);
    const mb = rssKb(w.pid!) / 1024;
    w.kill('SIGTERM');
    await new Promise((r) => w.once('exit', r));
    return mb;
  };
  const dyn = join(dynDir, 'qubes-net-watch');
  const client = { ours: await rss(WATCH, uplink), dyn: await rss(dyn, uplink) };
  const merged = { ours: await rss(WATCH, combinedWatchArgs(agent, uplink)), dyn: await rss(dyn, combinedWatchArgs(agent, uplink)) };
  const two = (await rss(dyn, agent)) + client.dyn;
  report('one watcher, client (uplink group), RSS', 'MB', client.ours, 'the same, linked dynamically', client.dyn);
  report('one watcher, network qube (agent group + uplink group), RSS', 'MB', merged.ours, 'two dynamically linked watchers (the previous shape)', two, { mergedDynamic: Math.round(merged.dyn * 100) / 100 });
}

// ------------------------------------------------------------------ latencies (one provider)

async function latencies(samples: number): Promise<void> {
  const { AgentLab } = (await import(join(repoRoot, 'test', 'dist', 'network-agent', 'harness.js'))) as typeof import('../../test/network-agent/harness.js');
  const { RESOLV } = (await import(join(repoRoot, 'test', 'dist', 'driver-agent', 'lab.js'))) as typeof import('../../test/driver-agent/lab.js');
  const { agentWatchArgs } = await import('@qubes-net/network-agent/watch-args');
  const { AGENT_NODE_OPTIONS } = await import('@qubes-net/lab');
  const AGENT_FLAGS = (process.env.QUBES_NET_AGENT_NODE_OPTIONS ?? AGENT_NODE_OPTIONS).split(/\s+/).filter(Boolean);
  const libDir = join(repoRoot, 'native-bindings', 'build');
  const tmp = mkdtempSync(join(tmpdir(), 'qn-agent-bench-'));
  const qdbRead = join(tmp, 'qdb-read');
  const cc = spawnSync('cc', ['-O2', '-Wall', '-I', join(repoRoot, 'native-bindings', 'include'), '-o', qdbRead, join(repoRoot, 'bench', 'common', 'qdb-read.c'), '-L', libDir, '-lqubesdb', `-Wl,-rpath,${libDir}`], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`building qdb-read failed: ${cc.stderr}`);

  const al = await AgentLab.create('agent-bench');
  const netvm = al.lab.netvm;
  const qdbPid = al.lab.qdb.pid;
  const startWatcher = (cli = AGENT_CLI) => netvm.spawn(WATCH, agentWatchArgs({
    cli: [process.execPath, ...AGENT_FLAGS, cli],
    resolvConf: RESOLV,
    resolvedFile: null,
    runArgs: ['--idle-exit', String(IDLE_MS), '--resolv-conf', RESOLV, '--no-resolved', '--firewall', 'on'],
  }), { stdio: ['ignore', 'ignore', 'ignore'], env: { MALLOC_ARENA_MAX: '2', CACHE_DIRECTORY: join(tmp, 'v8-cache') } });
  let watcher = startWatcher();
  const idle = () => until('the agent to go idle', () => namespaceCost(qdbPid, qdbPid).node === 0, IDLE_MS * 10 + 30_000);
  const timed = async (fn: () => Promise<unknown>) => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  const ours = async (d: number) => {
    const r = await al.lab.hotplug('online', `vif${d}.0`, d, { QUBES_NET_HOTPLUG_TIMEOUT: '60' });
    if (r.code !== 0) throw new Error(`hotplug vif${d}.0: ${r.stderr}`);
  };
  const upstream = async (d: number) => {
    const r = await netvm.exec('sh', [BASELINE, 'online'], { allowFailure: true, env: { vif: `vif${d}.0`, XENBUS_PATH: al.lab.xenbusPath(d), QDB_READ: qdbRead } });
    if (r.exitCode !== 0) throw new Error(`upstream vif-route vif${d}.0: ${r.stderr}`);
  };
  try {
    const ab = abFiles();
    if (ab) {
      // A/B: the same figure for two agent files, alternating per sample (one watcher each time).
      const times: number[][] = ab.map(() => []);
      const base: number[] = [];
      let d = 10;
      await al.plainVif(200);
      await ours(200);
      for (let i = 0; i < samples; i++) {
        for (const [k, cli] of ab.entries()) {
          watcher.kill('SIGTERM');
          await idle();
          watcher = startWatcher(cli);
          await sleep(300);
          const a = await al.plainVif(d++);
          times[k]!.push(await timed(() => ours(a.domid)));
          await idle();
        }
        const b = await al.plainVif(d++);
        base.push(await timed(() => upstream(b.domid)));
      }
      for (const [k, cli] of ab.entries()) report(`first vif online after idle, ${k ? 'B' : 'A'} (${cli.split('/').at(-1)}; median)`, 'ms', median(times[k]!), 'upstream vif-route-qubes', median(base), { samples, all: times[k]!.map((x) => Math.round(x)) });
      return;
    }
    await watcherMemory(netvm, tmp);
    // First vif after idle vs upstream's script (agent idle before each of ours).
    const first: number[] = [];
    const base: number[] = [];
    const floor: number[] = [];
    let d = 10;
    await al.plainVif(200);
    await ours(200); // the first start ever loads the base ruleset; not what this figure is about
    for (let i = 0; i < samples; i++) {
      const a = await al.plainVif(d++);
      const b = await al.plainVif(d++);
      await idle();
      first.push(await timed(() => ours(a.domid)));
      base.push(await timed(() => upstream(b.domid)));
      floor.push(await timed(() => netvm.exec(process.execPath, ['-e', '0'])));
    }
    report('first vif online after idle (hotplug call → return; median)', 'ms', median(first), 'upstream vif-route-qubes', median(base), { samples, agent: AGENT_CLI.split('/').at(-1), flags: AGENT_FLAGS });
    report("floor: `node -e 0` through the same namespace entry (Node's start alone; median)", 'ms', median(floor), 'upstream vif-route-qubes', median(base), { samples });

    // A 24-vif burst with the agent running, mean per vif, vs the same burst through upstream's script.
    const burstOurs: { domid: number }[] = [];
    const burstBase: { domid: number }[] = [];
    for (let i = 0; i < 24; i++) burstOurs.push(await al.plainVif(d++));
    for (let i = 0; i < 24; i++) burstBase.push(await al.plainVif(d++));
    await al.request({ op: 'status' });
    const tOurs = await timed(() => Promise.all(burstOurs.map((v) => ours(v.domid))));
    const tBase = await timed(() => Promise.all(burstBase.map((v) => upstream(v.domid))));
    report('24-vif burst, wall time per vif (agent running)', 'ms', tOurs / 24, 'upstream vif-route-qubes', tBase / 24);

    // Firewall update: rules and marker written as dom0 does → feedback key changes.
    const ip = '10.137.0.77';
    const update = async (n: number) => {
      const before = await al.lab.db.read(`/qubes-firewall-applied/${ip}`);
      const t0 = performance.now();
      await al.lab.db.rm(`/qubes-firewall/${ip}/`);
      await al.lab.db.write(`/qubes-firewall/${ip}/policy`, 'drop');
      await al.lab.db.write(`/qubes-firewall/${ip}/0000`, `action=accept proto=tcp dstports=${1000 + n}-${1000 + n}`);
      await al.lab.db.write(`/qubes-firewall/${ip}`, '');
      await until('firewall feedback', async () => (await al.lab.db.read(`/qubes-firewall-applied/${ip}`)) !== before, 30_000);
      return performance.now() - t0;
    };
    const afterIdle: number[] = [];
    const running: number[] = [];
    for (let i = 0; i < samples; i++) {
      await idle();
      afterIdle.push(await update(2 * i));
      running.push(await update(2 * i + 1));
    }
    report('firewall update latency after idle (rules written → applied feedback; median)', 'ms', median(afterIdle), 'the same update with the agent running', median(running), { samples, runningMean: mean(running) });

    // Today's shape: the resident firewall daemon (`qubes-net-firewall run`) on the same qube.
    watcher.kill('SIGTERM');
    await idle();
    const fw = netvm.spawn(process.execPath, [join(repoRoot, 'packages', 'firewall', 'dist', 'cli.js'), 'run', '--resolv-conf', RESOLV], { stdio: ['ignore', 'ignore', 'ignore'] });
    try {
      await until('the firewall daemon to apply the existing rules', async () => (await al.lab.db.read(`/qubes-firewall-applied/${ip}`)) !== undefined && netvm.outputOf(fw) !== undefined, 30_000);
      await sleep(500);
      const daemon: number[] = [];
      for (let i = 0; i < samples; i++) daemon.push(await update(100 + i));
      report('firewall update latency, agent running (median)', 'ms', median(running), "today's resident firewall daemon (qubes-net-firewall run)", median(daemon), { samples });
      report('firewall update latency, agent started by the update after idle (median)', 'ms', median(afterIdle), "today's resident firewall daemon (qubes-net-firewall run)", median(daemon), { samples });
    } finally {
      fw.kill('SIGTERM');
    }
    await until('the firewall daemon to exit', () => namespaceCost(qdbPid, qdbPid).node === 0, 30_000);

    // Last (its 1,000 qubes would weigh on the figures above): the agent again, on demand.
    watcher = startWatcher();
    // Working RSS with 1,000 qubes' rules (target <= 75 MB), next to the same agent with one.
    const agentPid = () => {
      const ns = netnsOf(qdbPid);
      const pid = readdirSync('/proc').find((p) => /^\d+$/.test(p) && Number(p) !== qdbPid && netnsOf(Number(p)) === ns && (() => { try { return /\/node$/.test(readlinkSync(`/proc/${p}/exe`)); } catch { return false; } })());
      return pid === undefined ? undefined : Number(pid);
    };
    // The new watcher binds the socket a moment after its start: until then a request finds none.
    await until('the watcher to take requests', async () => (await al.request({ op: 'reconcile' }).then(() => true, () => false)), 30_000);
    const oneMb = rssKb(agentPid() ?? 0) / 1024;
    const many = Array.from({ length: 1000 }, (_, i) => `10.137.${100 + Math.floor(i / 250)}.${1 + (i % 250)}`);
    for (const q of many) {
      await al.lab.db.write(`/qubes-firewall/${q}/policy`, 'drop');
      await al.lab.db.write(`/qubes-firewall/${q}/0000`, 'action=accept proto=icmp');
      await al.lab.db.write(`/qubes-firewall/${q}/0001`, 'action=accept specialtarget=dns');
      await al.lab.db.write(`/qubes-firewall/${q}/0002`, 'action=accept proto=tcp dstports=1000-2000');
      await al.lab.db.write(`/qubes-firewall/${q}`, '');
    }
    await until('1,000 qubes\' rules applied', async () => {
      await al.request({ op: 'status' });
      return (await al.lab.db.read(`/qubes-firewall-applied/${many.at(-1)}`)) !== undefined;
    }, 120_000);
    await al.request({ op: 'reconcile' });
    const manyMb = rssKb(agentPid() ?? 0) / 1024;
    report('agent RSS while working, 1,000 qubes\' firewall rules (target <= 75 MB)', 'MB', manyMb, 'the same agent with one qube\'s rules', oneMb);
    for (const q of many) await al.lab.db.rm(`/qubes-firewall/${q}/`);
    for (const q of many) await al.lab.db.rm(`/qubes-firewall/${q}`);


  } finally {
    watcher.kill('SIGTERM');
    await al.destroy();
  }
}

function abFiles(): [string, string] | undefined {
  const i = process.argv.indexOf('--ab');
  if (i < 0) return undefined;
  const files = String(process.argv[i + 1] ?? '').split(',');
  if (files.length !== 2 || !files.every((f) => existsSync(f))) throw new Error('--ab needs two existing agent files: A.cjs,B.cjs');
  return files as [string, string];
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('network-agent/runtime bench needs root (namespaces, nftables): skipped\n');
    return;
  }
  const samples = arg('samples', 5);
  if (abFiles()) return latencies(samples);
  const pyMb = await pythonBaselineMb();
  await memoryPerRole(pyMb);
  await latencies(samples);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});

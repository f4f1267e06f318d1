// Driver agent bench: per-vif `hotplug online` latency (call → return, through the C client
// and the daemon) with 0 and 500 vifs already present, a 500-vif burst, and the daemon's RSS
// with 500 vifs; each figure next to a baseline measured in the same run: upstream's per-vif
// sequence (upstream-vif-route.sh: one process per step) for the latencies and the burst,
// the same daemon with no vif for the RSS.
//
// Everything runs inside one throwaway netvm qube. The timing loop itself runs inside the
// qube too (this file, started with --inner), so nsenter's start-up is in neither figure.
//
//   node bench/dist/driver-agent/hotplug.bench.js [--samples N] [--burst N]
//   (DRIVER_BENCH_MAIN_NODE_OPTIONS replaces the daemon's NODE_OPTIONS for the main figures.)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { DRIVER_SOCKET, prepareNetvm, startDriverDaemon, stopDriverDaemon, vifXenbus as xenbus } from './daemon.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(HERE, '..', '..', '..');
const SRC = join(repoRoot, 'bench', 'driver-agent');
const DRIVER_CLI = join(repoRoot, 'packages', 'driver-agent', 'dist', 'cli.js');
const HOTPLUG = join(repoRoot, 'native-bindings', 'build', 'qubes-net-hotplug');
const BASELINE = join(SRC, 'upstream-vif-route.sh');
const GATEWAY = '10.137.0.2';
const GATEWAY6 = 'fd09:24ef:4179::a89:2';
const MAC = '00:16:3e:5e:6c:00';
/** NODE_OPTIONS of packaging/systemd/qubes-net-driver.service today. */
const UNIT_NODE_OPTIONS = '--max-old-space-size=64';
/**
 * What this package recommends for that unit: a 1 MB young generation (the daemon's
 * allocations are short-lived and small) and no JIT (its JavaScript per event is tiny; the
 * compilers' code and their output are most of the RSS above an idle node).
 */
const RECOMMENDED_NODE_OPTIONS = process.env.DRIVER_BENCH_MAIN_NODE_OPTIONS ?? '--max-old-space-size=64 --max-semi-space-size=1 --jitless';

type Impl = 'ours' | 'baseline';
interface Job {
  kind: 'latency' | 'burst';
  impl: Impl;
  domids: number[];
  qdbRead: string;
}


function ipv4For(d: number): string {
  if (d < 255) return `10.137.0.${d}`;
  const v = d - 1;
  return `10.137.${Math.floor(v / 254)}.${(v % 254) + 1}`;
}

function commandFor(impl: Impl, d: number, qdbRead: string): { cmd: string; args: string[]; env: NodeJS.ProcessEnv } {
  const env = { ...process.env, vif: `vif${d}.0`, XENBUS_PATH: xenbus(d), QDB_READ: qdbRead, QUBES_NET_AGENT_SOCKET: DRIVER_SOCKET };
  return impl === 'ours' ? { cmd: HOTPLUG, args: ['online'], env } : { cmd: 'sh', args: [BASELINE, 'online'], env };
}

// ------------------------------------------------------------------ inside the qube

function runOne(impl: Impl, d: number, qdbRead: string): Promise<{ ms: number; code: number | null; err: string }> {
  const { cmd, args, env } = commandFor(impl, d, qdbRead);
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (b) => (err += b));
    child.once('exit', (code) => resolve({ ms: performance.now() - t0, code, err: err.slice(-300) }));
  });
}

async function inner(job: Job): Promise<void> {
  if (job.kind === 'latency') {
    const ms: number[] = [];
    const failures: string[] = [];
    for (const d of job.domids) {
      const r = await runOne(job.impl, d, job.qdbRead);
      if (r.code === 0) ms.push(r.ms);
      else failures.push(`vif${d}.0: exit ${r.code} ${r.err}`);
    }
    process.stdout.write(JSON.stringify({ ms, failures }) + '\n');
    return;
  }
  const t0 = performance.now();
  const results = await Promise.all(job.domids.map((d) => runOne(job.impl, d, job.qdbRead)));
  const wall = performance.now() - t0;
  const failures = results.filter((r) => r.code !== 0).map((r) => `exit ${r.code} ${r.err}`);
  process.stdout.write(JSON.stringify({ ms: [wall], failures }) + '\n');
}

// ------------------------------------------------------------------ outside: set-up and report

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const r2 = (x: number) => Math.round(x * 100) / 100;

function report(figure: string, unit: string, ours: number[], baselineName: string, base: number[], target: string, met: boolean, extra: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({
    bench: 'driver-agent', figure, unit,
    value: r2(pct(ours, 50)), p95: r2(pct(ours, 95)), n: ours.length,
    baseline: { name: baselineName, value: r2(pct(base, 50)), p95: r2(pct(base, 95)), n: base.length },
    target, met, ...extra,
  }) + '\n');
}

function rssKb(pid: number): { rss: number; hwm: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: get('VmRSS'), hwm: get('VmHWM'), anon: get('RssAnon'), file: get('RssFile') };
}

async function outer(samples: number, burst: number): Promise<void> {
  const { NetnsSession } = await import('@qubes-net/netns');
  // The test helper is compiled to test/dist, not next to this file: import it from there.

  const tmp = mkdtempSync(join(tmpdir(), 'qn-drv-bench-'));
  const libDir = join(repoRoot, 'native-bindings', 'build');
  const qdbRead = join(tmp, 'qdb-read');
  const cc = spawnSync('cc', ['-O2', '-Wall', '-I', join(repoRoot, 'native-bindings', 'include'), '-o', qdbRead, join(repoRoot, 'bench', 'common', 'qdb-read.c'), '-L', libDir, '-lqubesdb', `-Wl,-rpath,${libDir}`], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`building qdb-read failed: ${cc.stderr}`);

  const session = await NetnsSession.create('drv-bench');
  let daemon: ChildProcess | undefined;
  try {
    const netvm = await session.qube('netvm');
    const warm = 3;
    const plan = {
      lat0: Array.from({ length: samples + warm }, (_, i) => 11 + i),
      base0: Array.from({ length: samples + warm }, (_, i) => 101 + i),
      burst: Array.from({ length: burst }, (_, i) => 1001 + i),
      lat500: Array.from({ length: samples }, (_, i) => 201 + i),
      base500: Array.from({ length: samples }, (_, i) => 301 + i),
      baseBurst: Array.from({ length: burst }, (_, i) => 3001 + i),
      variant: Array.from({ length: 15 }, (_, i) => 401 + i),
    };
    const all = Object.values(plan).flat();
    process.stderr.write(`[bench] ${(performance.now() / 1000).toFixed(1)}s creating ${all.length} vifs\n`);
    // The far ends live in another qube, as the frontends live in other domains: the netvm
    // holds its vifs and nothing else, like a real one.
    const clients = await session.qube('clients');
    const { qdb, db } = await prepareNetvm(netvm, clients, all, { ipv4For, mac: MAC, gateway: GATEWAY, gateway6: GATEWAY6 });

    // The daemon, started as the unit starts it (NODE_OPTIONS), here with the flags this
    // package recommends for the unit; the unit's current flags are compared at the end.
    const startDaemon = (nodeOptions: string): Promise<ChildProcess> => startDriverDaemon(netvm, DRIVER_CLI, nodeOptions);
    const stopDaemon = stopDriverDaemon;
    daemon = await startDaemon(RECOMMENDED_NODE_OPTIONS);
    const d = daemon;
    await new Promise((r) => setTimeout(r, 2500));
    const rss0 = rssKb(d.pid!);

    const runInner = async (job: Omit<Job, 'qdbRead'>): Promise<number[]> => {
      const res = await netvm.exec(process.execPath, [fileURLToPath(import.meta.url), '--inner', JSON.stringify({ ...job, qdbRead })], { timeoutMs: 600_000 });
      const out = JSON.parse(res.stdout.trim().split('\n').pop()!) as { ms: number[]; failures: string[] };
      if (out.failures.length) throw new Error(`${job.impl} ${job.kind}: ${out.failures.length} failed, e.g. ${out.failures[0]}`);
      return out.ms;
    };

    process.stderr.write('[bench] latency with 0 vifs present\n');
    const ours0 = (await runInner({ kind: 'latency', impl: 'ours', domids: plan.lat0 })).slice(warm);
    const baseline0 = (await runInner({ kind: 'latency', impl: 'baseline', domids: plan.base0 })).slice(warm);
    process.stderr.write(`[bench] ${(performance.now() / 1000).toFixed(1)}s burst of ${burst} vifs\n`);
    const [burstMs] = await runInner({ kind: 'burst', impl: 'ours', domids: plan.burst });
    process.stderr.write('[bench] latency with the burst present\n');
    const ours500 = await runInner({ kind: 'latency', impl: 'ours', domids: plan.lat500 });
    const baseline500 = await runInner({ kind: 'latency', impl: 'baseline', domids: plan.base500 });
    // Steady state: the daemon collects garbage once idle for a second after a burst.
    await new Promise((r) => setTimeout(r, 2500));
    const rssN = rssKb(d.pid!);
    // The daemon's helpers (ip monitor, the ip session) are separate processes; nft runs in process.
    const helpers = (await netvm.exec('ps', ['-o', 'rss=,args=', '--ppid', String(d.pid!)])).stdout.trim().split('\n').filter(Boolean)
      .map((l) => { const m = /^\s*(\d+)\s+(.*)$/.exec(l)!; return { args: m[2]!, rssMB: r2(Number(m[1]) / 1024) }; });
    const st = JSON.parse((await netvm.exec(process.execPath, [DRIVER_CLI, 'status', '--json'])).stdout) as { memory: Record<string, number>; vifs: unknown[]; kernel: { inSync: boolean } };
    const heapMB = Object.fromEntries(Object.entries(st.memory).map(([k, v]) => [k, r2(v / 1048576)]));
    // RSS with the same vifs under the unit's current NODE_OPTIONS and under none: restart
    // (the daemon reconciles every vif from QubesDB), then a few more events.
    const variants: Array<{ name: string; nodeOptions: string; rss: number }> = [];
    await stopDaemon(d);
    daemon = undefined;
    for (const [name, nodeOptions] of [['unit as shipped', UNIT_NODE_OPTIONS], ['recommended', RECOMMENDED_NODE_OPTIONS], ['no NODE_OPTIONS', '']] as const) {
      const child = await startDaemon(nodeOptions);
      daemon = child;
      await runInner({ kind: 'latency', impl: 'ours', domids: plan.variant.splice(0, 5) });
      await new Promise((r) => setTimeout(r, 2500));
      variants.push({ name, nodeOptions, rss: rssKb(child.pid!).rss / 1024 });
      await stopDaemon(child);
      daemon = undefined;
    }
    daemon = await startDaemon(RECOMMENDED_NODE_OPTIONS);
    process.stderr.write(`[bench] ${(performance.now() / 1000).toFixed(1)}s baseline burst of ${burst} vifs\n`);
    const [baseBurstMs] = await runInner({ kind: 'burst', impl: 'baseline', domids: plan.baseBurst });
    const third = (ours: number[], base: number[]) => pct(ours, 50) <= pct(base, 50) / 3;
    report('hotplug online latency (call → return), 0 vifs present', 'ms', ours0, 'upstream sequence, one process per step (upstream-vif-route.sh)', baseline0, 'median <= baseline median / 3', third(ours0, baseline0));
    report(`hotplug online latency (call → return), ${burst + samples + warm} vifs present`, 'ms', ours500, 'upstream sequence, one process per step (upstream-vif-route.sh)', baseline500, 'median <= baseline median / 3', third(ours500, baseline500));
    report(`hotplug online latency: ${burst} vifs present vs 0`, 'ms', ours500, 'ours with 0 vifs present', ours0, 'flat: median within +25% (+1 ms) of the 0-vif median', pct(ours500, 50) <= pct(ours0, 50) * 1.25 + 1);
    report(`${burst}-vif burst online (all hotplug calls at once → all returned)`, 'ms', [burstMs!], `upstream sequence for ${burst} vifs, all at once`, [baseBurstMs!], '< 10000 ms', burstMs! < 10_000);
    report(`driver daemon RSS with ${burst + samples + warm} vifs online`, 'MB', [rssN.rss / 1024], 'same daemon with 0 vifs', [rss0.rss / 1024], '< 60 MB', rssN.rss / 1024 < 60, { peakMB: r2(rssN.hwm / 1024), anonMB: r2(rssN.anon / 1024), fileMB: r2(rssN.file / 1024), nodeOptions: RECOMMENDED_NODE_OPTIONS, daemonMemoryAfterStatusMB: heapMB, helpers, vifs: st.vifs.length, inSync: st.kernel.inSync });
    for (const v of variants) {
      report(`driver daemon RSS after a restart with ${burst + samples + warm}+ vifs, NODE_OPTIONS ${v.name}`, 'MB', [v.rss], 'same daemon with 0 vifs (recommended NODE_OPTIONS)', [rss0.rss / 1024], '< 60 MB', v.rss < 60, { nodeOptions: v.nodeOptions });
    }
    await db.close();
    await qdb.stop();
  } finally {
    daemon?.kill('SIGTERM');
    await session.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

const argv = process.argv.slice(2);
if (argv[0] === '--inner') {
  await inner(JSON.parse(argv[1]!) as Job);
} else {
  const opt = (name: string, dflt: number) => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : dflt;
  };
  if (process.getuid?.() !== 0) {
    process.stderr.write('the driver bench needs root (network namespaces)\n');
    process.exit(77);
  }
  await outer(opt('--samples', 30), opt('--burst', 500));
  process.exit(0);
}

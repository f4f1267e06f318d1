// Driver loop bench (issue 10.5): the driver before the managers rewrite (the driver.ts of the
// branch point, built from git: pass its CLI with --before CLI or DRIVER_BENCH_BEFORE_CLI)
// against this one, in the same run and the same netvm qube, with 28 vifs: `hotplug online`
// latency (call → return through the C client and the daemon) one vif at a time, a burst of
// all 28 at once, and the daemon's RSS once idle. Rounds alternate before/after so that
// warm-up and drift hit both alike.
//
//   node bench/dist/driver-agent/loop.bench.js --before /path/to/old/driver-agent/dist/cli.js [--vifs 28] [--rounds 2]
// Without --before the figures of this driver are given alone (baseline: none).
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { DRIVER_SOCKET, prepareNetvm, startDriverDaemon, stopDriverDaemon, vifXenbus as xenbus } from './daemon.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(HERE, '..', '..', '..');
const AFTER_CLI = join(repoRoot, 'packages', 'driver-agent', 'dist', 'cli.js');
const HOTPLUG = join(repoRoot, 'native-bindings', 'build', 'qubes-net-hotplug');
const MAC = '00:16:3e:5e:6c:00';
/** NODE_OPTIONS of the shipped unit. */
const NODE_OPTIONS = '--max-old-space-size=64';

interface Job { command: 'online' | 'offline'; domids: number[]; burst: boolean }

function runOne(command: string, d: number): Promise<{ ms: number; code: number | null; err: string }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(HOTPLUG, [command], { env: { ...process.env, vif: `vif${d}.0`, XENBUS_PATH: xenbus(d), QUBES_NET_AGENT_SOCKET: DRIVER_SOCKET }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (b) => (err += b));
    child.once('exit', (code) => resolve({ ms: performance.now() - t0, code, err: err.slice(-300) }));
  });
}

/** Inside the qube: the timing loop (so nsenter's start-up is in no figure). */
async function inner(job: Job): Promise<void> {
  const out: number[] = [];
  const failures: string[] = [];
  if (job.burst) {
    const t0 = performance.now();
    const rs = await Promise.all(job.domids.map((d) => runOne(job.command, d)));
    out.push(performance.now() - t0);
    for (const r of rs) if (r.code !== 0) failures.push(`exit ${r.code} ${r.err}`);
  } else {
    for (const d of job.domids) {
      const r = await runOne(job.command, d);
      if (r.code === 0) out.push(r.ms);
      else failures.push(`vif${d}.0: exit ${r.code} ${r.err}`);
    }
  }
  process.stdout.write(JSON.stringify({ ms: out, failures }) + '\n');
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const r2 = (x: number) => Math.round(x * 100) / 100;

function report(figure: string, unit: string, after: number[], before: number[] | undefined, extra: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({
    bench: 'driver-agent-loop', figure, unit,
    value: r2(pct(after, 50)), p95: r2(pct(after, 95)), n: after.length,
    baseline: before ? { name: 'driver before the managers rewrite (branch point), same run', value: r2(pct(before, 50)), p95: r2(pct(before, 95)), n: before.length } : { name: 'none (no --before CLI given)' },
    ...(before ? { ratio: r2(pct(after, 50) / pct(before, 50)) } : {}),
    ...extra,
  }) + '\n');
}

async function outer(beforeCli: string | undefined, vifs: number, rounds: number): Promise<void> {
  const { NetnsSession } = await import('@qubes-net/netns');
  const { ipBatch } = await import('@qubes-net/common');
  const session = await NetnsSession.create('drv-loopbench');
  let daemon: ChildProcess | undefined;
  try {
    const netvm = await session.qube('netvm');
    const clients = await session.qube('clients');
    const domids = Array.from({ length: vifs }, (_, i) => 11 + i);
    const { qdb, db } = await prepareNetvm(netvm, clients, domids, { ipv4For: (d) => `10.137.0.${d}`, mac: MAC, gateway: '10.137.0.2', gateway6: 'fd09:24ef:4179::a89:2' });

    const startDaemon = (cli: string): Promise<ChildProcess> => startDriverDaemon(netvm, cli, NODE_OPTIONS);
    const stopDaemon = stopDriverDaemon;
    const runInner = async (job: Job): Promise<number[]> => {
      const r = await netvm.exec(process.execPath, [fileURLToPath(import.meta.url), '--inner', JSON.stringify(job)], { timeoutMs: 300_000 });
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ms: number[]; failures: string[] };
      if (out.failures.length) throw new Error(`${job.command}: ${out.failures.length} failed, e.g. ${out.failures[0]}`);
      return out.ms;
    };
    const rssMB = (pid: number) => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
    /** The daemon's helper processes (ip monitor; before: the nft -i and ip -batch sessions). */
    const helpersMB = async (pid: number) => (await netvm.exec('ps', ['-o', 'rss=', '--ppid', String(pid)], { allowFailure: true })).stdout.trim().split('\n').filter(Boolean).reduce((a, l) => a + Number(l) / 1024, 0);
    /** Every vif offline, our state and feedback gone: each round starts from the same place. */
    const reset = async () => {
      for (const t of [['ip', 'qubes'], ['ip6', 'qubes']]) await netvm.exec('nft', ['delete', 'table', ...t], { allowFailure: true });
      await db.rm('/qubes-vif/');
      for (const d of domids) await netvm.xenstoreRm(`${xenbus(d)}/hotplug-status`).catch(() => undefined);
      await ipBatch(domids.flatMap((d) => [`link set vif${d}.0 down group default`, `address flush dev vif${d}.0`]), { netns: netvm.netns });
    };

    const impls: Array<['before' | 'after', string]> = beforeCli ? [['before', beforeCli], ['after', AFTER_CLI]] : [['after', AFTER_CLI]];
    const fresh = () => ({ seq: [] as number[], burst: [] as number[], rss: [] as number[], total: [] as number[], start: [] as number[] });
    const acc = { before: fresh(), after: fresh() };
    for (let round = 0; round < rounds; round++) {
      for (const [name, cli] of round % 2 ? [...impls].reverse() : impls) {
        process.stderr.write(`[bench] round ${round + 1} ${name}\n`);
        await reset();
        const t0 = performance.now();
        daemon = await startDaemon(cli);
        acc[name].start.push(performance.now() - t0);
        const d = daemon;
        // The first vif after the daemon started, then the rest one by one.
        acc[name].seq.push(...(await runInner({ command: 'online', domids, burst: false })));
        await runInner({ command: 'offline', domids, burst: true });
        acc[name].burst.push(...(await runInner({ command: 'online', domids, burst: true })));
        await new Promise((r) => setTimeout(r, 2500));
        acc[name].rss.push(rssMB(d.pid!));
        acc[name].total.push(rssMB(d.pid!) + (await helpersMB(d.pid!)));
        await stopDaemon(d);
        daemon = undefined;
      }
    }
    const b = beforeCli ? acc.before : undefined;
    report(`hotplug online latency (call → return), one at a time, ${vifs} vifs`, 'ms', acc.after.seq, b?.seq);
    report(`burst: ${vifs} hotplug online at once (all returned)`, 'ms', acc.after.burst, b?.burst);
    report(`daemon RSS, idle with ${vifs} vifs online`, 'MB', acc.after.rss, b?.rss, { nodeOptions: NODE_OPTIONS });
    report(`daemon RSS plus its helper processes, idle with ${vifs} vifs online`, 'MB', acc.after.total, b?.total, { nodeOptions: NODE_OPTIONS });
    report('daemon start to "driver ready" (empty kernel)', 'ms', acc.after.start, b?.start);
    await db.close();
    await qdb.stop();
  } finally {
    daemon?.kill('SIGTERM');
    await session.destroy();
  }
}

const argv = process.argv.slice(2);
if (argv[0] === '--inner') {
  await inner(JSON.parse(argv[1]!) as Job);
} else {
  const opt = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  if (process.getuid?.() !== 0) {
    process.stderr.write('the driver loop bench needs root (network namespaces)\n');
    process.exit(77);
  }
  await outer(opt('--before') ?? process.env.DRIVER_BENCH_BEFORE_CLI, Number(opt('--vifs') ?? 28), Number(opt('--rounds') ?? 2));
  process.exit(0);
}

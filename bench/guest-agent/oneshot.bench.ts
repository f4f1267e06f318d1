// The client qube's runtime shape (issue 10), each figure next to a baseline measured in the
// same run, in a namespace qube with the real QubesDB daemon:
// - cold apply, process start to exit with the uplink configured, from an unconfigured uplink:
//   the bundled one-shot (packages/guest-agent/bundle/qubes-net-guest.cjs) vs upstream's
//   sequence (upstream-setup-ip.sh: sh + a C qdb-read per key + one ip per step), with the
//   unbundled dist CLI and `node -e 0` (the floor any Node one-shot pays) alongside;
//   contenders take turns in a rotating order so drifting machine load hits all alike;
// - where the bundled apply's time goes: node's own start (`node -e 0`), loading the bundle
//   (`watch-args`, which does no I/O), and the rest (QubesDB, ip, resolv.conf);
// - resident cost of a client qube: VmRSS of `qubes-net-watch` with the uplink's watch-args,
//   settled, next to `sleep` (the smallest resident C process); target <= 2 MB.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ipBatch, ipJson } from '@qubes-net/common';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { openQubesDB } from '@qubes-net/qubesdb';
import type { startQubesDB as StartQubesDB } from '../../test/helpers/qubesdb.js';
import type { APPENDIX_A as AppendixA } from '../../test/helpers/appendix-a.js';
import { configured, pct, report, round2, unconfigure } from './shared.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..', '..');
const BUNDLE = join(repoRoot, 'packages', 'guest-agent', 'bundle', 'qubes-net-guest.cjs');
const DIST_CLI = join(repoRoot, 'packages', 'guest-agent', 'dist', 'cli.js');
const WATCH = join(repoRoot, 'native-bindings', 'build', 'qubes-net-watch');
const SRC = join(repoRoot, 'bench', 'guest-agent');
const { startQubesDB } = (await import(join(repoRoot, 'test', 'dist', 'helpers', 'qubesdb.js'))) as { startQubesDB: typeof StartQubesDB };
const { APPENDIX_A } = (await import(join(repoRoot, 'test', 'dist', 'helpers', 'appendix-a.js'))) as { APPENDIX_A: typeof AppendixA };
const { '/qubes-vm-type': _vmType, ...KEYS }: Record<string, string> = APPENDIX_A;
const ROUNDS = Number(process.env.GUEST_BENCH_ONESHOT_ROUNDS ?? 20);
// The qube's eth0 is a veth (no device: driver "none"); on Xen only driver vif is an uplink.
process.env.QUBES_NET_UPLINK_DRIVERS = 'vif,none';


/**
 * Runs a command inside the qube under /usr/bin/time: the wall time in ms from spawn to exit,
 * and the CPU time (user + system, the command's children included), which a busy machine
 * distorts much less than wall time. Exit 0 required.
 */
const cpuTimes: Record<string, number[]> = {};
function timed(q: Qube, cmd: string, args: string[], env: Record<string, string> = {}, label?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = q.spawn('/usr/bin/time', ['-f', 'QN-CPU %U %S', cmd, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (b) => (out += b));
    child.stderr!.on('data', (b) => (out += b));
    child.once('exit', (code) => {
      const ms = performance.now() - t0;
      const m = /QN-CPU ([\d.]+) ([\d.]+)/.exec(out);
      if (label && m) (cpuTimes[label] ??= []).push((Number(m[1]) + Number(m[2])) * 1000);
      if (code === 0) resolve(ms);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${out.slice(-2000)}`));
    });
  });
}


function vmRssMB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('guest-agent oneshot bench needs root (network namespaces); skipped\n');
    return;
  }
  for (const f of [BUNDLE, WATCH]) if (!existsSync(f)) throw new Error(`${f} is missing: run npm run build and make -C native-bindings`);
  const tmp = mkdtempSync(join(tmpdir(), 'qn-guest-oneshot-'));
  const qdbRead = join(tmp, 'qdb-read');
  const libDir = join(repoRoot, 'native-bindings', 'build');
  const cc = spawnSync('cc', ['-O2', '-Wall', '-I', join(repoRoot, 'native-bindings', 'include'), '-o', qdbRead, join(repoRoot, 'bench', 'common', 'qdb-read.c'), '-L', libDir, '-lqubesdb', `-Wl,-rpath,${libDir}`], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`building qdb-read failed: ${cc.stderr}`);
  const baselineScript = join(SRC, 'upstream-setup-ip.sh');

  const session = await NetnsSession.create('guest-oneshot');
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    const [client, netvm] = await Promise.all([session.qube('client'), session.qube('netvm')]);
    await session.link(netvm, 'vif12.0', client, 'eth0', { aMac: 'fe:ff:ff:ff:ff:ff', bMac: KEYS['/qubes-mac']!, up: false });
    await ipBatch(['link set dev vif12.0 up', 'address add 10.137.0.3/32 dev vif12.0', 'route add 10.137.0.0/16 dev vif12.0'], { netns: netvm.netns });
    const qdb = await startQubesDB({ qube: client });
    cleanup.push(() => qdb.stop());
    const db = openQubesDB({ runDir: qdb.runDir });
    cleanup.unshift(() => db.close());
    for (const [k, v] of Object.entries(KEYS)) await db.write(k, v);

    // --- cold apply ------------------------------------------------------------------------
    type Who = 'bundle' | 'dist' | 'upstream' | 'node' | 'load';
    const times: Record<Who, number[]> = { bundle: [], dist: [], upstream: [], node: [], load: [] };
    const order: Who[] = ['bundle', 'upstream', 'dist', 'node', 'load'];
    for (let i = -2; i < ROUNDS; i++) {
      const turn = [...order.slice(((i % order.length) + order.length) % order.length), ...order.slice(0, ((i % order.length) + order.length) % order.length)];
      for (const who of turn) {
        let ms: number;
        if (who === 'node') {
          ms = await timed(client, process.execPath, ['-e', '0'], {}, i >= 0 ? 'node' : undefined);
        } else if (who === 'load') {
          ms = await timed(client, process.execPath, [BUNDLE, 'watch-args', 'eth0'], {}, i >= 0 ? 'load' : undefined);
        } else {
          await unconfigure(client);
          ms = who === 'upstream'
            ? await timed(client, '/bin/sh', [baselineScript, 'eth0'], { QDB_READ: qdbRead }, i >= 0 ? who : undefined)
            : await timed(client, process.execPath, [who === 'bundle' ? BUNDLE : DIST_CLI, 'apply', 'eth0'], {}, i >= 0 ? who : undefined);
          if (!(await configured(client))) throw new Error(`${who}: not configured after apply`);
        }
        if (i >= 0) times[who].push(ms);
      }
    }
    const upName = 'upstream sequence: sh + C qdb-read per key + ip per step';
    const b = pct(times.bundle, 50);
    report('cold apply, bundled one-shot (node bundle/qubes-net-guest.cjs apply eth0): start to configured', 'ms', times.bundle, upName, times.upstream, 'value <= baseline', b <= pct(times.upstream, 50));
    report('cold apply, unbundled dist CLI: start to configured', 'ms', times.dist, upName, times.upstream, 'information only', true);
    report('floor: `node -e 0` start and exit', 'ms', times.node, upName, times.upstream, 'information only', true);
    report('bundle load only (watch-args: no I/O)', 'ms', times.load, '`node -e 0`', times.node, 'information only', true, {
      breakdownMs: { nodeStart: round2(pct(times.node, 50)), bundleLoad: round2(pct(times.load, 50) - pct(times.node, 50)), applyWork: round2(b - pct(times.load, 50)) },
    });

    const cpu = (k: string): number[] => cpuTimes[k] ?? [0];
    const upCpu = 'upstream sequence, CPU time (user + system, children included)';
    report('cold apply, bundled one-shot: CPU time (user + system, children included)', 'ms', cpu('bundle'), upCpu, cpu('upstream'), 'value <= baseline', pct(cpu('bundle'), 50) <= pct(cpu('upstream'), 50));
    report('cold apply, unbundled dist CLI: CPU time', 'ms', cpu('dist'), upCpu, cpu('upstream'), 'information only', true);
    report('floor: `node -e 0` CPU time', 'ms', cpu('node'), upCpu, cpu('upstream'), 'information only', true, {
      breakdownCpuMs: { nodeStart: round2(pct(cpu('node'), 50)), bundleLoad: round2(pct(cpu('load'), 50) - pct(cpu('node'), 50)), applyWork: round2(pct(cpu('bundle'), 50) - pct(cpu('load'), 50)) },
    });

    // --- resident cost: the watcher ------------------------------------------------------
    const args = JSON.parse(spawnSync(process.execPath, [BUNDLE, 'watch-args', 'eth0', '--json', '--cli', BUNDLE], { encoding: 'utf8' }).stdout) as string[];
    const watcher = client.spawn(WATCH, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const sleeper = client.spawn('sleep', ['1000'], { stdio: 'ignore' });
    cleanup.unshift(async () => {
      watcher.kill('SIGTERM');
      sleeper.kill('SIGTERM');
    });
    await new Promise<void>((resolve, reject) => {
      let log = '';
      watcher.stderr!.on('data', (d) => {
        log += d;
        if (log.includes('"msg":"watching"')) resolve();
      });
      watcher.once('exit', (c) => reject(new Error(`the watcher exited ${c}: ${log}`)));
    });
    // One trigger and its run, so the figure is after work, not only after start.
    await db.write('/qubes-primary-dns', '10.139.1.1');
    await new Promise((r) => setTimeout(r, 1500));
    const w = vmRssMB(watcher.pid!);
    const s = vmRssMB(sleeper.pid!);
    report('client qube resident: qubes-net-watch VmRSS (uplink watch-args, after a run)', 'MB', [w], '`sleep` VmRSS', [s], 'value <= 2 MB', w <= 2);
  } finally {
    for (const c of cleanup) await c().catch(() => undefined);
    await session.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();

// Guest agent figures, each next to a baseline measured in the same run, in a namespace qube
// with the real QubesDB daemon:
// - apply: wall time from process start to configured (Node start included), vs upstream's
//   sequence (upstream-setup-ip.sh: a C qdb-read process per key, one ip process per step);
// - run: reaction time from a QubesDB write to the kernel converged (the agent's feedback key
//   is written after its read-back of the kernel state, so this is an upper bound), vs that same
//   upstream sequence started the moment the write is seen;
// - run: RSS of the agent after the reaction rounds, vs an idle `node` process.
// Each iteration of apply starts from an unconfigured uplink, for both contenders.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ipBatch, ipJson } from '@qubes-net/common';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { openQubesDB, type QubesDB, type QubesDBWatch } from '@qubes-net/qubesdb';
import type { startQubesDB as StartQubesDB } from '../../test/helpers/qubesdb.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..', '..');
const CLI = join(repoRoot, 'packages', 'guest-agent', 'dist', 'cli.js');
const SRC = join(repoRoot, 'bench', 'guest-agent');
// The test helper is compiled to test/dist; its relative path differs between this source and
// bench/dist, so it is imported by its runtime location (types from the source).
const { startQubesDB } = (await import(join(repoRoot, 'test', 'dist', 'helpers', 'qubesdb.js'))) as { startQubesDB: typeof StartQubesDB };
const APPLY_ROUNDS = Number(process.env.GUEST_BENCH_APPLY_ROUNDS ?? 20);
const REACTION_ROUNDS = Number(process.env.GUEST_BENCH_REACTION_ROUNDS ?? 40);
/** Extra node options for the agent under test (experiments with V8 flags). */
const NODE_FLAGS = (process.env.GUEST_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);

const KEYS: Record<string, string> = {
  '/qubes-mac': '00:16:3e:5e:6c:00',
  '/qubes-ip': '10.137.0.7',
  '/qubes-netmask': '255.255.255.255',
  '/qubes-gateway': '10.137.0.3',
  '/qubes-primary-dns': '10.139.1.1',
  '/qubes-secondary-dns': '10.139.1.2',
  '/qubes-ip6': 'fd09:24ef:4179::a89:7',
  '/qubes-gateway6': 'fd09:24ef:4179::a89:3',
};

const round2 = (v: number): number => Math.round(v * 100) / 100;
function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

function report(figure: string, unit: string, ours: number[], baselineName: string, base: number[], target: string, met: boolean): void {
  process.stdout.write(JSON.stringify({
    bench: 'guest-agent',
    figure,
    unit,
    value: round2(pct(ours, 50)),
    p95: round2(pct(ours, 95)),
    n: ours.length,
    baseline: { name: baselineName, value: round2(pct(base, 50)), p95: round2(pct(base, 95)), n: base.length },
    target,
    met,
  }) + '\n');
}

/** Runs a command inside the qube; resolves with the wall time in ms (spawn → exit). */
function timed(q: Qube, cmd: string, args: string[], env: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = q.spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (b) => (out += b));
    child.stderr!.on('data', (b) => (out += b));
    child.once('exit', (code) => {
      const ms = performance.now() - t0;
      if (code === 0) resolve(ms);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${out.slice(-2000)}`));
    });
  });
}

async function unconfigure(client: Qube): Promise<void> {
  const res = await ipBatch(['link set dev eth0 down', 'address flush dev eth0 scope global', 'neigh flush dev eth0 nud permanent'], { netns: client.netns, force: true });
  if (!res.ok && !/Nothing to flush/.test(res.stderr)) throw new Error(res.stderr);
  rmSync(client.hostPath('/run/qubes-net/guest-eth0.json'), { force: true });
  writeFileSync(client.hostPath('/etc/resolv.conf'), '');
}

async function configured(client: Qube, ip = '10.137.0.7'): Promise<boolean> {
  const links = await ipJson<any[]>(['address', 'show', 'dev', 'eth0'], { netns: client.netns });
  const routes = await ipJson<any[]>(['route', 'show', 'default'], { netns: client.netns });
  const addrs = (links[0]?.addr_info ?? []).map((a: any) => a.local);
  return addrs.includes(ip) && addrs.includes('fd09:24ef:4179::a89:7') && routes.some((r) => r.gateway === '10.137.0.3') &&
    readFileSync(client.hostPath('/etc/resolv.conf'), 'utf8').includes('nameserver 10.139.1.2');
}

/** The next value of a watched key that satisfies `ok` (reads the key after each event). */
async function nextValue(db: QubesDB, it: AsyncIterator<string>, key: string, ok: (v: string | undefined) => boolean): Promise<void> {
  for (;;) {
    const ev = await it.next();
    if (ev.done) throw new Error('watch ended');
    if (ev.value === key && ok(await db.read(key))) return;
  }
}

function rssOf(pid: number): { rssMB: number; pssMB: number } {
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
  const pss = Number(/Pss:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))![1]) / 1024;
  return { rssMB: rss, pssMB: pss };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('guest-agent bench needs root (network namespaces); skipped\n');
    return;
  }
  const tmp = mkdtempSync(join(tmpdir(), 'qn-guest-bench-'));
  const qdbRead = join(tmp, 'qdb-read');
  const libDir = join(repoRoot, 'native-bindings', 'build');
  const cc = spawnSync('cc', ['-O2', '-Wall', '-I', join(repoRoot, 'native-bindings', 'include'), '-o', qdbRead, join(SRC, 'qdb-read.c'), '-L', libDir, '-lqubesdb', `-Wl,-rpath,${libDir}`], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`building qdb-read failed: ${cc.stderr}`);
  const baselineScript = join(SRC, 'upstream-setup-ip.sh');

  const session = await NetnsSession.create('guest-bench');
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

    // --- apply: start to configured -------------------------------------------------------
    const ours: number[] = [];
    const base: number[] = [];
    const nodeStart: number[] = [];
    const baseEnv = { QDB_READ: qdbRead };
    for (let i = -2; i < APPLY_ROUNDS; i++) {
      // Alternate who goes first, so drift in machine load hits both alike.
      const order = i % 2 === 0 ? ['ours', 'base'] : ['base', 'ours'];
      for (const who of order) {
        await unconfigure(client);
        const ms = who === 'ours'
          ? await timed(client, process.execPath, [...NODE_FLAGS, CLI, 'apply'])
          : await timed(client, '/bin/sh', [baselineScript, 'eth0'], baseEnv);
        if (!(await configured(client))) throw new Error(`${who}: not configured after apply`);
        if (i >= 0) (who === 'ours' ? ours : base).push(ms);
      }
      const n = await timed(client, process.execPath, ['-e', '0']);
      if (i >= 0) nodeStart.push(n);
    }
    report('apply: start to configured (Node start included)', 'ms', ours, 'upstream sequence: sh + C qdb-read per key + ip per step', base, 'value <= baseline', pct(ours, 50) <= pct(base, 50));
    report('reference: `node -e 0` start and exit', 'ms', nodeStart, 'upstream sequence', base, 'information only', true);

    // --- run: reaction time ----------------------------------------------------------------
    await unconfigure(client);
    const agent = client.spawn(process.execPath, [...NODE_FLAGS, CLI, 'run'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const agentExited = new Promise((r) => agent.once('exit', r));
    cleanup.unshift(async () => {
      agent.kill('SIGTERM');
      await agentExited;
    });
    const statusWatch: QubesDBWatch = db.watch(['/qubes-uplink-status']);
    const statusIt = statusWatch[Symbol.asyncIterator]();
    await nextValue(db, statusIt, '/qubes-uplink-status', (v) => v?.includes(' ok eth0 10.137.0.7/32') ?? false);
    const reaction: number[] = [];
    for (let i = 0; i < REACTION_ROUNDS; i++) {
      const ip = i % 2 === 0 ? '10.137.0.8' : '10.137.0.7';
      const t0 = performance.now();
      await db.write('/qubes-ip', ip);
      await nextValue(db, statusIt, '/qubes-uplink-status', (v) => v?.includes(` ok eth0 ${ip}/32`) ?? false);
      reaction.push(performance.now() - t0);
      if (!(await configured(client, ip))) throw new Error(`run: ${ip} not configured`);
    }
    await statusWatch.close();
    const mem = rssOf(agent.pid!);
    agent.kill('SIGTERM');
    await agentExited;
    cleanup.shift();

    // Baseline: the upstream sequence, started as soon as the write is seen.
    const ipWatch = db.watch(['/qubes-ip']);
    const ipIt = ipWatch[Symbol.asyncIterator]();
    const baseReaction: number[] = [];
    for (let i = 0; i < Math.min(REACTION_ROUNDS, 20); i++) {
      const ip = i % 2 === 0 ? '10.137.0.8' : '10.137.0.7';
      const t0 = performance.now();
      await db.write('/qubes-ip', ip);
      await nextValue(db, ipIt, '/qubes-ip', (v) => v === ip);
      await timed(client, '/bin/sh', [baselineScript, 'eth0'], baseEnv);
      baseReaction.push(performance.now() - t0);
    }
    await ipWatch.close();
    report('run: QubesDB write to kernel converged (feedback key seen)', 'ms', reaction, 'watch event + upstream sequence started at once', baseReaction, 'p95 < 50 ms', pct(reaction, 95) < 50);

    // --- run: memory -------------------------------------------------------------------------
    const idle = client.spawn(process.execPath, ['-e', 'process.stdout.write("ready\\n"); setInterval(() => {}, 1e9)'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => idle.stdout!.once('data', r));
    const idleMem = rssOf(idle.pid!);
    idle.kill('SIGTERM');
    report('run: RSS after the reaction rounds', 'MB', [mem.rssMB], 'idle node process', [idleMem.rssMB], 'value < 45 MB', mem.rssMB < 45);
    report('run: PSS (shared pages split) after the reaction rounds', 'MB', [mem.pssMB], 'idle node process', [idleMem.pssMB], 'information only', true);
  } finally {
    for (const c of cleanup) await c().catch(() => undefined);
    await session.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();

// Guest agent figures, each next to a baseline measured in the same run, in a namespace qube
// with the real QubesDB daemon:
// - apply: wall time from process start to configured, vs upstream's sequence
//   (upstream-setup-ip.sh: a C qdb-read process per key, one ip process per step), for both of
//   the paths the udev-started unit can take: `qubes-net-uplink apply eth0` with the daemon up
//   (the request is served by `qubes-net-guest run`; this one must be <= the baseline), and the
//   same client with no daemon, which execs the Node CLI (information). The daemon runs with a
//   60 s debounce here, so that its own reaction to the bench's unconfiguring of eth0 cannot do
//   the work before the measured request; a request always bypasses the debounce. Daemon-up
//   and daemon-down rounds come in alternating blocks, each round also running the baseline,
//   so drifting machine load hits all three alike;
// - run: reaction time from a QubesDB write to the kernel converged (the agent's feedback key
//   is written after its read-back of the kernel state, so this is an upper bound), vs that same
//   upstream sequence started the moment the write is seen;
// - run: RSS of the agent after the reaction rounds, vs an idle `node` process; and after
//   enough rounds for a steady heap, with the V8 flags a unit can set (NODE_OPTIONS allows
//   --max-semi-space-size and --jitless, not --lite-mode, which needs the node command line),
//   each with its own reaction time;
// - why the agent runs programs through kernel/spawn.ts rather than common's run() (execa):
//   a fresh process's first `ip` run and the RSS it adds, for both.
// Each iteration of apply starts from an unconfigured uplink, for every contender.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ipBatch, ipJson } from '@qubes-net/common';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { openQubesDB, type QubesDB, type QubesDBWatch } from '@qubes-net/qubesdb';
import type { startQubesDB as StartQubesDB } from '../../test/helpers/qubesdb.js';
import type { APPENDIX_A as AppendixA } from '../../test/helpers/appendix-a.js';
import { configured, pct, report, round2, unconfigure } from './shared.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..', '..');
const CLI = join(repoRoot, 'packages', 'guest-agent', 'dist', 'cli.js');
const UPLINK = join(repoRoot, 'native-bindings', 'build', 'qubes-net-uplink');
const SRC = join(repoRoot, 'bench', 'guest-agent');
// The qube's eth0 is a veth (no device: driver "none"); on Xen only driver vif is an uplink.
process.env.QUBES_NET_UPLINK_DRIVERS = 'vif,none';
// The test helper is compiled to test/dist; its relative path differs between this source and
// bench/dist, so it is imported by its runtime location (types from the source).
const { startQubesDB } = (await import(join(repoRoot, 'test', 'dist', 'helpers', 'qubesdb.js'))) as { startQubesDB: typeof StartQubesDB };
/** Rounds per apply path (each round also runs the baseline once). */
const APPLY_ROUNDS = Number(process.env.GUEST_BENCH_APPLY_ROUNDS ?? 20);
/** Daemon-up and daemon-down rounds alternate in blocks of this many. */
const APPLY_BLOCK = 5;
const REACTION_ROUNDS = Number(process.env.GUEST_BENCH_REACTION_ROUNDS ?? 40);
/**
 * Reaction rounds of each V8 flag variant in the RSS comparison: enough for the heap to reach
 * its steady size (without flags RSS still grows until ~350 rounds).
 */
const VARIANT_ROUNDS = Number(process.env.GUEST_BENCH_VARIANT_ROUNDS ?? 400);
/** Extra node options for the agent under test in the main figures (experiments with V8 flags). */
const NODE_FLAGS = (process.env.GUEST_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
/**
 * V8 flag sets compared for the run mode's RSS, each on top of the unit's
 * NODE_OPTIONS=--max-old-space-size=48 and given the way a unit would: through NODE_OPTIONS,
 * which Node accepts for --max-semi-space-size and --jitless but not for --lite-mode (that one
 * needs the node command line).
 */
const UNIT_NODE_OPTIONS = '--max-old-space-size=48';
const FLAG_VARIANTS: { name: string; flags: string[]; nodeOptions: string }[] = [
  { name: 'NODE_OPTIONS as the unit has it (--max-old-space-size=48)', flags: [], nodeOptions: UNIT_NODE_OPTIONS },
  { name: 'NODE_OPTIONS + --max-semi-space-size=1', flags: [], nodeOptions: `${UNIT_NODE_OPTIONS} --max-semi-space-size=1` },
  { name: 'NODE_OPTIONS + --jitless --max-semi-space-size=1', flags: [], nodeOptions: `${UNIT_NODE_OPTIONS} --jitless --max-semi-space-size=1` },
  { name: 'NODE_OPTIONS + node --lite-mode', flags: ['--lite-mode'], nodeOptions: UNIT_NODE_OPTIONS },
];

// Appendix A's client keys (test/helpers, compiled to test/dist like qubesdb.js above), less
// /qubes-vm-type, which neither the agent nor the baseline script reads.
const { APPENDIX_A } = (await import(join(repoRoot, 'test', 'dist', 'helpers', 'appendix-a.js'))) as { APPENDIX_A: typeof AppendixA };
const { '/qubes-vm-type': _vmType, ...KEYS }: Record<string, string> = APPENDIX_A;


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


/** The next value of a watched key that satisfies `ok` (reads the key after each event). */
async function nextValue(db: QubesDB, it: AsyncIterator<string>, key: string, ok: (v: string | undefined) => boolean): Promise<void> {
  for (;;) {
    const ev = await it.next();
    if (ev.done) throw new Error('watch ended');
    if (ev.value === key && ok(await db.read(key))) return;
  }
}

function rssOf(pid: number): { rssMB: number; pssMB: number; peakMB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
  const peak = Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
  const pss = Number(/Pss:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))![1]) / 1024;
  return { rssMB: rss, pssMB: pss, peakMB: peak };
}

const CONTROL_SOCKET = '/run/qubes-net/guest.sock';

/** One request line to the agent's control socket; its reply line, parsed. */
function control(path: string, line: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(line + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) {
        sock.destroy();
        resolve(JSON.parse(buf.slice(0, buf.indexOf('\n'))) as Record<string, unknown>);
      }
    });
    sock.on('error', reject);
  });
}

interface RunningAgent {
  child: ChildProcess;
  stop(): Promise<void>;
}

/** `qubes-net-guest run` in the qube; resolves once its first pass is done. */
async function startAgent(client: Qube, flags: string[], args: string[] = [], nodeOptions?: string): Promise<RunningAgent> {
  const env: Record<string, string> = nodeOptions ? { NODE_OPTIONS: nodeOptions } : {};
  const child = client.spawn(process.execPath, [...flags, CLI, 'run', ...args], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const agent = {
    child,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  const socket = client.hostPath(CONTROL_SOCKET);
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`the agent exited with ${child.exitCode}`);
    const passes = existsSync(socket) ? await control(socket, '{"op":"status"}').then((r) => r.passes as number, () => 0) : 0;
    if (passes >= 1) return agent;
    if (i > 2000) {
      await agent.stop();
      throw new Error('the agent did not finish its first pass');
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Reaction rounds: write /qubes-ip, wait for the agent's feedback naming it; the times in ms. */
async function reactionRounds(db: QubesDB, client: Qube, rounds: number): Promise<number[]> {
  const statusWatch: QubesDBWatch = db.watch(['/qubes-uplink-status']);
  const it = statusWatch[Symbol.asyncIterator]();
  const times: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const ip = i % 2 === 0 ? '10.137.0.8' : '10.137.0.7';
      const t0 = performance.now();
      await db.write('/qubes-ip', ip);
      await nextValue(db, it, '/qubes-uplink-status', (v) => v?.includes(` ok eth0 ${ip}/32`) ?? false);
      times.push(performance.now() - t0);
      if (!(await configured(client, ip))) throw new Error(`run: ${ip} not configured`);
    }
  } finally {
    await statusWatch.close();
  }
  return times;
}

/** RSS and PSS of an idle `node` with these flags, in the qube. */
async function idleNode(client: Qube, flags: string[], nodeOptions?: string): Promise<{ rssMB: number; pssMB: number }> {
  const idle = client.spawn(process.execPath, [...flags, '-e', 'process.stdout.write("ready\\n"); setInterval(() => {}, 1e9)'], { env: (nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}) as Record<string, string>, stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    await new Promise((r) => idle.stdout!.once('data', r));
    return rssOf(idle.pid!);
  } finally {
    idle.kill('SIGTERM');
  }
}

/**
 * A fresh Node process runs `ip -j link show` once through `how` and reports the time from
 * before the import to the result, and the RSS that added: kernel/spawn.ts vs common's run().
 */
function firstProgramRun(how: 'spawn' | 'run'): { ms: number; rssMB: number } {
  const module = how === 'spawn'
    ? pathToFileURL(join(repoRoot, 'packages', 'guest-agent', 'dist', 'kernel', 'spawn.js')).href
    : pathToFileURL(join(repoRoot, 'packages', 'common', 'dist', 'exec.js')).href;
  const call = how === 'spawn' ? "m.runProgram('ip', ['-j', 'link', 'show'])" : "m.run('ip', ['-j', 'link', 'show'])";
  const script = [
    "import { readFileSync } from 'node:fs';",
    "const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;",
    'const r0 = rss(); const t0 = performance.now();',
    `const m = await import(${JSON.stringify(module)});`,
    `await ${call};`,
    'process.stdout.write(JSON.stringify({ ms: performance.now() - t0, rssMB: rss() - r0 }));',
  ].join('\n');
  const res = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(`${how}: ${res.stderr}`);
  return JSON.parse(res.stdout) as { ms: number; rssMB: number };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('guest-agent bench needs root (network namespaces); skipped\n');
    return;
  }
  if (!existsSync(UPLINK)) throw new Error(`${UPLINK} is missing: run make -C native-bindings`);
  const tmp = mkdtempSync(join(tmpdir(), 'qn-guest-bench-'));
  const qdbRead = join(tmp, 'qdb-read');
  const libDir = join(repoRoot, 'native-bindings', 'build');
  const cc = spawnSync('cc', ['-O2', '-Wall', '-I', join(repoRoot, 'native-bindings', 'include'), '-o', qdbRead, join(repoRoot, 'bench', 'common', 'qdb-read.c'), '-L', libDir, '-lqubesdb', `-Wl,-rpath,${libDir}`], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`building qdb-read failed: ${cc.stderr}`);
  const baselineScript = join(SRC, 'upstream-setup-ip.sh');
  // What qubes-net-uplink execs without a daemon: the CLI, as an executable (the package's
  // /usr/bin/qubes-net-guest is a wrapper that runs node on cli.js the same way).
  const cliExe = join(tmp, 'qubes-net-guest.mjs');
  writeFileSync(cliExe, `#!${process.execPath}\nawait import(${JSON.stringify(pathToFileURL(CLI).href)});\n`);
  chmodSync(cliExe, 0o755);

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

    // --- apply: start to configured, both paths of qubes-net-uplink ------------------------
    const viaDaemon: number[] = [];
    const cold: number[] = [];
    const base: number[] = [];
    const nodeStart: number[] = [];
    const baseEnv = { QDB_READ: qdbRead };
    const uplinkEnv = { QUBES_NET_GUEST_CLI: cliExe };
    let agent: RunningAgent | undefined;
    cleanup.unshift(() => agent?.stop() ?? Promise.resolve());
    for (let i = -2; i < 2 * APPLY_ROUNDS; i++) {
      // Two warm-up rounds with the daemon, then blocks: APPLY_BLOCK up, APPLY_BLOCK down, …
      const daemonUp = i < 0 || Math.floor(i / APPLY_BLOCK) % 2 === 0;
      if (daemonUp && !agent) agent = await startAgent(client, NODE_FLAGS, ['--debounce-ms', '60000']);
      if (!daemonUp && agent) {
        await agent.stop();
        agent = undefined;
      }
      // Alternate who goes first, so drift in machine load hits both alike.
      for (const who of i % 2 === 0 ? ['ours', 'base'] : ['base', 'ours']) {
        await unconfigure(client);
        const ms = who === 'ours'
          ? await timed(client, UPLINK, ['apply', 'eth0'], uplinkEnv)
          : await timed(client, '/bin/sh', [baselineScript, 'eth0'], baseEnv);
        if (!(await configured(client))) throw new Error(`${who} (daemon ${daemonUp ? 'up' : 'down'}): not configured after apply`);
        if (i < 0) continue;
        if (who === 'base') base.push(ms);
        else (daemonUp ? viaDaemon : cold).push(ms);
      }
      if (i >= 0 && i % 2 === 0) nodeStart.push(await timed(client, process.execPath, ['-e', '0']));
    }
    await agent?.stop();
    agent = undefined;
    const baseName = 'upstream sequence: sh + C qdb-read per key + ip per step';
    report('apply via qubes-net-uplink, daemon up: start to configured', 'ms', viaDaemon, baseName, base, 'value <= baseline', pct(viaDaemon, 50) <= pct(base, 50));
    report('apply via qubes-net-uplink, no daemon (execs the Node CLI): start to configured', 'ms', cold, baseName, base, 'information only', true);
    report('reference: `node -e 0` start and exit', 'ms', nodeStart, 'upstream sequence', base, 'information only', true);

    // --- run: reaction time ----------------------------------------------------------------
    await unconfigure(client);
    agent = await startAgent(client, NODE_FLAGS);
    const reaction = await reactionRounds(db, client, REACTION_ROUNDS);
    const mem = rssOf(agent.child.pid!);
    await agent.stop();
    agent = undefined;

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
    const idleMem = await idleNode(client, []);
    report('run: RSS after the reaction rounds', 'MB', [mem.rssMB], 'idle node process', [idleMem.rssMB], 'value < 45 MB', mem.rssMB < 45, { nodeFlags: NODE_FLAGS.join(' ') });
    report('run: PSS (shared pages split) after the reaction rounds', 'MB', [mem.pssMB], 'idle node process', [idleMem.pssMB], 'information only', true);

    // Steady state with each flag set a unit could give: RSS vs an idle node with the same
    // flags, and the reaction time, which the flags must not hurt.
    for (const v of FLAG_VARIANTS) {
      agent = await startAgent(client, v.flags, [], v.nodeOptions);
      const times = await reactionRounds(db, client, VARIANT_ROUNDS);
      const m = rssOf(agent.child.pid!);
      await agent.stop();
      agent = undefined;
      const idle = await idleNode(client, v.flags, v.nodeOptions);
      report(`run with ${v.name}: RSS after ${VARIANT_ROUNDS} reaction rounds`, 'MB', [m.rssMB], `idle node, same flags`, [idle.rssMB], 'value < 45 MB', m.rssMB < 45, { peakMB: round2(m.peakMB), reactionMs: { value: round2(pct(times, 50)), p95: round2(pct(times, 95)) } });
    }

    // --- kernel/spawn.ts vs common's run() ---------------------------------------------------
    const spawnRuns: { ms: number; rssMB: number }[] = [];
    const execaRuns: { ms: number; rssMB: number }[] = [];
    for (let i = 0; i < 10; i++) {
      spawnRuns.push(firstProgramRun('spawn'));
      execaRuns.push(firstProgramRun('run'));
    }
    report('first program run in a fresh process: kernel/spawn.ts (import + ip -j link show)', 'ms', spawnRuns.map((r) => r.ms), "common's run() (execa)", execaRuns.map((r) => r.ms), 'value < baseline (else use run())', pct(spawnRuns.map((r) => r.ms), 50) < pct(execaRuns.map((r) => r.ms), 50));
    report('RSS added by that first program run: kernel/spawn.ts', 'MB', spawnRuns.map((r) => r.rssMB), "common's run() (execa)", execaRuns.map((r) => r.rssMB), 'value < baseline (else use run())', pct(spawnRuns.map((r) => r.rssMB), 50) < pct(execaRuns.map((r) => r.rssMB), 50));
  } finally {
    for (const c of cleanup) await c().catch(() => undefined);
    await session.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();

// QubesDB through our client stack (libqubesdb + koffi), against the daemon in its own
// process, each figure next to a baseline measured in the same run:
// - FFI READ round trips/s from one client, vs one `qubes-net-qdb read` process per read
//   (what a shell script does);
// - watch latency, write started in one client process → event delivered to a watch in
//   another, median and p99, vs a one-way message between the same two processes over a
//   plain Unix socket, and vs a native C watcher blocking in qdb_read_watch (the cost of
//   koffi and our poll thread);
// - daemon RSS with 10,000 keys and 256 FFI clients connected, vs the idle daemon.
// Targets: ≥ 20,000 reads/s, watch p99 < 2 ms, RSS < 60 MB.
//
// The same file is the writer process of the latency figure (`--writer RUN_DIR SOCKET`).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, mkdtempSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { openQubesDB, setQubesDBLogger, silentClientLogger, type QubesDB } from '@qubes-net/qubesdb';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = join(repoRoot, 'packages', 'qubesdb', 'dist', 'cli.js');
const DAEMON_BIN = join(repoRoot, 'packages', 'qubesdb', 'dist', 'daemon-main-bin.js');
const SELF = fileURLToPath(import.meta.url);

setQubesDBLogger(silentClientLogger);

const round = (v: number): number => Math.round(v * 1000) / 1000;

function report(figure: string, value: number, unit: string, baseline: { name: string; value: number }, target: string, ok: boolean, extra: Record<string, unknown> = {}): void {
  process.stdout.write(
    JSON.stringify({
      bench: 'qubesdb-ffi',
      figure,
      value: round(value),
      unit,
      baseline: { ...baseline, value: round(baseline.value) },
      ratio: round(value / baseline.value),
      target,
      ok,
      ...extra,
    }) + '\n',
  );
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** Our daemon in its own process, on a fresh run dir; resolves once it reports ready. */
async function startDaemon(): Promise<{ runDir: string; pid: number; stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-bench-'));
  const runDir = join(dir, 'run');
  const child: ChildProcess = spawn(process.execPath, [DAEMON_BIN, '--run-dir', runDir, '--ready-fd', '3'], { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    child.stdio[3]!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`daemon exited (${code}) before ready`)));
  });
  return {
    runDir,
    pid: child.pid!,
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---- the writer process -------------------------------------------------------------------

/**
 * Writer side of the latency figure: for each line "w" on stdin, note the time and write it as
 * the value of /bench/lat; for each line "s", send the time over the plain socket instead.
 * CLOCK_MONOTONIC (process.hrtime) is shared by every process on the machine.
 */
async function writer(runDir: string, socketPath: string): Promise<void> {
  const db = openQubesDB({ runDir });
  const sock = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ path: socketPath }, () => resolve(s));
    s.once('error', reject);
  });
  sock.setNoDelay?.(true);
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'w') await db.write('/bench/lat', process.hrtime.bigint().toString());
    else if (line === 's') sock.write(`${process.hrtime.bigint()}\n`);
    else break;
  }
  sock.end();
  await db.close();
}

// ---- figures -------------------------------------------------------------------------------

async function readRate(db: QubesDB, ms: number): Promise<number> {
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    for (let i = 0; i < 100; i++) await db.read('/bench/key');
    n += 100;
  }
  return n / ((performance.now() - start) / 1000);
}

function cliReadRate(runDir: string, count: number): number {
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const r = spawnSync(process.execPath, [CLI, 'read', '--run-dir', runDir, '/bench/key'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`qubes-net-qdb read failed: ${r.stderr}`);
  }
  return count / ((performance.now() - start) / 1000);
}

interface Latencies {
  watch: number[];
  socket: number[];
  native: number[];
}

/** Builds native-bindings/test/qdb-watch-latency.c against our library, into dir. */
function buildNativeWatcher(dir: string): string {
  const nb = join(repoRoot, 'native-bindings');
  const exe = join(dir, 'qdb-watch-latency');
  const r = spawnSync(process.env.CC ?? 'cc', ['-O2', '-I', join(nb, 'include'), '-o', exe, join(nb, 'test', 'qdb-watch-latency.c'), '-L', join(nb, 'build'), '-lqubesdb', `-Wl,-rpath,${join(nb, 'build')}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building the native watcher failed: ${r.stderr}`);
  return exe;
}

async function latencies(db: QubesDB, runDir: string, samples: number): Promise<Latencies> {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-bench-'));
  const socketPath = join(dir, 'plain.sock');
  let plain: Socket | undefined;
  const server = createServer((s) => (plain = s));
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  const child = spawn(process.execPath, [SELF, '--writer', runDir, socketPath], { stdio: ['pipe', 'inherit', 'inherit'] });
  // Baseline watcher: a native client in its own process, blocking in qdb_read_watch. It sees
  // the same writes as our watch, so both figures come from the same moments of machine load.
  const native = spawn(buildNativeWatcher(dir), [String(samples + 50)], { env: { ...process.env, QUBESDB_RUN_DIR: runDir }, stdio: ['ignore', 'pipe', 'inherit'] });
  const nativeLines = createInterface({ input: native.stdout })[Symbol.asyncIterator]();
  const watch = db.watch(['/bench/lat']);
  const events = watch[Symbol.asyncIterator]();
  const out: Latencies = { watch: [], socket: [], native: [] };
  try {
    if ((await nativeLines.next()).value !== 'ready') throw new Error('native watcher did not start');
    while (!plain) await new Promise((r) => setTimeout(r, 10));
    const lines = createInterface({ input: plain })[Symbol.asyncIterator]();
    // Watch: from the writer's clock reading before its write to the event arriving here.
    for (let i = 0; i < samples + 50; i++) {
      child.stdin.write('w\n');
      const [ours, theirs] = await Promise.all([
        events.next().then(async (ev) => {
          const arrived = process.hrtime.bigint();
          if (ev.done) throw new Error('watch ended');
          return Number(arrived - BigInt((await db.read('/bench/lat'))!)) / 1e6;
        }),
        nativeLines.next().then((line) => {
          if (line.done) throw new Error('native watcher ended early');
          return Number(line.value);
        }),
      ]);
      if (i >= 50) {
        out.watch.push(ours);
        out.native.push(theirs);
      }
    }
    // Baseline: the same two processes, one line over a plain Unix socket.
    for (let i = 0; i < samples + 50; i++) {
      child.stdin.write('s\n');
      const line = await lines.next();
      const arrived = process.hrtime.bigint();
      if (i >= 50) out.socket.push(Number(arrived - BigInt(line.value as string)) / 1e6);
    }
    await new Promise((r) => (native.exitCode !== null ? r(undefined) : native.once('exit', r)));
  } finally {
    child.stdin.end('q\n');
    await new Promise((r) => child.once('exit', r));
    await watch.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

async function main(): Promise<void> {
  const daemon = await startDaemon();
  try {
    const idleRss = rssKb(daemon.pid);
    const db = openQubesDB({ runDir: daemon.runDir });
    await db.write('/bench/key', '10.137.0.7');

    // Reads: warm up, then measure; the baseline spawns a CLI process per read.
    await readRate(db, 300);
    const ffiRate = await readRate(db, 2000);
    const cliRate = cliReadRate(daemon.runDir, 20);
    report('ffi_read_round_trips', ffiRate, 'reads/s', { name: 'qubes-net-qdb read process per read', value: cliRate }, '>= 20000', ffiRate >= 20000);

    // Watch latency across processes.
    const lat = await latencies(db, daemon.runDir, 2000);
    const w = lat.watch.sort((a, b) => a - b);
    const s = lat.socket.sort((a, b) => a - b);
    const c = lat.native.sort((a, b) => a - b);
    const nativeAt = (p: number) => ({ native_c_watcher_ms: round(percentile(c, p)) });
    report('watch_latency_median', percentile(w, 50), 'ms', { name: 'plain unix socket one-way, median', value: percentile(s, 50) }, '', true, { samples: w.length, ...nativeAt(50) });
    report('watch_latency_p99', percentile(w, 99), 'ms', { name: 'plain unix socket one-way, p99', value: percentile(s, 99) }, '< 2', percentile(w, 99) < 2, { samples: w.length, ...nativeAt(99) });

    // RSS: 10,000 keys, 256 clients (this one plus 255 more).
    for (let i = 0; i < 10_000; i++) await db.write(`/bench/keys/k${String(i).padStart(5, '0')}`, `value-${i}-10.137.${i % 256}.${i % 254}`);
    const clients = Array.from({ length: 255 }, () => openQubesDB({ runDir: daemon.runDir }));
    await Promise.all(clients.map((c) => c.read('/bench/key')));
    const fullRss = rssKb(daemon.pid);
    report('daemon_rss_10k_keys_256_clients', fullRss / 1024, 'MB', { name: 'idle daemon', value: idleRss / 1024 }, '< 60', fullRss / 1024 < 60);
    await Promise.all(clients.map((c) => c.close()));
    await db.close();
  } finally {
    await daemon.stop();
  }
}

if (process.argv[2] === '--writer') await writer(process.argv[3]!, process.argv[4]!);
else await main();

// QubesDB daemon figures, each next to a baseline measured in the same run:
// - READ round trips/s from one client, vs the same client against a bare echo server process;
// - watch-event delivery latency (write sent → event received at another client), vs one echo round trip;
// - daemon RSS with 10,000 keys and 256 clients, vs the idle daemon;
// - floods (issue 13.4), on this daemon and on the daemon before the limits (built from git into
//   /tmp, same run): 5 writes while one read-only client holds (or tried to register) 200,000
//   watches, vs the same 5 writes with no flood on that daemon; and whether an agent on the
//   read-write socket is served after 256 idle read-only connections.
// The daemon runs as its own process, as in production.
// `--before REF` picks the commit of the "before" daemon (default: main before the limits).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HEADER_SIZE, MessageParser, MessageType, encodeMessage } from '@qubes-net/qubesdb';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const DAEMON_BIN = join(repoRoot, 'packages', 'qubesdb', 'dist', 'daemon-main-bin.js');

function report(figure: string, value: number, unit: string, baseline: { name: string; value: number }, extra: Record<string, unknown> = {}): void {
  process.stdout.write(
    JSON.stringify({ bench: 'qubesdb-daemon', figure, value: round(value), unit, baseline: { ...baseline, value: round(baseline.value) }, ...extra }) + '\n',
  );
}
const round = (v: number): number => Math.round(v * 100) / 100;

async function startProcess(args: string[], readyOn: 'fd3' | 'stdout'): Promise<ChildProcess> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] });
  const stream = readyOn === 'fd3' ? child.stdio[3]! : child.stdout!;
  if (readyOn === 'fd3') child.stdout!.resume();
  await new Promise<void>((resolve, reject) => {
    stream.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`exited ${code}`)));
  });
  return child;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

function open(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ path }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Sends `request`, waits for `replyBytes` bytes back, repeats for `ms`; returns round trips/s. */
async function roundTrips(sock: Socket, request: Buffer, replyBytes: number, ms: number): Promise<number> {
  return new Promise((resolve) => {
    let count = 0;
    let got = 0;
    const start = performance.now();
    const onData = (chunk: Buffer): void => {
      got += chunk.length;
      while (got >= replyBytes) {
        got -= replyBytes;
        count++;
        if (performance.now() - start >= ms) {
          sock.off('data', onData);
          resolve(count / ((performance.now() - start) / 1000));
          return;
        }
        sock.write(request);
      }
    };
    sock.on('data', onData);
    sock.write(request);
  });
}

async function rtLatencies(sock: Socket, request: Buffer, replyBytes: number, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      let got = 0;
      const onData = (c: Buffer): void => {
        got += c.length;
        if (got >= replyBytes) {
          sock.off('data', onData);
          resolve();
        }
      };
      sock.on('data', onData);
      sock.write(request);
    });
    out.push((performance.now() - t0) * 1000);
  }
  return out;
}

const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-bench-'));
  const echoPath = join(dir, 'echo.sock');
  const echo = await startProcess(
    ['-e', `require('net').createServer((s) => s.on('data', (d) => s.write(d))).listen(${JSON.stringify(echoPath)}, () => console.log('ready'))`],
    'stdout',
  );
  const daemon = await startProcess([DAEMON_BIN, '--run-dir', join(dir, 'run'), '--ready-fd', '3'], 'fd3');
  const sockPath = join(dir, 'run', 'qubesdb.sock');
  try {
    const idleRss = rssMiB(daemon.pid!);
    const value = Buffer.from('10.137.0.7');
    const c = await open(sockPath);
    // Set one key.
    await roundTrips(c, encodeMessage(MessageType.Write, '/qubes-ip', value), HEADER_SIZE, 0);
    const readReq = encodeMessage(MessageType.Read, '/qubes-ip');
    const e = await open(echoPath);
    // Warm up both, then measure, echo first then daemon, then once more each; keep the best.
    await roundTrips(e, readReq, readReq.length, 300);
    await roundTrips(c, readReq, HEADER_SIZE + value.length, 300);
    let echoRate = 0;
    let readRate = 0;
    for (let i = 0; i < 2; i++) {
      echoRate = Math.max(echoRate, await roundTrips(e, readReq, readReq.length, 1500));
      readRate = Math.max(readRate, await roundTrips(c, readReq, HEADER_SIZE + value.length, 1500));
    }
    report('read_round_trips_per_s', readRate, '1/s', { name: 'echo_server_round_trips_per_s', value: echoRate }, { target: 20000 });

    // Watch delivery: writer sends WRITE, watcher's event arrives.
    const watcher = await open(sockPath);
    await roundTrips(watcher, encodeMessage(MessageType.Watch, '/bench/w'), HEADER_SIZE, 0);
    const writeReq = encodeMessage(MessageType.Write, '/bench/w', Buffer.from('x'));
    const lat: number[] = [];
    const parser = new MessageParser({ accept: 'responses' });
    c.on('data', () => {}); // replies to the writer are drained and ignored
    for (let i = 0; i < 3000; i++) {
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        const onData = (chunk: Buffer): void => {
          parser.feed(chunk);
          for (let m = parser.next(); m; m = parser.next()) {
            if (m.kind === 'message' && m.type === MessageType.RespWatch) {
              watcher.off('data', onData);
              resolve();
            }
          }
        };
        watcher.on('data', onData);
        c.write(writeReq);
      });
      lat.push((performance.now() - t0) * 1000);
    }
    c.removeAllListeners('data');
    const echoLat = await rtLatencies(e, readReq, readReq.length, 3000);
    const warm = lat.slice(500);
    report('watch_event_latency_median_us', pct(warm, 50), 'us', { name: 'echo_round_trip_median_us', value: pct(echoLat.slice(500), 50) }, { p99: round(pct(warm, 99)), target: '< 1000' });

    // Memory: 10,000 keys (values ~ 40 bytes), 256 clients each with a watch.
    const loader = await open(sockPath);
    const batch: Buffer[] = [];
    for (let i = 0; i < 10_000; i++) batch.push(encodeMessage(MessageType.Write, `/mem/qube-${i}/qubes-ip`, Buffer.from(`10.137.${(i >> 8) & 255}.${i & 255} some text`)));
    await new Promise<void>((resolve) => {
      let got = 0;
      loader.on('data', (d) => {
        got += d.length;
        if (got >= 10_000 * HEADER_SIZE) resolve();
      });
      loader.write(Buffer.concat(batch));
    });
    const clients: Socket[] = [loader, c, watcher];
    while (clients.length < 256) {
      const s = await open(sockPath);
      clients.push(s);
    }
    await Promise.all(clients.slice(3).map((s, i) => roundTrips(s, encodeMessage(MessageType.Watch, `/mem/qube-${i}/`), HEADER_SIZE, 0)));
    // Let a MULTIREAD of everything through one client, as a VM sync would.
    await roundTrips(clients[10]!, encodeMessage(MessageType.Multiread, ''), 0, 0);
    const loadedRss = rssMiB(daemon.pid!);
    report('rss_mib_10k_keys_256_clients', loadedRss, 'MiB', { name: 'idle_daemon_rss_mib', value: idleRss }, { target: '< 60' });
    for (const s of clients) s.destroy();
    e.destroy();
  } finally {
    await stopProcess(daemon);
    await stopProcess(echo);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** main as of the start of the limits work (issue 13.4): the daemon without them. */
const BEFORE_LIMITS_COMMIT = 'ba4b65b';

/** Builds the daemon of `ref` into a temp dir (git archive + tsc); returns its bin and the dir. */
function buildDaemonAt(ref: string): { bin: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-before-'));
  const archive = execFileSync('git', ['-C', repoRoot, 'archive', '--format=tar', ref, 'packages/qubesdb/src', 'packages/qubesdb/package.json'], { maxBuffer: 64 * 1024 * 1024 });
  execFileSync('tar', ['-x', '-C', dir], { input: archive });
  // Its imports (pino, @qubes-net/common) resolve through this checkout's node_modules.
  symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));
  const pkg = join(dir, 'packages', 'qubesdb');
  execFileSync(process.execPath, [
    join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'),
    '--outDir', join(pkg, 'dist'), '--rootDir', join(pkg, 'src'), '--target', 'ES2022', '--module', 'NodeNext', '--moduleResolution', 'NodeNext',
    '--types', 'node', '--skipLibCheck', '--strict', join(pkg, 'src', 'daemon-main-bin.ts'),
  ], { stdio: 'inherit' });
  return { bin: join(pkg, 'dist', 'daemon-main-bin.js'), dir };
}

/** Sends one request and waits for one 72-byte reply (writes, watches: no payload back). */
function oneReply(sock: Socket, request: Buffer): Promise<void> {
  return roundTrips(sock, request, HEADER_SIZE, 0).then(() => undefined);
}

/** Best of `reps` timings of 5 sequential writes of `key` (ms). */
async function fiveWrites(writer: Socket, key: string, reps: number): Promise<number> {
  const req = encodeMessage(MessageType.Write, key, Buffer.from('v'));
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) await oneReply(writer, req);
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

/** A client that reads and counts whatever the daemon sends it. */
function counting(sock: Socket): { bytes: () => number } {
  let got = 0;
  sock.on('data', (d: Buffer) => (got += d.length));
  return { bytes: () => got };
}

async function waitUntil(check: () => boolean, guardMs = 120_000): Promise<void> {
  const until = performance.now() + guardMs;
  while (!check()) {
    if (performance.now() > until) throw new Error('bench: condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface FloodFigures {
  quietMs: number;
  sameKeyMs: number;
  dirsMs: number;
  agentServed: boolean;
}

/** The floods against one daemon binary. */
async function floods(bin: string): Promise<FloodFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-flood-'));
  const daemon = await startProcess([bin, '--run-dir', join(dir, 'run'), '--ready-fd', '3'], 'fd3');
  const rw = join(dir, 'run', 'qubesdb.sock');
  const ro = join(dir, 'run', 'qubesdb.ro.sock');
  const open_: Socket[] = [];
  const openOne = async (path: string): Promise<Socket> => {
    const s = await open(path);
    s.on('error', () => {});
    open_.push(s);
    return s;
  };
  try {
    const writer = await openOne(rw);
    await fiveWrites(writer, '/flood/k', 3); // warm-up
    const quietMs = await fiveWrites(writer, '/flood/k', 5);
    const N = 200_000;

    // 200,000 WATCHes of the one key the writer writes: each write fires one event per registration.
    const same = await openOne(ro);
    const sameIn = counting(same);
    same.write(Buffer.concat(Array.from({ length: N }, () => encodeMessage(MessageType.Watch, '/flood/k'))));
    await waitUntil(() => sameIn.bytes() >= N * HEADER_SIZE);
    const sameKeyMs = await fiveWrites(writer, '/flood/k', 1);
    same.destroy();

    // 200,000 directory watches on distinct paths, none matching what the writer writes.
    const dirs = await openOne(ro);
    const dirsIn = counting(dirs);
    dirs.write(Buffer.concat(Array.from({ length: N }, (_, i) => encodeMessage(MessageType.Watch, `/flood/d${i}/`))));
    await waitUntil(() => dirsIn.bytes() >= N * HEADER_SIZE);
    const dirsMs = await fiveWrites(writer, '/flood/k', 5);
    dirs.destroy();
    writer.destroy();
    await new Promise((r) => setTimeout(r, 200)); // the daemon sees the closes

    // 256 idle read-only connections, then an agent on the read-write socket.
    // Each one answers a READ (or is closed) before the agent connects: the two sockets are
    // accepted independently, so without this the agent could slip in first.
    const idle: Socket[] = [];
    for (let i = 0; i < 256; i++) idle.push(await openOne(ro));
    await Promise.all(idle.map((s) => Promise.race([
      roundTrips(s, encodeMessage(MessageType.Read, '/none'), HEADER_SIZE, 0),
      new Promise((resolve) => s.once('close', resolve)),
    ])));
    const agent = await openOne(rw);
    const agentServed = await Promise.race([
      oneReply(agent, encodeMessage(MessageType.Write, '/qubes-ip', Buffer.from('10.137.0.5'))).then(() => true),
      new Promise<boolean>((resolve) => agent.once('close', () => resolve(false))),
    ]);
    return { quietMs, sameKeyMs, dirsMs, agentServed };
  } finally {
    for (const s of open_) s.destroy();
    await stopProcess(daemon);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function floodBench(): Promise<void> {
  // A bench that hangs tells nothing: give up loudly instead.
  setTimeout(() => {
    process.stderr.write('bench: flood figures not done after 240 s\n');
    process.exit(1);
  }, 240_000).unref();
  const i = process.argv.indexOf('--before');
  const ref = i !== -1 ? process.argv[i + 1]! : BEFORE_LIMITS_COMMIT;
  const before = buildDaemonAt(ref);
  try {
    const b = await floods(before.bin);
    const a = await floods(DAEMON_BIN);
    const extra = (f: FloodFigures, name: string): Record<string, unknown> => ({ daemon: name, quiet_ms: round(f.quietMs) });
    for (const [name, f] of [[`before(${ref})`, b], ['after', a]] as const) {
      report('five_writes_200k_same_key_watches_ratio', f.sameKeyMs / f.quietMs, 'x', { name: 'five_writes_no_flood_ms', value: f.quietMs }, { ...extra(f, name), ms: round(f.sameKeyMs) });
      report('five_writes_200k_dir_watches_ratio', f.dirsMs / f.quietMs, 'x', { name: 'five_writes_no_flood_ms', value: f.quietMs }, { ...extra(f, name), ms: round(f.dirsMs) });
      report('agent_served_after_256_idle_ro', f.agentServed ? 1 : 0, 'bool', { name: 'before_limits_daemon', value: b.agentServed ? 1 : 0 }, { daemon: name });
    }
  } finally {
    rmSync(before.dir, { recursive: true, force: true });
  }
}

if (process.argv.includes('--floods-only')) await floodBench();
else {
  await main();
  await floodBench();
}

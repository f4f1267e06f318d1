// Starts our QubesDB daemon for a test, as a separate process (a synchronous FFI client must
// never share a process with the daemon it blocks on). Readiness comes through --ready-fd 3;
// the daemon's log is kept (bounded) and shown if it fails to start. Every daemon still
// running when the test process exits is killed.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

/** test/dist/helpers → repository root. */
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const DAEMON_BIN = join(repoRoot, 'packages', 'qubesdb', 'dist', 'daemon-main-bin.js');

/**
 * What startQubesDB needs from a qube of @qubes-net/netns: run a process inside its network
 * and mount namespace, and map a path inside it to the host.
 */
export interface QubeLike {
  readonly name?: string;
  spawn(cmd: string, args: readonly string[], opts?: SpawnOptions): ChildProcess;
  hostPath(path: string): string;
}

export interface StartQubesDBOptions {
  /** Socket directory (host path). Default: a fresh temp dir, removed on stop(). */
  runDir?: string;
  /** Serve qubesdb.NAME.sock / qubesdb.NAME.ro.sock (dom0's per-qube databases). */
  name?: string;
  /** Run the daemon inside this qube with the default run dir (/var/run/qubes inside it). */
  qube?: QubeLike;
  /** --rw-socket-perms, octal string such as "0660". */
  rwSocketPerms?: string;
}

export interface RunningQubesDB {
  /** Host path of the socket directory (what QUBESDB_RUN_DIR should be set to). */
  runDir: string;
  socketPath: string;
  roSocketPath: string;
  /** pid of the current daemon process (changes on restart). */
  readonly pid: number;
  /** SIGTERM, wait for the exit; removes the temp run dir if the helper made it. */
  stop(): Promise<void>;
  /** Stops and starts a fresh daemon on the same sockets (its database starts empty, like upstream). */
  restart(): Promise<void>;
  /** The daemon's recent log lines (pino JSON), for failure messages. */
  log(): string;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
}

/** Keeps the last `max` characters of a stream (so a chatty daemon never blocks on a full pipe). */
function tail(stream: Readable | null | undefined, max = 64 * 1024): () => string {
  let text = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (s: string) => {
    text += s;
    if (text.length > max) text = text.slice(text.length - max);
  });
  return () => text;
}

interface Spawned {
  child: ChildProcess;
  log: () => string;
}

async function spawnDaemon(opts: StartQubesDBOptions, runDir: string): Promise<Spawned> {
  const args = [DAEMON_BIN, '--ready-fd', '3'];
  if (!opts.qube) args.push('--run-dir', runDir);
  if (opts.name) args.push('--name', opts.name);
  if (opts.rwSocketPerms) args.push('--rw-socket-perms', opts.rwSocketPerms);
  const spawnOpts: SpawnOptions = { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] };
  const child = opts.qube ? opts.qube.spawn(process.execPath, args, spawnOpts) : spawn(process.execPath, args, spawnOpts);
  running.add(child);
  installExitHook();
  child.once('exit', () => running.delete(child));
  const out = tail(child.stdout);
  const err = tail(child.stderr);
  const log = (): string => out() + err();
  const readyPipe = child.stdio[3] as Readable | null;
  if (!readyPipe) throw new Error('daemon spawned without a readiness pipe (fd 3)');
  await new Promise<void>((resolve, reject) => {
    let got = '';
    const onExit = (code: number | null, signal: string | null): void => {
      clearTimeout(timer);
      // Let the pipes deliver the daemon's last words before quoting them.
      setImmediate(() => reject(new Error(`qubesdb daemon exited before ready (code ${code}, signal ${signal}):\n${log()}`)));
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`qubesdb daemon not ready after 20 s:\n${log()}`));
    }, 20_000);
    readyPipe.setEncoding('utf8');
    readyPipe.on('data', (s: string) => {
      got += s;
      if (got.includes('ready\n')) {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve();
      }
    });
    child.once('exit', onExit);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  return { child, log };
}

async function stopDaemon(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

export async function startQubesDB(opts: StartQubesDBOptions = {}): Promise<RunningQubesDB> {
  let madeDir: string | undefined;
  let runDir: string;
  if (opts.qube) {
    runDir = opts.qube.hostPath('/run/qubes');
  } else if (opts.runDir) {
    runDir = opts.runDir;
  } else {
    madeDir = mkdtempSync(join(tmpdir(), 'qnet-qdb-'));
    runDir = join(madeDir, 'run');
  }
  const base = opts.name ? `qubesdb.${opts.name}` : 'qubesdb';
  let current: Spawned;
  try {
    current = await spawnDaemon(opts, runDir);
  } catch (err) {
    if (madeDir) rmSync(madeDir, { recursive: true, force: true });
    throw err;
  }
  let stopped = false;
  return {
    runDir,
    socketPath: join(runDir, `${base}.sock`),
    roSocketPath: join(runDir, `${base}.ro.sock`),
    get pid() {
      return current.child.pid!;
    },
    log: () => current.log(),
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopDaemon(current.child);
      if (madeDir) rmSync(madeDir, { recursive: true, force: true });
    },
    async restart() {
      if (stopped) throw new Error('restart after stop');
      await stopDaemon(current.child);
      current = await spawnDaemon(opts, runDir);
    },
  };
}

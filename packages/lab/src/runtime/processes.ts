// Long-running programs inside a qube (QubesDB daemon, agents): started with their output in
// a per-qube log file, optionally waiting for "ready" on fd 3, stopped by pid.
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { Qube } from '@qubes-net/netns';

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class QubeProcess {
  private exitInfo: ProcessExit | undefined;
  readonly exited: Promise<ProcessExit>;
  /** Set when the lab itself stopped it (an exit then is not a failure). */
  stopping = false;

  constructor(
    readonly role: string,
    readonly qube: string,
    readonly argv: readonly string[],
    readonly logFile: string,
    readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
      child.once('error', () => {
        this.exitInfo ??= { code: -1, signal: null };
        resolve(this.exitInfo);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  get exit(): ProcessExit | undefined {
    return this.exitInfo;
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    this.stopping = true;
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL (a crash or `kill`), and wait for the exit. */
  async kill(): Promise<void> {
    this.stopping = true;
    if (!this.running) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

export interface StartOptions {
  env?: Record<string, string>;
  /** Wait for "ready\n" on fd 3 (the QubesDB daemon's --ready-fd). */
  readyFd?: boolean;
  readyTimeoutMs?: number;
}

/** Starts `argv` inside the qube with stdout/stderr appended to `logFile`. */
export async function startInQube(q: Qube, role: string, argv: readonly string[], logFile: string, opts: StartOptions = {}): Promise<QubeProcess> {
  const fd = openSync(logFile, 'a', 0o640);
  let child: ChildProcess;
  try {
    child = q.spawn(argv[0]!, argv.slice(1) as string[], {
      stdio: ['ignore', fd, fd, ...(opts.readyFd ? (['pipe'] as const) : [])],
      ...(opts.env ? { env: opts.env } : {}),
    });
  } finally {
    closeSync(fd);
  }
  const proc = new QubeProcess(role, q.name, argv, logFile, child);
  if (opts.readyFd) {
    const pipe = child.stdio[3] as Readable | null;
    if (!pipe) throw new Error(`${role} in ${q.name}: no readiness pipe`);
    await new Promise<void>((resolve, reject) => {
      let got = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${role} in ${q.name} not ready after ${opts.readyTimeoutMs ?? 20_000} ms (log: ${logFile})`));
      }, opts.readyTimeoutMs ?? 20_000);
      pipe.setEncoding('utf8');
      pipe.on('data', (s: string) => {
        got += s;
        if (got.includes('ready\n')) {
          clearTimeout(timer);
          pipe.destroy();
          resolve();
        }
      });
      proc.exited.then((e) => {
        clearTimeout(timer);
        reject(new Error(`${role} in ${q.name} exited before ready (code ${e.code}, signal ${e.signal}; log: ${logFile})`));
      });
    });
  }
  return proc;
}

/** The pids whose parent is `ppid` (from /proc; the agent an activating watcher started). */
export function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${d}/stat`, 'utf8');
    } catch {
      continue;
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so parse after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === ppid) out.push(Number(d));
  }
  return out;
}

/** Whether the pid runs (a zombie, dead but not yet reaped by its new parent, does not). */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** SIGTERM, then SIGKILL after `graceMs`, waiting until every pid is gone (polling /proc). */
export async function stopPids(pids: readonly number[], graceMs: number): Promise<void> {
  const signal = (sig: NodeJS.Signals) => {
    for (const pid of pids) {
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    }
  };
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.some(pidAlive)) {
    if (Date.now() > deadline) {
      signal('SIGKILL');
      if (Date.now() > deadline + 5_000) throw new Error(`processes ${pids.join(' ')} did not exit`);
    }
    await sleep(20);
  }
}

// One throwaway "qube": a network namespace plus a persistent mount namespace with private
// /run, /rw, /etc/qubes, /etc/resolv.conf and /sys. Commands run in it through nsenter.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { join } from 'node:path';
import { run, type RunResult } from '@qubes-net/common';
import { linkExists } from './link.js';
import { BIN_DIR, NETNS_RUN_DIR, XENSTORE_DIR, mapQubePath } from './paths.js';
import { xenstoreRmFile, xenstoreWriteFile, xenstoreReadFile } from './xenstore.js';

export interface QubeExecOptions {
  input?: string;
  env?: Record<string, string>;
  allowFailure?: boolean;
  /** Kill the command after this long (default 60 s: only a guard against hangs). */
  timeoutMs?: number;
}

export interface QubeSpawnOptions {
  env?: Record<string, string>;
  /**
   * stdio of the child, as for child_process.spawn (default ['ignore', 'pipe', 'pipe']). Piped
   * stdout/stderr are always drained (their last 64 KiB are kept, see outputOf) so a child
   * whose output nobody reads never blocks; attach your own listeners before the first await.
   */
  stdio?: StdioOptions;
  /** Extra file descriptors passed as fd 3, 4, … (appended to a 3-entry stdio). */
  extraFds?: (number | 'pipe' | 'ignore' | NodeJS.ReadableStream | NodeJS.WritableStream)[];
}

/** PATH inside qubes: our bin first (fake xenstore tools, qn-* probes), then the caller's. */
export function qubePath(base = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'): string {
  return `${BIN_DIR}:${base}`;
}

const OUTPUT_TAIL = 64 * 1024;

export class Qube {
  /** Child processes started with spawn(), killed on removeQube/destroy. */
  readonly children = new Set<ChildProcess>();
  private readonly outputs = new WeakMap<ChildProcess, { stdout: string; stderr: string }>();

  constructor(
    readonly name: string,
    readonly netns: string,
    readonly root: string,
    /** The bind-mounted nsfs file that keeps the qube's mount namespace alive. */
    readonly mntFile: string,
  ) {}

  /** The netns file (`/run/netns/<netns>`). */
  get netnsFile(): string {
    return join(NETNS_RUN_DIR, this.netns);
  }

  /**
   * Host path of a path inside the qube; only /run (= /var/run), /rw, /etc/qubes and
   * /etc/resolv.conf are private to a qube. Write host-side files in place (writeFile), never
   * by rename: the qube sees the bind-mounted inode, a renamed-over file would be invisible.
   */
  hostPath(pathInQube: string): string {
    return mapQubePath(this.root, pathInQube);
  }

  /** `nsenter … -- env PATH=…` : prefix for callers that build their own command lines. */
  commandPrefix(): string[] {
    return ['nsenter', `--net=${this.netnsFile}`, `--mount=${this.mntFile}`, '--', 'env', `PATH=${qubePath()}`, `QN_NODE=${process.execPath}`];
  }

  private env(extra?: Record<string, string>): Record<string, string> {
    return { QN_NODE: process.execPath, ...extra, PATH: qubePath(extra?.PATH) };
  }

  /** Runs a command inside the qube and waits for it; throws CommandError on failure unless allowFailure. */
  exec(cmd: string, args: string[], opts: QubeExecOptions = {}): Promise<RunResult> {
    return run('nsenter', [`--net=${this.netnsFile}`, `--mount=${this.mntFile}`, '--', cmd, ...args], {
      env: this.env(opts.env),
      cwd: '/',
      timeoutMs: opts.timeoutMs ?? 60_000,
      ...(opts.input !== undefined ? { input: opts.input } : {}),
      ...(opts.allowFailure ? { allowFailure: true } : {}),
    });
  }

  /** Starts a long-running command inside the qube. nsenter execs it, so child.pid is the command. */
  spawn(cmd: string, args: string[], opts: QubeSpawnOptions = {}): ChildProcess {
    let stdio: StdioOptions = opts.stdio ?? ['ignore', 'pipe', 'pipe'];
    if (opts.extraFds?.length) {
      const base = typeof stdio === 'string' ? [stdio, stdio, stdio] : [...stdio].slice(0, 3);
      stdio = [...base, ...opts.extraFds] as StdioOptions;
    }
    const child = spawn('nsenter', [`--net=${this.netnsFile}`, `--mount=${this.mntFile}`, '--', cmd, ...args], {
      env: { ...process.env, ...this.env(opts.env) },
      cwd: '/',
      stdio,
    });
    this.children.add(child);
    const out = { stdout: '', stderr: '' };
    this.outputs.set(child, out);
    for (const key of ['stdout', 'stderr'] as const) {
      child[key]?.on('data', (d: Buffer) => {
        out[key] = (out[key] + d.toString('utf8')).slice(-OUTPUT_TAIL);
      });
    }
    const forget = () => this.children.delete(child);
    child.once('exit', forget);
    child.once('error', forget);
    return child;
  }

  /** The last 64 KiB of a spawned child's piped stdout/stderr (for failure messages). */
  outputOf(child: ChildProcess): { stdout: string; stderr: string } {
    return { ...(this.outputs.get(child) ?? { stdout: '', stderr: '' }) };
  }

  async xenstoreWrite(path: string, value: string): Promise<void> {
    await xenstoreWriteFile(this.hostPath(XENSTORE_DIR), path, value);
  }

  /** The value of a fake xenstore key, undefined when missing. */
  async xenstoreRead(path: string): Promise<string | undefined> {
    return xenstoreReadFile(this.hostPath(XENSTORE_DIR), path);
  }

  async xenstoreRm(path: string): Promise<void> {
    await xenstoreRmFile(this.hostPath(XENSTORE_DIR), path);
  }

  ifaceExists(ifname: string): Promise<boolean> {
    return linkExists(this.netns, ifname);
  }
}

// One booted qube: systemd-nspawn running the template's systemd as PID 1 inside a network
// namespace the lab made, on a copy-on-write instance of the template image.
//
// What this machine needs, and why:
//  - `--register=no --keep-unit`: the host's PID 1 is not systemd (no machined, no D-Bus to
//    register a scope with), so nspawn must neither register nor create a scope;
//  - SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: the host has no cgroup v2 mount nspawn would detect;
//  - SYSTEMD_NSPAWN_API_VFS_WRITABLE=network: /proc/sys/net writable, for forwarding and
//    proxy ARP in network qubes;
//  - CAP_NET_ADMIN: nspawn drops it by default; the agents program nftables and routes.
// Commands run in the container with nsenter into the leader's namespaces (`machinectl shell`
// and `systemctl -M` need machined): `systemctl`, `journalctl` and the installed commands
// then see the container's mounts and its systemd.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, type RunResult } from '@qubes-net/common';
import { nspawnEnv } from './image.js';

export interface Bind {
  host: string;
  inside: string;
  readOnly?: boolean;
}

export interface ContainerOptions {
  /** Unique machine name (the lab puts lab and qube names in it). */
  machine: string;
  /** Root directory to boot (an instance of the template image). */
  root: string;
  /** The network namespace file, /run/netns/NAME. */
  netnsFile: string;
  hostname: string;
  binds?: Bind[];
  /** nspawn's console output (the boot messages) goes here. */
  logFile: string;
  env?: Record<string, string>;
}

const SIGRTMIN = 34;

/** The environment a command gets inside: what systemd gives services, no host variables. */
const INSIDE_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8', 'HOME=/root', 'TERM=dumb'];

export interface ExecOptions {
  env?: Record<string, string>;
  allowFailure?: boolean;
  timeoutMs?: number;
  input?: string;
}

export class Container {
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;
  readonly startedAt = Date.now();

  private constructor(readonly opts: ContainerOptions, readonly child: ChildProcess, readonly cgroup?: string) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        // nspawn leaves this directory behind when /run is not a tmpfs (it is ext4 here).
        try { rmdirSync(`/run/systemd/nspawn/propagate/${opts.machine}`); } catch { /* none, or not empty */ }
        if (cgroup) {
          removeCgroupTree(cgroup);
          try { rmdirSync(dirname(cgroup)); } catch { /* other containers of ours still run */ }
          // The container's last processes may still be exiting: once more a moment later.
          if (existsSync(cgroup)) setTimeout(() => removeCgroupTree(cgroup), 1000).unref();
        }
        resolve();
      });
      child.once('error', () => {
        this.exitInfo ??= { code: -1, signal: null };
        resolve();
      });
    });
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  get machine(): string {
    return this.opts.machine;
  }

  /** Starts the container (does not wait for the boot: see waitBooted). */
  static start(opts: ContainerOptions): Container {
    const args = [
      '--register=no', '--keep-unit', '--boot', '--quiet',
      `--machine=${opts.machine}`, `--hostname=${opts.hostname}`,
      `--directory=${opts.root}`, `--network-namespace-path=${opts.netnsFile}`,
      '--capability=CAP_NET_ADMIN', '--resolv-conf=off', '--timezone=off', '--link-journal=no',
      ...(opts.binds ?? []).map((b) => `--${b.readOnly ? 'bind-ro' : 'bind'}=${b.host}:${b.inside}`),
      ...Object.entries(opts.env ?? {}).map(([k, v]) => `--setenv=${k}=${v}`),
    ];
    const cgroup = ownCgroup(opts.machine);
    const fd = openSync(opts.logFile, 'a', 0o640);
    let child: ChildProcess;
    try {
      // stdin ignored: nspawn then gives the container a /dev/console on a pty it drains itself.
      // The shell only moves itself into the container's own cgroup and execs nspawn; every
      // value reaches it as a positional parameter, never as code.
      const argv = cgroup
        ? ['/bin/sh', '-c', 'echo $$ > "$1" && shift && exec "$@"', 'sh', join(cgroup, 'cgroup.procs'), 'systemd-nspawn', ...args]
        : ['systemd-nspawn', ...args];
      child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd], env: { ...process.env, ...nspawnEnv() } });
    } finally {
      closeSync(fd);
    }
    return new Container(opts, child, cgroup);
  }

  /** PID 1 of the container, as the host sees it (nspawn's child running systemd). */
  leaderPid(): number | undefined {
    const nspawnPid = this.child.pid;
    if (!nspawnPid || !this.running) return undefined;
    let children: string;
    try {
      children = readFileSync(`/proc/${nspawnPid}/task/${nspawnPid}/children`, 'utf8');
    } catch {
      return undefined;
    }
    for (const p of children.trim().split(/\s+/).filter(Boolean)) {
      const pid = Number.parseInt(p, 10);
      // The leader lives in its own PID namespace, unlike nspawn's short-lived helpers.
      try {
        if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'systemd') return pid;
      } catch { /* exited meanwhile */ }
    }
    return undefined;
  }

  private nsenterArgs(leader: number, argv: readonly string[], env: Record<string, string> = {}): string[] {
    return ['-t', String(leader), '-m', '-u', '-i', '-n', '-p', '-C', '-r', '-w', '--', 'env', '-i', ...INSIDE_ENV,
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv];
  }

  /** Runs ARGV inside the container (its mounts, PID namespace, systemd). */
  async exec(argv: readonly string[], opts: ExecOptions = {}): Promise<RunResult> {
    const leader = this.leaderPid();
    if (!leader) throw new Error(`container ${this.machine} is not running`);
    return run('nsenter', this.nsenterArgs(leader, argv, opts.env), {
      timeoutMs: opts.timeoutMs ?? 60_000,
      ...(opts.allowFailure ? { allowFailure: true } : {}),
      ...(opts.input !== undefined ? { input: opts.input } : {}),
    });
  }

  /** argv prefix for callers that spawn their own process inside (interactive `exec`). */
  execPrefix(env: Record<string, string> = {}): string[] {
    const leader = this.leaderPid();
    if (!leader) throw new Error(`container ${this.machine} is not running`);
    return ['nsenter', ...this.nsenterArgs(leader, [], env)];
  }

  /**
   * Waits until systemd inside says the boot is over (`is-system-running --wait`: running or
   * degraded). Returns the state systemd reported.
   */
  async waitBooted(timeoutMs = 120_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    // The leader exists a moment after nspawn starts, and its bus socket a moment after that.
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`container ${this.machine} exited during boot (${JSON.stringify(this.exitInfo)}; console log ${this.opts.logFile})`);
      if (this.leaderPid() && await this.exec(['test', '-S', '/run/systemd/private'], { allowFailure: true }).then((r) => r.exitCode === 0, () => false)) break;
      await sleep(50);
    }
    const left = Math.max(1000, deadline - Date.now());
    const r = await this.exec(['systemctl', 'is-system-running', '--wait'], { allowFailure: true, timeoutMs: left });
    const state = r.stdout.trim();
    if (state !== 'running' && state !== 'degraded') throw new Error(`container ${this.machine} did not finish booting: ${state || r.stderr.trim()}`);
    return state;
  }

  /** Units that failed (empty on a clean boot). */
  async failedUnits(): Promise<string[]> {
    const r = await this.exec(['systemctl', 'list-units', '--failed', '--plain', '--no-legend', '--no-pager'], { allowFailure: true });
    return r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[0]!).filter(Boolean);
  }

  /**
   * Powers the container off as a shutdown would (SIGRTMIN+4 to systemd: poweroff.target),
   * and kills nspawn if it is still there after GRACE_MS.
   */
  async stop(graceMs = 20_000): Promise<void> {
    if (!this.running) return;
    const leader = this.leaderPid();
    if (leader) {
      // Node has no name for real-time signals: SIGRTMIN (34 on Linux) + 4 asks systemd to power off.
      try { process.kill(leader, SIGRTMIN + 4); } catch { /* gone */ }
    } else {
      this.child.kill('SIGTERM');
    }
    const timer = setTimeout(() => this.kill(), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL to nspawn and, so nothing survives in the container, to every process in it. */
  async kill(): Promise<void> {
    if (!this.running) return;
    const leader = this.leaderPid();
    this.child.kill('SIGKILL');
    if (leader) {
      for (const pid of pidsInPidNamespaceOf(leader)) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
    }
    await this.exited;
  }
}

/** The host's cgroup2 mount (hybrid layout here: /sys/fs/cgroup/unified). */
function cgroup2Root(): string | undefined {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (type === 'cgroup2' && mnt) return mnt;
  }
  return undefined;
}

/**
 * A cgroup2 directory of the container's own. Without systemd on the host, nspawn with
 * --keep-unit stays in the cgroup it was started in and puts the container under "payload"
 * there: every container started from the same cgroup would share one tree, so one
 * container's systemd would see (and fail to kill) another's processes in its units' cgroups.
 */
function ownCgroup(machine: string): string | undefined {
  const root = cgroup2Root();
  if (!root) return undefined;
  const self = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))?.slice(3) ?? '/';
  const dir = join(root, self, 'qubes-net-lab', machine);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Removes a cgroup tree bottom-up (rmdir only: cgroups with processes stay, and say so). */
function removeCgroupTree(dir: string): void {
  let entries: string[] = [];
  try {
    entries = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return;
  }
  for (const e of entries) removeCgroupTree(join(dir, e));
  try { rmdirSync(dir); } catch { /* busy: a process is still exiting */ }
}

/** Host pids of every process in the PID namespace of PID (including PID). */
function pidsInPidNamespaceOf(pid: number): number[] {
  const target = pidNamespace(pid);
  if (!target) return [];
  return readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number).filter((p) => pidNamespace(p) === target);
}

function pidNamespace(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}

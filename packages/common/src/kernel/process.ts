// The one way to run a program: an argument vector (never a shell), an optional input, a
// timeout that kills the program's whole process group, and completion when the program
// EXITS, not when its pipes close. A hook that starts a daemon in the background leaves that
// daemon holding our stdout/stderr pipes; waiting for them to close would wait for the daemon.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { CommandError } from '../command-error.js';

export interface ProcessOptions {
  /** Text written to standard input (stdin is /dev/null otherwise). */
  input?: string;
  /** Kill the process group (SIGKILL) after this long; the result has timedOut = true. */
  timeoutMs?: number;
  /** Run inside this named network namespace (`ip netns exec NS …`), for the lab and tests. */
  netns?: string;
  /** Do not throw on a non-zero exit (or timeout); the caller inspects the result. */
  allowFailure?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Output kept per stream; the rest is dropped (default 64 MiB). */
  maxBuffer?: number;
  /**
   * 'hook': a user's hook. Under systemd it runs in a transient scope of its own
   * (`qubes-net-hook-<random>.scope`), outside the calling unit's cgroup and memory limit, so a
   * daemon it starts in the background (a VPN, dnsmasq) outlives the agent's idle exit or
   * restart as it does upstream. Elsewhere (the lab, tests) it runs as any program.
   */
  scope?: 'hook';
}

export interface ProcessResult {
  stdout: string;
  stderr: string;
  /** Exit code; -1 when killed by a signal. */
  exitCode: number;
  signal?: NodeJS.Signals;
  timedOut: boolean;
}

/** Error thrown for a failed run; `timedOut` tells a hang from a failure. */
export class ProcessError extends CommandError {
  constructor(command: string, args: readonly string[], exitCode: number | undefined, stderr: string, stdout: string, readonly timedOut: boolean) {
    super(command, args, exitCode, stderr, stdout);
    this.name = 'ProcessError';
  }
}

const NETNS_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
// How long to keep reading pipes after the program exited: data it wrote just before exiting
// may still be in flight; a background child that keeps the pipe open is not waited for.
const DRAIN_AFTER_EXIT_MS = 50;

/** Unit name prefix of the hooks' transient scopes (`systemctl list-units 'qubes-net-hook-*'`). */
export const HOOK_SCOPE_PREFIX = 'qubes-net-hook-';

/** True when this process is a systemd unit's (INVOCATION_ID) on a systemd-booted system. */
export function underSystemd(env: NodeJS.ProcessEnv = process.env, runDir = '/run/systemd/system'): boolean {
  return typeof env.INVOCATION_ID === 'string' && env.INVOCATION_ID !== '' && existsSync(runDir);
}

/**
 * The argv that runs `argv` in a transient scope of its own. systemd-run --scope moves itself
 * into the new scope and then execs the command in place: same PID and process group, so the
 * exit code, the output and the group kill on timeout work as for a direct run. --collect
 * unloads the scope even when the hook failed, once its last process is gone.
 */
export function hookScopeArgv(argv: readonly string[], unitSuffix: string = randomBytes(6).toString('hex')): string[] {
  if (!/^[a-z0-9]{1,32}$/.test(unitSuffix)) throw new Error(`hookScopeArgv: invalid unit suffix ${JSON.stringify(unitSuffix)}`);
  return ['systemd-run', '--scope', '--quiet', '--collect', `--unit=${HOOK_SCOPE_PREFIX}${unitSuffix}`, '--', ...argv];
}

/** Runs argv[0] with argv[1..]; resolves when it exits. */
export function runProcess(argv: readonly string[], opts: ProcessOptions = {}): Promise<ProcessResult> {
  if (argv.length === 0 || typeof argv[0] !== 'string' || argv[0] === '') return Promise.reject(new Error('runProcess: empty argv'));
  for (const a of argv) if (typeof a !== 'string' || a.includes('\0')) return Promise.reject(new Error('runProcess: argument is not a string or contains NUL'));
  if (opts.netns !== undefined && !NETNS_RE.test(opts.netns)) return Promise.reject(new Error(`runProcess: invalid netns ${JSON.stringify(opts.netns)}`));
  const inNs = opts.netns !== undefined ? ['ip', 'netns', 'exec', opts.netns, ...argv] : [...argv];
  const full = opts.scope === 'hook' && underSystemd() ? hookScopeArgv(inNs) : inNs;
  const [command, ...args] = full as [string, ...string[]];
  // Errors name the program the caller asked for, not the scope wrapper around it.
  const [shownCommand, ...shownArgs] = inNs as [string, ...string[]];
  const max = opts.maxBuffer ?? 64 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(command, args, {
        stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        // Own process group, so a timeout kills whatever the program started too.
        detached: true,
        ...(opts.env ? { env: opts.env } : {}),
        ...(opts.cwd ? { cwd: opts.cwd } : {}),
      });
    } catch (e) {
      reject(e);
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let timedOut = false;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    child.stdout!.on('data', (b: Buffer) => {
      if (outLen < max) out.push(b);
      outLen += b.length;
    });
    child.stderr!.on('data', (b: Buffer) => {
      if (errLen < max) err.push(b);
      errLen += b.length;
    });
    const finish = (code: number | null, signal: NodeJS.Signals | null, spawnError?: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.stdout!.destroy();
      child.stderr!.destroy();
      if (spawnError) {
        const msg = spawnError.code === 'ENOENT' ? `${command}: not found` : String(spawnError.message);
        reject(new ProcessError(shownCommand, shownArgs, undefined, msg, '', false));
        return;
      }
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8') + (timedOut ? `\n${shownCommand}: killed after ${opts.timeoutMs} ms` : '');
      const result: ProcessResult = { stdout, stderr, exitCode: code ?? -1, timedOut, ...(signal ? { signal } : {}) };
      if ((result.exitCode !== 0 || timedOut) && !opts.allowFailure) {
        reject(new ProcessError(shownCommand, shownArgs, code ?? undefined, stderr || (signal ? `killed by ${signal}` : ''), stdout, timedOut));
        return;
      }
      resolve(result);
    };
    child.once('error', (e: NodeJS.ErrnoException) => finish(null, null, e));
    child.once('exit', (code, signal) => {
      // Pipes usually close right after exit; if a background child holds them, stop
      // waiting after a short drain.
      const open = new Set([child.stdout!, child.stderr!].filter((s) => !s.closed));
      if (open.size === 0) finish(code, signal);
      for (const s of open) {
        s.once('close', () => {
          open.delete(s);
          if (open.size === 0) finish(code, signal);
        });
      }
      setTimeout(() => finish(code, signal), DRAIN_AFTER_EXIT_MS).unref();
    });
    if (opts.timeoutMs !== undefined && opts.timeoutMs > 0) {
      timer = setTimeout(() => {
        timedOut = true;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }, opts.timeoutMs);
    }
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => undefined); // the program may exit without reading it all
      child.stdin!.end(opts.input);
    }
  });
}

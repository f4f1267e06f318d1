// Runs the tools the driver programs the kernel with (nft, ip, conntrack, hooks): argument
// arrays only, never a shell, like common's run(). It is a thin layer over child_process
// rather than run() because the driver runs a process or two per vif event and must stay
// small: execa costs ~11 MB of heap in a long-running daemon and a few ms of JavaScript per
// call, which is more than the whole per-vif budget on a loaded machine.
import { spawn } from 'node:child_process';
import { CommandError, type RunResult } from '@qubes-net/common';

export interface ProcessOptions {
  /** Text written to the program's standard input. */
  input?: string;
  /** Do not throw on a non-zero exit; the caller inspects exitCode. */
  allowFailure?: boolean;
  /** Kill the program (SIGKILL) after this long. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export function runProcess(command: string, args: readonly string[], opts: ProcessOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...args], {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      ...(opts.env ? { env: opts.env } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let failed: Error | undefined;
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.once('error', (e: NodeJS.ErrnoException) => {
      failed = e.code === 'ENOENT' ? new CommandError(command, args, undefined, `${command}: not found`, '') : e;
    });
    if (opts.timeoutMs) timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => undefined); // the program may exit without reading it all
      child.stdin!.end(opts.input);
    }
    // Finish when the program exits, not when its pipes close: a hook that backgrounds a
    // daemon keeps them open for ever. What the pipes still hold is read for a moment.
    let grace: NodeJS.Timeout | undefined;
    child.once('exit', () => {
      grace = setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
        child.emit('close', child.exitCode, child.signalCode);
      }, 200);
    });
    let settled = false;
    child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(grace);
      clearTimeout(timer);
      if (failed) return reject(failed);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      const exitCode = code ?? -1;
      if (exitCode !== 0 && !opts.allowFailure) {
        return reject(new CommandError(command, args, code ?? undefined, stderr || (signal ? `killed by ${signal}` : ''), stdout));
      }
      resolve({ stdout, stderr, exitCode });
    });
  });
}

/** `ip -j ARGS` parsed (an empty output is an empty list). */
export async function ipJsonFast<T = unknown>(args: readonly string[]): Promise<T> {
  const { stdout } = await runProcess('ip', ['-j', ...args], { timeoutMs: 10_000 });
  const text = stdout.trim();
  return (text ? JSON.parse(text) : []) as T;
}

/** `nft -j list …` parsed; undefined when the object does not exist. */
export async function nftListJsonFast(what: readonly string[]): Promise<{ nftables: Record<string, any>[] } | undefined> {
  const res = await runProcess('nft', ['-j', 'list', ...what], { allowFailure: true, timeoutMs: 10_000 });
  if (res.exitCode !== 0) {
    if (/No such file or directory|does not exist/.test(res.stderr)) return undefined;
    throw new CommandError('nft', ['-j', 'list', ...what], res.exitCode, res.stderr, res.stdout);
  }
  return JSON.parse(res.stdout);
}

// Runs the tools the driver programs the kernel with (nft, ip, conntrack, hooks, xenstore):
// common's one process runner (argument arrays, never a shell; a timeout that kills the
// process group; done when the program exits, not when a backgrounded child closes the
// pipes), with the (command, args) call shape the driver's modules use.
import type { RunResult } from '@qubes-net/common';
import { runProcess as run } from '@qubes-net/common/kernel';

export interface ProcessOptions {
  /** Text written to the program's standard input. */
  input?: string;
  /** Do not throw on a non-zero exit; the caller inspects exitCode. */
  allowFailure?: boolean;
  /** Kill the program after this long (default 10 s: one hung tool must not stall every vif). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** 'hook': a user's hook, in a transient systemd scope of its own (see common's runProcess). */
  scope?: 'hook';
}

export const DEFAULT_TOOL_TIMEOUT_MS = 10_000;

export async function runProcess(command: string, args: readonly string[], opts: ProcessOptions = {}): Promise<RunResult> {
  const r = await run([command, ...args], {
    timeoutMs: opts.timeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS,
    ...(opts.input !== undefined ? { input: opts.input } : {}),
    ...(opts.allowFailure ? { allowFailure: true } : {}),
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.scope ? { scope: opts.scope } : {}),
  });
  return { stdout: r.stdout, stderr: r.timedOut ? `${r.stderr}timed out after ${opts.timeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS} ms` : r.stderr, exitCode: r.exitCode };
}

/** `ip -j ARGS` parsed (an empty output is an empty list). */
export async function ipJsonFast<T = unknown>(args: readonly string[]): Promise<T> {
  const { stdout } = await runProcess('ip', ['-j', ...args]);
  const text = stdout.trim();
  return (text ? JSON.parse(text) : []) as T;
}

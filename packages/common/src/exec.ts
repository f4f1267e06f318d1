// The only way this project runs external programs: execa with an argument array, never a
// shell, so no QubesDB value can be interpreted as shell syntax.
import type { Options } from 'execa';
import { CommandError } from './command-error.js';

export { CommandError } from './command-error.js';
// The one process runner (timeouts kill the group; completion on exit, not pipe close).
export { runProcess, ProcessError, type ProcessOptions, type ProcessResult } from './kernel/process.js';

// execa is loaded on first use: it costs ~10 MB and tens of ms at start-up, which agents whose
// hot path never runs a program (the QubesDB daemon) should not pay.
let execaModule: Promise<typeof import('execa')> | undefined;

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface RunOptions {
  /** Text fed to the program's standard input (for `nft -f -` and `ip -batch -`). */
  input?: string;
  /** Do not throw on a non-zero exit; the caller inspects exitCode. */
  allowFailure?: boolean;
  env?: Record<string, string | undefined>;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs `command args…` and returns its output; throws CommandError on failure. */
export async function run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const options: Options = {
    reject: false,
    stripFinalNewline: false,
    maxBuffer: 256 * 1024 * 1024,
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' as const }),
    ...(opts.env ? { env: opts.env, extendEnv: true } : {}),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}),
  };
  execaModule ??= import('execa');
  const { execa } = await execaModule;
  const result = await execa(command, [...args], options);
  const stdout = String(result.stdout ?? '');
  const stderr = String(result.stderr ?? '');
  const exitCode = result.exitCode ?? -1;
  if (result.failed && !opts.allowFailure) {
    if (result.exitCode === undefined && (result as { code?: string }).code === 'ENOENT') {
      throw new CommandError(command, args, undefined, `${command}: not found`, '');
    }
    throw new CommandError(command, args, result.exitCode, stderr || String(result.message ?? ''), stdout);
  }
  return { stdout, stderr, exitCode };
}

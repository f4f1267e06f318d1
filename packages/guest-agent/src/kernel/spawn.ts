// Runs a program with an argument array (never through a shell, so no QubesDB value can become
// shell syntax). This is node:child_process directly rather than common's run(): execa alone
// costs ~70 ms of startup, more than the whole apply is allowed to take.
import { spawn } from 'node:child_process';

export interface ProgramResult {
  /** Exit code; -1 when killed by a signal or when the program could not be started. */
  code: number;
  stdout: string;
  stderr: string;
}

export function runProgram(command: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<ProgramResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    let spawnError: Error | undefined;
    child.on('error', (e) => { spawnError = e; });
    child.on('close', (code) => {
      const stderr = Buffer.concat(err).toString() + (spawnError ? `${command}: ${spawnError.message}` : '');
      resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr });
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => { /* the program exited early; its exit code tells */ });
      child.stdin!.end(opts.input);
    }
  });
}

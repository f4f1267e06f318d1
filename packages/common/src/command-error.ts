// A program that failed: its command line, exit code and output, for structured logs.
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(`${command} ${args.join(' ')} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || stdout.trim()}`);
    this.name = 'CommandError';
  }
}

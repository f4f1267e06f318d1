// iproute2 access: read the kernel's state as JSON (`ip -j`) and apply a whole change as one
// `ip -batch` run. A batch file may not carry `-n`; to act in another namespace the caller
// passes `netns`, which becomes `ip -n NS -batch -`.
import { run } from './exec.js';

export interface IpOptions {
  /** Network namespace name (as in `ip netns`), for tools and tests outside the qube. */
  netns?: string;
}

function prefixArgs(opts: IpOptions): string[] {
  return opts.netns ? ['-n', opts.netns] : [];
}

/** Runs `ip -j ARGS` and parses its JSON output (an empty output is an empty list). */
export async function ipJson<T = unknown>(args: readonly string[], opts: IpOptions = {}): Promise<T> {
  const { stdout } = await run('ip', [...prefixArgs(opts), '-j', ...args]);
  const text = stdout.trim();
  return (text ? JSON.parse(text) : []) as T;
}

/**
 * Applies batch lines with one `ip -batch -` process. With `force`, ip goes on after a failing
 * line (used for removals that may already be gone); the error text is still returned.
 */
export async function ipBatch(lines: readonly string[], opts: IpOptions & { force?: boolean } = {}): Promise<{ ok: boolean; stderr: string }> {
  if (lines.length === 0) return { ok: true, stderr: '' };
  for (const line of lines) {
    if (line.includes('\n')) throw new Error(`ip batch line contains a newline: ${JSON.stringify(line)}`);
  }
  const args = [...prefixArgs(opts), ...(opts.force ? ['-force'] : []), '-batch', '-'];
  const res = await run('ip', args, { input: lines.join('\n') + '\n', allowFailure: true });
  return { ok: res.exitCode === 0, stderr: res.stderr };
}

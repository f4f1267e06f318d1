// The one `ip -batch` writer: a whole change as one `ip [-n NS] -batch -` process. Each line
// is an argument list (ip's batch syntax splits on whitespace), checked so no value can start
// another command or smuggle `-n` into the batch (ip forbids `-n` inside a batch file: the
// namespace is given on the command line instead).
import { runProcess } from './process.js';

export interface IpBatchOptions {
  /** Named network namespace: `ip -n NS -batch -`. */
  netns?: string;
  /** `-force`: go on after a failing line (removals that may already be gone). */
  force?: boolean;
  timeoutMs?: number;
}

export type IpBatchResult = { ok: true } | { ok: false; code: 'invalid' | 'rejected' | 'failed'; error: string };

// One word of a batch line: names, addresses, prefixes, MACs, numbers, keywords.
const WORD_RE = /^[A-Za-z0-9_.:/@+-]{1,128}$/;

/** Checks one batch line given as words; returns the line text. */
export function ipBatchLine(words: readonly string[]): string {
  if (words.length === 0) throw new Error('empty ip batch line');
  for (const w of words) if (typeof w !== 'string' || !WORD_RE.test(w)) throw new Error(`invalid word in ip batch line: ${JSON.stringify(String(w)).slice(0, 80)}`);
  if (words[0]!.startsWith('-')) throw new Error(`ip batch line may not start with an option: ${words[0]}`);
  return words.join(' ');
}

export class IpBatchWriter {
  constructor(private readonly defaults: { timeoutMs?: number } = {}) {}

  /** Applies the lines (each an argument list, or a text line split on spaces) in one process. */
  async apply(lines: readonly (readonly string[] | string)[], opts: IpBatchOptions = {}): Promise<IpBatchResult> {
    if (lines.length === 0) return { ok: true };
    let text: string;
    if (opts.netns !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(opts.netns)) return { ok: false, code: 'invalid', error: `invalid netns ${JSON.stringify(opts.netns)}` };
    try {
      text = lines.map((l) => ipBatchLine(typeof l === 'string' ? l.trim().split(/ +/) : l)).join('\n') + '\n';
    } catch (e) {
      return { ok: false, code: 'invalid', error: String((e as Error).message) };
    }
    const argv = ['ip', ...(opts.netns !== undefined ? ['-n', opts.netns] : []), ...(opts.force ? ['-force'] : []), '-batch', '-'];
    try {
      const res = await runProcess(argv, { input: text, allowFailure: true, timeoutMs: opts.timeoutMs ?? this.defaults.timeoutMs ?? 30_000 });
      if (res.exitCode === 0 && !res.timedOut) return { ok: true };
      return { ok: false, code: res.timedOut ? 'failed' : 'rejected', error: res.stderr.trim() || `ip exit ${res.exitCode}` };
    } catch (e) {
      return { ok: false, code: 'failed', error: String((e as Error)?.message ?? e) };
    }
  }

  /** `ip [-n NS] -j ARGS…` parsed (an empty output is an empty list). */
  async readJson<T = unknown>(args: readonly string[], opts: { netns?: string; timeoutMs?: number } = {}): Promise<T> {
    for (const w of args) if (!WORD_RE.test(w)) throw new Error(`invalid ip argument ${JSON.stringify(w)}`);
    const res = await runProcess(['ip', ...(opts.netns !== undefined ? ['-n', opts.netns] : []), '-j', ...args], { timeoutMs: opts.timeoutMs ?? this.defaults.timeoutMs ?? 30_000 });
    const text = res.stdout.trim();
    return (text ? JSON.parse(text) : []) as T;
  }
}

// The one nft writer: a transaction is rendered once and applied as one batch (the kernel
// takes all of it or none). In process through libnftables when the library is there (no
// spawn per change); `nft -f -` otherwise, and always for another namespace (a library call
// cannot switch namespace for one call).
import { libNftables } from './libnftables.js';
import { runProcess } from './process.js';
import type { NftTransaction } from './nft-transaction.js';

export interface NftApplyOptions {
  /** Named network namespace (tests, lab): applied with `ip netns exec NS nft -f -`. */
  netns?: string;
  /** Check only (`nft -c`): nothing is changed. */
  check?: boolean;
}

/**
 * Failure is a value: `invalid` (the transaction failed validation, nothing was sent),
 * `rejected` (nft refused it: nothing changed), `failed` (the writer itself failed: timeout,
 * missing binary).
 */
export type NftApplyResult = { ok: true } | { ok: false; code: 'invalid' | 'rejected' | 'failed'; error: string };

/** `nft -j list …` output. */
export interface NftJson {
  nftables: Record<string, any>[];
}

export interface NftWriter {
  apply(tx: NftTransaction, opts?: NftApplyOptions): Promise<NftApplyResult>;
  /** `nft -j -a list WHAT…` parsed; undefined when the object does not exist. */
  list(what: readonly string[], opts?: { netns?: string }): Promise<NftJson | undefined>;
}

export interface NftWriterOptions {
  /** Use `nft` even where libnftables is available (tests, comparisons). */
  noLibrary?: boolean;
  /** Timeout for an `nft` process (default 30 s). */
  timeoutMs?: number;
}

const LIST_WORD_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const MISSING_RE = /No such file or directory|does not exist/;

/** Renders and checks a transaction; the text, or the failure result. */
export function renderForApply(tx: NftTransaction): { text: string } | { ok: false; code: 'invalid'; error: string } {
  if (tx.error) return { ok: false, code: 'invalid', error: tx.error.message };
  return { text: tx.render() };
}

class DefaultNftWriter implements NftWriter {
  constructor(private readonly opts: NftWriterOptions) {}

  private library() {
    return this.opts.noLibrary ? undefined : libNftables();
  }

  async apply(tx: NftTransaction, opts: NftApplyOptions = {}): Promise<NftApplyResult> {
    const r = renderForApply(tx);
    if (!('text' in r)) return r;
    if (r.text === '') return { ok: true };
    const lib = opts.netns === undefined ? this.library() : undefined;
    if (lib) {
      // libnftables has no "check" flag in its text API; --check goes through nft.
      if (!opts.check) {
        const res = await lib.run(r.text);
        if (res.rc === 0) return { ok: true };
        return { ok: false, code: res.callFailed ? 'failed' : 'rejected', error: res.error.trim() || `libnftables error ${res.rc}` };
      }
    }
    const argv = ['nft', ...(opts.check ? ['-c'] : []), '-f', '-'];
    try {
      const res = await runProcess(argv, { input: r.text, allowFailure: true, timeoutMs: this.opts.timeoutMs ?? 30_000, ...(opts.netns !== undefined ? { netns: opts.netns } : {}) });
      if (res.exitCode === 0 && !res.timedOut) return { ok: true };
      return { ok: false, code: res.timedOut ? 'failed' : 'rejected', error: res.stderr.trim() || `nft exit ${res.exitCode}` };
    } catch (e) {
      return { ok: false, code: 'failed', error: String((e as Error)?.message ?? e) };
    }
  }

  async list(what: readonly string[], opts: { netns?: string } = {}): Promise<NftJson | undefined> {
    for (const w of what) if (!LIST_WORD_RE.test(w)) throw new Error(`nft list: invalid word ${JSON.stringify(w)}`);
    const lib = opts.netns === undefined ? this.library() : undefined;
    if (lib) {
      const res = await lib.runJson(`list ${what.join(' ')}`);
      if (res.rc !== 0) {
        if (MISSING_RE.test(res.error)) return undefined;
        throw new Error(`nft list ${what.join(' ')}: ${res.error.trim()}`);
      }
      return JSON.parse(res.output) as NftJson;
    }
    const res = await runProcess(['nft', '-j', '-a', 'list', ...what], { allowFailure: true, timeoutMs: this.opts.timeoutMs ?? 30_000, ...(opts.netns !== undefined ? { netns: opts.netns } : {}) });
    if (res.exitCode !== 0) {
      if (MISSING_RE.test(res.stderr)) return undefined;
      throw new Error(`nft list ${what.join(' ')}: ${res.stderr.trim() || `exit ${res.exitCode}`}`);
    }
    return JSON.parse(res.stdout) as NftJson;
  }
}

/** The nft writer (libnftables in process, `nft -f -` as the fallback). */
export function createNftWriter(opts: NftWriterOptions = {}): NftWriter {
  return new DefaultNftWriter(opts);
}

/** Whether apply() would run in process (for status and logs). */
export function nftWriterUsesLibrary(): boolean {
  return libNftables() !== undefined;
}

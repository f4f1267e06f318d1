// How a loop turn reaches the kernel: one nft transaction, one ip batch. Every tool call has a
// timeout, so one hung tool cannot stall every vif behind it (issue 13.5).
import { createNftWriter, type NftTransaction } from '@qubes-net/common/kernel';
import type { IpLine } from '../model/planner.js';
import { applyIpLines, type IpFailure } from './ip-writer.js';
import { IpSession, SessionBroken } from './ip-session.js';
import type { Logger } from '@qubes-net/common';

export const TOOL_TIMEOUT_MS = 10_000;

export interface KernelWriter {
  /** One atomic transaction; throws with nft's message when refused. */
  nft(tx: NftTransaction): Promise<void>;
  /** One batch; the failing lines, attributed to their vif. */
  ip(lines: readonly IpLine[]): Promise<IpFailure[]>;
  /** Starts helper processes (the ip session) ahead of the first turn that uses them. */
  warm?(): void;
  /** Ends helper processes (the ip session). */
  close?(): void;
}

const nftWriter = createNftWriter({ timeoutMs: TOOL_TIMEOUT_MS });

/**
 * Transactions go through common's writer (libnftables in process where the library is
 * there: no process per vif event; `nft -f -` otherwise); ip lines through one-shot
 * `ip -batch` (one-shot commands).
 */
export const toolWriter: KernelWriter = {
  async nft(tx) {
    if (tx.error) throw tx.error;
    if (tx.isEmpty) return;
    const r = await nftWriter.apply(tx);
    if (!r.ok) throw new Error(`nft ${r.code}: ${r.error}`);
  },
  ip: (l) => applyIpLines(l, TOOL_TIMEOUT_MS),
};

/**
 * For long-running hosts: the same nft path, and the ip lines through one running `ip -batch`
 * (kernel/ip-session.ts); a broken session falls back to a one-shot `ip -batch` for that turn
 * (the lines are idempotent: replace, add-then-delete, tolerated removals).
 */
export function sessionWriter(log: Logger): KernelWriter {
  const session = new IpSession(TOOL_TIMEOUT_MS);
  return {
    nft: toolWriter.nft,
    async ip(lines) {
      if (lines.length === 0) return [];
      try {
        return await session.apply(lines);
      } catch (err) {
        if (!(err instanceof SessionBroken)) throw err;
        log.debug({ err: err.message }, 'ip session broken: one-shot ip for this turn');
        return applyIpLines(lines, TOOL_TIMEOUT_MS);
      }
    },
    warm: () => session.warm(),
    close: () => session.close(),
  };
}

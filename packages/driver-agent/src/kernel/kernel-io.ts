// How the driver sends per-event changes to the kernel: through long-running nft/ip
// processes in the daemon (tool-session.ts), or one process per change (one-shot commands).
// A broken session falls back to the one-shot tools for that change; the changes are
// idempotent (add, replace, add-then-delete), so sending one again is harmless.
import type { Logger } from '@qubes-net/common';
import type { IpLine } from '../model/planner.js';
import { applyNft } from './nft-writer.js';
import { applyIpLines, type IpFailure } from './ip-writer.js';
import { NftSession, IpSession, SessionBroken } from './tool-session.js';

export interface KernelIo {
  /** One nft transaction; throws with nft's message when refused. */
  nft(statements: readonly string[]): Promise<void>;
  ip(lines: readonly IpLine[]): Promise<IpFailure[]>;
  close(): void;
}

export const oneShotIo: KernelIo = { nft: applyNft, ip: applyIpLines, close: () => undefined };

export function sessionIo(log: Logger): KernelIo {
  const nft = new NftSession();
  const ip = new IpSession();
  return {
    async nft(statements) {
      if (statements.length === 0) return;
      try {
        await nft.apply(statements);
      } catch (err) {
        if (!(err instanceof SessionBroken)) throw err;
        log.warn({ err: err.message }, 'nft session broken: one-shot nft for this change');
        await applyNft(statements);
      }
    },
    async ip(lines) {
      if (lines.length === 0) return [];
      try {
        return await ip.apply(lines);
      } catch (err) {
        if (!(err instanceof SessionBroken)) throw err;
        log.debug({ err: err.message }, 'ip session broken: one-shot ip for this change');
        return applyIpLines(lines);
      }
    },
    close() {
      nft.close();
      ip.close();
    },
  };
}

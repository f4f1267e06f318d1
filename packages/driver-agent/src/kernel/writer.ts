// How a loop turn reaches the kernel: one nft transaction, one ip batch. Every tool call has a
// timeout, so one hung tool cannot stall every vif behind it (issue 13.5).
import type { IpLine } from '../model/planner.js';
import { applyNft } from './nft-writer.js';
import { applyIpLines, type IpFailure } from './ip-writer.js';

export const TOOL_TIMEOUT_MS = 10_000;

export interface KernelWriter {
  /** One atomic transaction; throws with nft's message when refused. */
  nft(statements: readonly string[]): Promise<void>;
  /** One batch; the failing lines, attributed to their vif. */
  ip(lines: readonly IpLine[]): Promise<IpFailure[]>;
}

export const toolWriter: KernelWriter = {
  nft: (s) => applyNft(s, TOOL_TIMEOUT_MS),
  ip: (l) => applyIpLines(l, TOOL_TIMEOUT_MS),
};

// nft access for the driver: one transaction per call, and the flowtable probe.
import { runProcess } from './process.js';

export async function applyNft(statements: readonly string[], timeoutMs = 10_000): Promise<void> {
  if (statements.length === 0) return;
  await runProcess('nft', ['-f', '-'], { input: statements.join('\n') + '\n', timeoutMs });
}

/**
 * Whether this kernel has nftables flowtables. (nft 1.0.6 needs the ';' after each
 * statement inside a one-line flowtable block, so the probe is spelt out here.)
 */
export async function kernelHasFlowtables(): Promise<boolean> {
  const probe = 'table inet qubes-net-probe {\n  flowtable f {\n    hook ingress priority filter\n    devices = { lo }\n  }\n}\n';
  const res = await runProcess('nft', ['-c', '-f', '-'], { input: probe, allowFailure: true, timeoutMs: 10_000 });
  return res.exitCode === 0;
}

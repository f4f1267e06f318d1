// Tests that need root (namespaces, nftables) call needRoot(t) first. Outside CI a non-root
// run skips them with the reason; with CI=true a skip would hide a failure, so it fails.
import type { TestContext } from 'node:test';

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Returns true when the test may go on; otherwise skips (or, under CI, throws). */
export function needRoot(t: TestContext): boolean {
  if (isRoot()) return true;
  if (process.env.CI === 'true') throw new Error('this test needs root, and CI=true makes a skip a failure');
  t.skip('needs root (network namespaces, nftables)');
  return false;
}

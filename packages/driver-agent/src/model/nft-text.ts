// The text form of typed operations: the rendered lines of what `build` adds to a fresh
// transaction (the boot files, tests, logs). The first validation error is thrown.
import { NftTransaction } from '@qubes-net/common/kernel';

export function renderLines(build: (tx: NftTransaction) => void): string[] {
  const tx = new NftTransaction();
  build(tx);
  if (tx.error) throw tx.error;
  return tx.render().split('\n').filter((l) => l !== '');
}

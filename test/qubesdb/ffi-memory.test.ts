// Everything libqubesdb returns is freed: many reads, lists and multireads must not grow the
// C heap (glibc's mallinfo2 counts the bytes in use). Speed and RSS over time are bench
// matters; this only catches a missing free(), which would keep megabytes here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import koffi from 'koffi';
import { openQubesDB } from '@qubes-net/qubesdb';
import { startQubesDB } from '../helpers/qubesdb.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const libc = koffi.load('libc.so.6');
const MallInfo2 = koffi.struct('mallinfo2', {
  arena: 'size_t', ordblks: 'size_t', smblks: 'size_t', hblks: 'size_t', hblkhd: 'size_t',
  usmblks: 'size_t', fsmblks: 'size_t', uordblks: 'size_t', fordblks: 'size_t', keepcost: 'size_t',
});
const mallinfo2 = libc.func('mallinfo2', MallInfo2, []);

/** C heap bytes in use once JS garbage (Buffers, koffi externals) has been collected. */
async function heapInUse(): Promise<number> {
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  const m = mallinfo2() as { uordblks: number | bigint; hblkhd: number | bigint };
  return Number(m.uordblks) + Number(m.hblkhd);
}

test('reads, lists and multireads free what the library allocates', async (t) => {
  const daemon = await startQubesDB();
  t.after(() => daemon.stop());
  const db = openQubesDB({ runDir: daemon.runDir });
  t.after(() => db.close());
  const value = 'x'.repeat(3000);
  for (let i = 0; i < 20; i++) await db.write(`/mem/k${i}`, value);
  for (let i = 0; i < 200; i++) await db.write(`/list/entry-number-${i}`, '');

  // Without free() each call below would keep at least: read 3 KB, list 6 KB (200 paths and
  // the array), multiread 60 KB. 1000 calls of each kind: 3 MB or more.
  const limit = 1.5 * 1024 * 1024;
  const kinds: Record<string, () => Promise<unknown>> = {
    read: () => db.read('/mem/k1'),
    list: () => db.list('/list/'),
    multiread: () => db.multiread('/mem/'),
  };
  // koffi's own bookkeeping grows to a plateau at first; a missing free() grows every round.
  for (const [kind, call] of Object.entries(kinds)) {
    for (let i = 0; i < 1000; i++) await call();
    const rounds: number[] = [];
    for (let r = 0; r < 3; r++) {
      const before = await heapInUse();
      for (let i = 0; i < 1000; i++) await call();
      rounds.push((await heapInUse()) - before);
    }
    assert.ok(Math.min(...rounds) < limit, `${kind}: C heap grew by ${rounds.join(', ')} bytes in rounds of 1000 calls`);
  }
});

// The template cache keeps a few images per family and removes older ones, never one that a
// running qube's overlay uses or that was used recently (pure selection; no root needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { template } from '@qubes-net/lab';

const H = 3600_000;
const now = 100 * H;
const key = (n: number) => n.toString(16).padStart(16, '0');
const entry = (family: string, n: number, hoursAgo: number) => ({ name: `${family}-${key(n)}`, lastUsedMs: now - hoursAgo * H });

test('beyond the three newest others of its family, entries not used for two hours go', () => {
  const entries = [1, 2, 3, 4, 5, 6].map((n) => entry('template-debian-13', n, n * 10));
  const current = entry('template-debian-13', 9, 0);
  const out = template.prunableEntries([...entries, current], current.name, now, new Set());
  assert.deepEqual(out, [`template-debian-13-${key(4)}`, `template-debian-13-${key(5)}`, `template-debian-13-${key(6)}`]);
});

test('other families, recently used entries and mounted lower layers stay', () => {
  const entries = [
    entry('template-debian-13', 1, 1), entry('template-debian-13', 2, 1.5), entry('template-debian-13', 3, 30),
    entry('template-debian-13', 4, 40), entry('template-debian-13', 5, 50), entry('template-debian-13', 6, 60),
    entry('template-nm', 7, 99), entry('debian-trixie', 8, 99),
  ];
  const current = entry('template-debian-13', 9, 0);
  const out = template.prunableEntries([...entries, current], current.name, now, new Set([`template-debian-13-${key(6)}`]));
  // Newest others kept: 1, 2, 3; of 4, 5, 6 the mounted 6 stays.
  assert.deepEqual(out, [`template-debian-13-${key(4)}`, `template-debian-13-${key(5)}`]);
});

test('a name without a key prunes nothing', () => {
  const entries = [1, 2, 3, 4, 5].map((n) => entry('x', n, 50));
  assert.deepEqual(template.prunableEntries(entries, 'custom', now, new Set()), []);
});

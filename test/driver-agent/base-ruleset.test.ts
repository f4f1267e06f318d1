// `qubes-net-driver base-ruleset`: the boot-time oneshot every qube runs before any
// interface is configured. One transaction, idempotent, no forwarding, the firewall
// skeleton where that service is on.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openQubesDB, type QubesDB } from '@qubes-net/qubesdb';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { nftListJson } from '@qubes-net/common';
import { expectedRuleCounts } from '@qubes-net/driver-agent';
import { needRoot, isRoot } from '../helpers/root.js';
import { startQubesDB, type RunningQubesDB } from '../helpers/qubesdb.js';
import { DRIVER_CLI } from './lab.js';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RENDER_BASE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'packages', 'driver-agent', 'scripts', 'render-base.mjs');

let session: NetnsSession;
let q: Qube;
let qdb: RunningQubesDB;
let db: QubesDB;

before(async () => {
  if (!isRoot()) return;
  session = await NetnsSession.create('drv-base');
  q = await session.qube('appvm');
  qdb = await startQubesDB({ qube: q });
  db = openQubesDB({ runDir: qdb.runDir });
  // An AppVM: a client of some netvm, providing nothing.
  for (const [k, v] of Object.entries({ '/qubes-vm-type': 'AppVM', '/qubes-ip': '10.137.0.7', '/qubes-gateway': '10.137.0.3', '/qubes-primary-dns': '10.139.1.1' })) await db.write(k, v);
});

after(async () => {
  await db?.close().catch(() => undefined);
  await qdb?.stop().catch(() => undefined);
  await session?.destroy();
});

async function counts(family: 'ip' | 'ip6', table = 'qubes'): Promise<Map<string, number> | undefined> {
  const doc = await nftListJson(['table', family, table], { netns: q.netns });
  if (!doc) return undefined;
  const out = new Map<string, number>();
  for (const item of doc.nftables) {
    if (item.chain) out.set(item.chain.name, out.get(item.chain.name) ?? 0);
    if (item.rule) out.set(item.rule.chain, (out.get(item.rule.chain) ?? 0) + 1);
  }
  return out;
}

test('loads the base tables once, twice without duplicates, and leaves forwarding alone', async (t) => {
  if (!needRoot(t)) return;
  for (let i = 0; i < 2; i++) {
    const r = await q.exec(process.execPath, [DRIVER_CLI, 'base-ruleset'], { allowFailure: true });
    assert.equal(r.exitCode, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /"msg":"base ruleset loaded"/);
    assert.doesNotMatch(r.stdout, /"level":50/, 'an AppVM without a gateway is no error');
  }
  const want = expectedRuleCounts(true);
  for (const f of ['ip', 'ip6'] as const) {
    const have = await counts(f);
    for (const [chain, n] of want[f]) assert.equal(have?.get(chain), n, `${f} ${chain}`);
    assert.equal(have?.get('custom-input'), 0);
  }
  const input = (await q.exec('nft', ['list', 'chain', 'ip', 'qubes', 'input'])).stdout;
  assert.match(input, /policy drop/);
  assert.equal((await q.exec('cat', ['/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '0');
  // An AppVM has no virtual DNS to redirect: the chain exists and is empty.
  assert.equal((await counts('ip'))?.get('dnat-dns'), 0);
  assert.equal(await counts('ip', 'qubes-firewall'), undefined, 'no firewall service, no skeleton');
});

test('with the qubes-firewall service on, the firewall skeleton comes in the same transaction', async (t) => {
  if (!needRoot(t)) return;
  await db.write('/qubes-service/qubes-firewall', '1');
  const r = await q.exec(process.execPath, [DRIVER_CLI, 'base-ruleset'], { allowFailure: true });
  assert.equal(r.exitCode, 0, r.stderr + r.stdout);
  const fw = (await q.exec('nft', ['list', 'chain', 'ip', 'qubes-firewall', 'forward'])).stdout;
  assert.match(fw, /policy drop/);
  assert.match(fw, /priority filter \+ 10/);
});

test('the boot files (render-base.mjs) load with plain nft -f, twice without duplicates, and are what the driver would load', async (t) => {
  if (!needRoot(t)) return;
  const r = await q.exec(process.execPath, [RENDER_BASE, '/run/qn-base-files'], { allowFailure: true });
  assert.equal(r.exitCode, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n').map((l) => l.split('/').pop()).sort(), ['base-dual-firewall.nft', 'base-dual.nft', 'base-ipv4-firewall.nft', 'base-ipv4.nft']);
  for (const variant of ['base-ipv4.nft', 'base-dual-firewall.nft']) {
    // Each variant from scratch, as at boot.
    for (const table of [['ip', 'qubes'], ['ip6', 'qubes'], ['ip', 'qubes-firewall'], ['ip6', 'qubes-firewall']]) await q.exec('nft', ['delete', 'table', ...table], { allowFailure: true });
    for (let i = 0; i < 2; i++) await q.exec('nft', ['-f', `/run/qn-base-files/${variant}`]);
    const dual = variant.includes('dual');
    const want = expectedRuleCounts(dual);
    for (const f of dual ? (['ip', 'ip6'] as const) : (['ip'] as const)) {
      const have = await counts(f);
      for (const [chain, n] of want[f]) assert.equal(have?.get(chain), n, `${variant}: ${f} ${chain}`);
    }
    if (!dual) assert.equal(await counts('ip6'), undefined, 'the IPv4 variant has no ip6 table');
    const fw = await counts('ip', 'qubes-firewall');
    assert.equal(fw !== undefined, variant.includes('firewall'), `${variant}: firewall skeleton`);
  }
});

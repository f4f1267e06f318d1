// The firewall's kernel writes before and after the one kernel-writing layer, measured in the
// same run and the same throwaway namespace, rounds alternating:
// - apply one qube's update (its chain and dispatch element, one transaction) with 1,000 other
//   qubes present;
// - load 1,000 qubes in one transaction (the daemon's start).
// "before" is the firewall as it was on main before this round (commit BASE): its nft text
// built from template strings and applied through its own libnftables wrapper; those modules
// are taken from git and transpiled at run time, so the baseline is the real old code.
// "after" is today's path: a typed NftTransaction applied by common's NftWriter. Both go
// through libnftables in process, so the figures compare the layers, not spawn costs.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { NftTransaction, createNftWriter, nftWriterUsesLibrary, runProcess } from '@qubes-net/common/kernel';
import { addFirewallSkeleton, addQubeUpdate, compileQube, parseQubeEntries, type CompiledQube, type Target } from '@qubes-net/firewall';

const SELF = fileURLToPath(import.meta.url);
const here = dirname(SELF);
const repoRoot = join(here, '..', '..', '..');
/** main when this round began. */
const BASE = 'e8e3d79';
const ROUNDS = Number(process.env.FW_APPLY_ROUNDS ?? 7);
const UPDATES = Number(process.env.FW_APPLY_UPDATES ?? 40);
const OTHERS = 1000;
const RULES = { policy: 'drop', '0000': 'action=accept proto=icmp', '0001': 'action=accept specialtarget=dns', '0002': 'action=drop proto=tcp dstports=4321-4321', '0003': 'action=accept proto=tcp dstports=1000-2000' };

const round2 = (v: number) => Math.round(v * 100) / 100;
function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

function qube(addr: string): CompiledQube {
  const target: Target = { addr, family: 4 };
  return compileQube(parseQubeEntries(target, new Map(Object.entries(RULES).map(([k, v]) => [`/qubes-firewall/${addr}/${k}`, v]))), new Map());
}
const otherAddr = (i: number) => `10.137.${100 + Math.floor(i / 250)}.${1 + (i % 250)}`;
const CLIENT = '10.137.0.7';

interface OldModules {
  qubeUpdateScript(q: CompiledQube): string;
  firewallSkeleton(): string;
  libNftables(): { apply(script: string): Promise<{ ok: boolean; error?: string }> } | undefined;
}

/** The firewall's model and libnftables wrapper as they were at BASE, transpiled into dist. */
async function loadBaseline(): Promise<OldModules> {
  const ts = (await import('typescript')).default;
  const out = join(here, 'baseline-' + BASE);
  const files = ['model/compile.ts', 'model/skeleton.ts', 'model/parse.ts', 'model/rules.ts', 'kernel/libnftables.ts'];
  for (const f of files) {
    const src = execFileSync('git', ['-C', repoRoot, 'show', `${BASE}:packages/firewall/src/${f}`], { encoding: 'utf8' });
    const js = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } }).outputText;
    mkdirSync(join(out, dirname(f)), { recursive: true });
    writeFileSync(join(out, f.replace(/\.ts$/, '.js')), js);
  }
  const compile = await import(pathToFileURL(join(out, 'model/compile.js')).href);
  const skeleton = await import(pathToFileURL(join(out, 'model/skeleton.js')).href);
  const lib = await import(pathToFileURL(join(out, 'kernel/libnftables.js')).href);
  return { qubeUpdateScript: compile.qubeUpdateScript, firewallSkeleton: skeleton.firewallSkeleton, libNftables: lib.libNftables };
}

/** Child mode, inside the namespace: both paths, alternating; prints the samples. */
async function child(): Promise<void> {
  const old = await loadBaseline();
  const lib = old.libNftables();
  if (!lib || !nftWriterUsesLibrary()) throw new Error('libnftables not available');
  const writer = createNftWriter();
  const others = Array.from({ length: OTHERS }, (_, i) => qube(otherAddr(i)));
  const client = qube(CLIENT);
  const reset = 'add table ip qubes-firewall\ndelete table ip qubes-firewall\nadd table ip6 qubes-firewall\ndelete table ip6 qubes-firewall\n';
  const must = (r: { ok: boolean; error?: string }) => {
    if (!r.ok) throw new Error(`apply failed: ${r.error}`);
  };
  const samples = { loadBefore: [] as number[], loadAfter: [] as number[], oneBefore: [] as number[], oneAfter: [] as number[] };

  const before = {
    async load() {
      must(await lib.apply(reset + old.firewallSkeleton()));
      const t0 = performance.now();
      must(await lib.apply(others.map((q) => old.qubeUpdateScript(q)).join('')));
      return performance.now() - t0;
    },
    async one() {
      const t0 = performance.now();
      must(await lib.apply(old.qubeUpdateScript(client)));
      return performance.now() - t0;
    },
  };
  const after = {
    async load() {
      must(await writer.apply(addFirewallSkeleton(new NftTransaction().destroyTable({ family: 'ip', name: 'qubes-firewall' }).destroyTable({ family: 'ip6', name: 'qubes-firewall' }))));
      const t0 = performance.now();
      const tx = new NftTransaction();
      for (const q of others) addQubeUpdate(tx, q);
      must(await writer.apply(tx));
      return performance.now() - t0;
    },
    async one() {
      const t0 = performance.now();
      must(await writer.apply(addQubeUpdate(new NftTransaction(), client)));
      return performance.now() - t0;
    },
  };
  // Warm-up of both paths, then alternating rounds.
  await before.load();
  await after.load();
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, path] of (r % 2 === 0 ? [['Before', before], ['After', after]] : [['After', after], ['Before', before]]) as [string, typeof before][]) {
      (samples as Record<string, number[]>)[`load${name}`]!.push(await path.load());
      for (let i = 0; i < UPDATES; i++) (samples as Record<string, number[]>)[`one${name}`]!.push(await path.one());
    }
  }
  process.stdout.write(JSON.stringify(samples) + '\n');
}

function report(figure: string, ours: number[], baseline: number[], target: string): void {
  const value = pct(ours, 50);
  const base = pct(baseline, 50);
  process.stdout.write(JSON.stringify({
    bench: 'firewall-apply',
    figure,
    unit: 'ms',
    name: 'after (NftTransaction + NftWriter)',
    value: round2(value),
    p95: round2(pct(ours, 95)),
    n: ours.length,
    baseline: { name: `before (${BASE}: template strings + own libnftables wrapper)`, value: round2(base), p95: round2(pct(baseline, 95)), n: baseline.length },
    ratio: round2(value / base),
    target,
    met: value / base <= 1.1,
  }) + '\n');
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench firewall-apply: needs root (a network namespace); skipped\n');
    return;
  }
  const ns = `qn-kernel-bench-${process.pid}`;
  await runProcess(['ip', 'netns', 'add', ns]);
  try {
    const r = await runProcess([process.execPath, SELF, '--child'], { netns: ns, timeoutMs: 600_000 });
    const s = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number[]>;
    report(`apply one qube, ${OTHERS} others present`, s.oneAfter!, s.oneBefore!, 'no slower than before (ratio <= 1.1)');
    report(`load ${OTHERS} qubes in one transaction`, s.loadAfter!, s.loadBefore!, 'no slower than before (ratio <= 1.1)');
  } finally {
    await runProcess(['ip', 'netns', 'del', ns], { allowFailure: true });
  }
}

if (process.argv.includes('--child')) await child();
else await main();

// Memory of `qubes-net-firewall run` (VmRSS from /proc/<pid>/status), with the unit's
// NODE_OPTIONS (the baseline) and with the V8 flags the guest and driver units use
// (--jitless --max-semi-space-size=1), alone and with MALLOC_ARENA_MAX=2, measured in the same
// run and netvm, configurations alternating round by round:
// - RSS idle (no qube has rules) and spawn → READY time;
// - RSS with 1,000 qubes' rules loaded at start, and spawn → READY time (the load);
// - one qube's update with the 1,000 others present: dom0's marker write → the daemon's
//   feedback in /qubes-firewall-applied/<ip> (a QubesDB watch event), and RSS after them.
// The netvm runs our QubesDB daemon and nothing else: the firewall creates its own tables.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { openQubesDB, type QubesDB } from '@qubes-net/qubesdb';
import type { startQubesDB as StartQubesDB } from '../../test/helpers/qubesdb.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..', '..');
const CLI = join(repoRoot, 'packages', 'firewall', 'dist', 'cli.js');
// The test helpers are not a package: imported from their runtime location (types from source).
const { startQubesDB } = (await import(join(repoRoot, 'test', 'dist', 'helpers', 'qubesdb.js'))) as { startQubesDB: typeof StartQubesDB };

const ROUNDS = Number(process.env.FW_MEM_ROUNDS ?? 2);
const UPDATES = Number(process.env.FW_MEM_UPDATES ?? 20);
const QUBES = 1000;
const SETTLE_MS = 1500;
const UNIT_NODE_OPTIONS = '--max-old-space-size=64';
const FLAGS = `${UNIT_NODE_OPTIONS} --max-semi-space-size=1 --jitless`;
// The first is the baseline. MALLOC_ARENA_MAX=2: libnftables runs on koffi's worker thread,
// whose own glibc malloc arena otherwise keeps what a large transaction allocated.
const CONFIGS: { name: string; nodeOptions: string; env?: Record<string, string> }[] = [
  { name: UNIT_NODE_OPTIONS, nodeOptions: UNIT_NODE_OPTIONS },
  { name: FLAGS, nodeOptions: FLAGS },
  { name: `${FLAGS}, MALLOC_ARENA_MAX=2`, nodeOptions: FLAGS, env: { MALLOC_ARENA_MAX: '2' } },
];
const RULES: Record<string, string> = { policy: 'drop', '0000': 'action=accept proto=icmp', '0001': 'action=accept specialtarget=dns', '0002': 'action=drop proto=tcp dstports=4321-4321', '0003': 'action=accept proto=tcp dstports=1000-2000' };
const RULES_B: Record<string, string> = { ...RULES, '0004': 'action=accept proto=udp dstports=5000-5001' };
const addrOf = (i: number) => `10.137.${100 + Math.floor(i / 250)}.${1 + (i % 250)}`;
const TARGET = addrOf(0);

const round2 = (v: number): number => Math.round(v * 100) / 100;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

function rssOf(pid: number): { rssMB: number; hwmMB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { rssMB: Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024, hwmMB: Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024 };
}

async function writeRules(db: QubesDB, ip: string, rules: Record<string, string>): Promise<void> {
  await db.rm(`/qubes-firewall/${ip}/`);
  for (const [k, v] of Object.entries(rules)) await db.write(`/qubes-firewall/${ip}/${k}`, v);
  await db.write(`/qubes-firewall/${ip}`, '');
}

async function startFirewall(netvm: Qube, nodeOptions: string, env: Record<string, string> = {}): Promise<{ child: ChildProcess; readyMs: number }> {
  const t0 = performance.now();
  const child = netvm.spawn(process.execPath, [CLI, 'run', '--no-hooks'], { env: { ...env, NODE_OPTIONS: nodeOptions }, stdio: ['ignore', 'pipe', 'pipe'] });
  let buf = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('firewall not ready after 120 s')), 120_000);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.includes('"msg":"firewall ready"')) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    child.stderr!.resume();
    child.once('exit', (c) => reject(new Error(`firewall exited ${c}: ${buf.slice(-500)}`)));
  });
  return { child, readyMs: performance.now() - t0 };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** One qube's update: the marker write → the daemon's applied feedback, UPDATES times. */
async function updates(db: QubesDB): Promise<number[]> {
  const watch = db.watch([`/qubes-firewall-applied/${TARGET}`]);
  const it = watch[Symbol.asyncIterator]();
  const out: number[] = [];
  try {
    for (let i = 0; i < UPDATES; i++) {
      const rules = i % 2 ? RULES : RULES_B;
      await db.rm(`/qubes-firewall/${TARGET}/`);
      for (const [k, v] of Object.entries(rules)) await db.write(`/qubes-firewall/${TARGET}/${k}`, v);
      const before = Number(((await db.read(`/qubes-firewall-applied/${TARGET}`)) ?? '0').split(' ')[0]);
      const t0 = performance.now();
      await db.write(`/qubes-firewall/${TARGET}`, '');
      for (;;) {
        const r = await it.next();
        if (r.done) throw new Error('watch ended');
        const gen = Number(((await db.read(`/qubes-firewall-applied/${TARGET}`)) ?? '0').split(' ')[0]);
        if (gen > before) break;
      }
      out.push(performance.now() - t0);
      await sleep(20);
    }
  } finally {
    await watch.close();
  }
  return out;
}

function report(figure: string, unit: string, ours: { name: string; values: number[] }, baseline: { name: string; values: number[] }, target: string, met: boolean | undefined, extra: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({
    bench: 'firewall-memory',
    figure,
    unit,
    name: ours.name,
    value: round2(pct(ours.values, 50)),
    max: round2(Math.max(...ours.values)),
    n: ours.values.length,
    baseline: { name: baseline.name, value: round2(pct(baseline.values, 50)), max: round2(Math.max(...baseline.values)), n: baseline.values.length },
    target,
    ...(met === undefined ? {} : { met }),
    ...extra,
  }) + '\n');
}

async function main(): Promise<void> {
  const session = await NetnsSession.create('fwmem');
  const qdb = await (async () => {
    const netvm = await session.qube('netvm');
    await netvm.exec('ip', ['link', 'set', 'lo', 'up']);
    return { netvm, running: await startQubesDB({ qube: netvm }) };
  })().catch(async (e) => {
    await session.destroy();
    throw e;
  });
  const { netvm } = qdb;
  const db = openQubesDB({ runDir: qdb.running.runDir });
  const m = CONFIGS.map(() => ({ idleRss: [] as number[], idleReady: [] as number[], loadRss: [] as number[], loadReady: [] as number[], updRss: [] as number[], hwm: [] as number[], upd: [] as number[] }));
  try {
    for (const [k, v] of Object.entries({ '/qubes-netvm-gateway': '10.138.0.1', '/connected-ips': '', '/connected-ips6': '', '/qubes-service/qubes-firewall': '1' })) await db.write(k, v);
    // Idle: no qube has rules.
    for (let r = 0; r < ROUNDS; r++) {
      for (const [ci, c] of CONFIGS.entries()) {
        await netvm.exec('nft', ['flush', 'ruleset']);
        const fw = await startFirewall(netvm, c.nodeOptions, c.env);
        await sleep(SETTLE_MS);
        m[ci]!.idleRss.push(rssOf(fw.child.pid!).rssMB);
        m[ci]!.idleReady.push(fw.readyMs);
        await stop(fw.child);
      }
    }
    // 1,000 qubes' rules in QubesDB before the start: the load happens before READY.
    for (let i = 0; i < QUBES; i++) await writeRules(db, addrOf(i), RULES);
    for (let r = 0; r < ROUNDS; r++) {
      for (const [ci, c] of CONFIGS.entries()) {
        await netvm.exec('nft', ['flush', 'ruleset']);
        await db.rm('/qubes-firewall-applied/');
        await db.rm('/qubes-firewall-handled/');
        const fw = await startFirewall(netvm, c.nodeOptions, c.env);
        await sleep(SETTLE_MS);
        m[ci]!.loadRss.push(rssOf(fw.child.pid!).rssMB);
        m[ci]!.loadReady.push(fw.readyMs);
        m[ci]!.upd.push(...(await updates(db)));
        await sleep(SETTLE_MS);
        const after = rssOf(fw.child.pid!);
        m[ci]!.updRss.push(after.rssMB);
        m[ci]!.hwm.push(after.hwmMB);
        await stop(fw.child);
      }
    }
    const b = m[0]!;
    const bn = CONFIGS[0]!.name;
    for (let ci = 1; ci < CONFIGS.length; ci++) {
      const o = m[ci]!;
      const on = CONFIGS[ci]!.name;
      report('RSS idle (no qube has rules)', 'MB', { name: on, values: o.idleRss }, { name: bn, values: b.idleRss }, 'lower than baseline', pct(o.idleRss, 50) < pct(b.idleRss, 50));
      report('RSS, 1,000 qubes loaded', 'MB', { name: on, values: o.loadRss }, { name: bn, values: b.loadRss }, 'lower than baseline', pct(o.loadRss, 50) < pct(b.loadRss, 50));
      report(`RSS, 1,000 qubes after ${UPDATES} updates of one`, 'MB', { name: on, values: o.updRss }, { name: bn, values: b.updRss }, 'lower than baseline', pct(o.updRss, 50) < pct(b.updRss, 50));
      report('peak RSS (VmHWM), 1,000 qubes', 'MB', { name: on, values: o.hwm }, { name: bn, values: b.hwm }, 'informational', undefined);
      report('spawn → READY, no qube', 'ms', { name: on, values: o.idleReady }, { name: bn, values: b.idleReady }, 'informational', undefined);
      report('spawn → READY, 1,000 qubes (includes the load)', 'ms', { name: on, values: o.loadReady }, { name: bn, values: b.loadReady }, 'within 50 % of baseline', pct(o.loadReady, 50) <= 1.5 * pct(b.loadReady, 50),
        { loadOnlyMs: round2(pct(o.loadReady, 50) - pct(o.idleReady, 50)), baselineLoadOnlyMs: round2(pct(b.loadReady, 50) - pct(b.idleReady, 50)) });
      // End to end: includes dom0's marker write, the watch event, the transaction and the
      // feedback writes (the nft transaction alone is in dispatch.bench).
      report('one qube update, 1,000 present (marker write → feedback)', 'ms', { name: on, values: o.upd }, { name: bn, values: b.upd }, 'within 20 % of baseline', pct(o.upd, 50) <= 1.2 * pct(b.upd, 50),
        { p95: round2(pct(o.upd, 95)), baselineP95: round2(pct(b.upd, 95)) });
    }
  } finally {
    await db.close().catch(() => undefined);
    await qdb.running.stop().catch(() => undefined);
    await session.destroy();
  }
}

await main();

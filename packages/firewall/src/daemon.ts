// `qubes-net-firewall run`: the long-running daemon.
//
// Order at start, so nothing forwards unfiltered: our tables (policy drop) first, then the user
// hooks, then QubesDB's watch (registered before the initial read so no change is missed), then
// every qube's rules, then READY=1. SIGHUP reloads; SIGTERM stops and leaves every rule in
// force (a stop must never open traffic); a crash leaves them too.
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { existsSync, watch as fsWatch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { sdNotify, forLog, type Logger } from '@qubes-net/common';
import { runProcess } from '@qubes-net/common/kernel';
import type { QubesDB, OpenOptions } from '@qubes-net/qubesdb';
import { openOffLoopQubesDB } from './qubesdb-offloop.js';
import { FirewallEngine, WATCH_PATHS, type EngineStatus } from './engine.js';
import { ensureFirewallTables } from './kernel/tables.js';
import { firewallNftWriter } from './kernel/nft.js';
import { readResolvConf, resolveHost, type ResolveOptions, DEFAULT_RESOLVE } from './kernel/dns.js';
import { realKernel } from './kernel/port.js';
import { runHooks, DEFAULT_HOOK_PATHS, type HookPaths } from './hooks.js';
import { DEFAULT_REFRESH, type RefreshBounds } from './model/refresh.js';

export const DEFAULT_PIDFILE = '/run/qubes-net/firewall.pid';
export const DEFAULT_STATUS_FILE = '/run/qubes-net/firewall-status.json';
export const DEFAULT_RESOLV_CONF = '/etc/resolv.conf';
/** Upstream's flag file for the custom-persist service (also read from QubesDB). */
export const CUSTOM_PERSIST_FILE = '/run/qubes-service/custom-persist';
export const CUSTOM_PERSIST_KEY = '/qubes-service/custom-persist';

export interface DaemonOptions {
  log: Logger;
  pidfile: string;
  statusFile: string;
  resolvConf: string;
  /** undefined: do not run user hooks (tests). */
  hooks: HookPaths | undefined;
  customPersistFile: string;
  qubesdb: OpenOptions;
  resolve: ResolveOptions;
  refresh: RefreshBounds;
  /** Spawn `nft -f` for every change instead of using libnftables in-process. */
  nftBinary?: boolean;
  /** How long each user hook may run before its process group is killed. */
  hookWaitMs?: number;
  /** See EngineOptions.writingTimeoutMs. */
  writingTimeoutMs?: number;
  /** For tests: an already open QubesDB instead of openQubesDB(qubesdb). */
  db?: QubesDB;
}

export function defaultDaemonOptions(log: Logger): DaemonOptions {
  return {
    log,
    pidfile: DEFAULT_PIDFILE,
    statusFile: DEFAULT_STATUS_FILE,
    resolvConf: DEFAULT_RESOLV_CONF,
    hooks: DEFAULT_HOOK_PATHS,
    customPersistFile: CUSTOM_PERSIST_FILE,
    qubesdb: {},
    resolve: DEFAULT_RESOLVE,
    refresh: DEFAULT_REFRESH,
  };
}

export interface StatusFile extends EngineStatus {
  pid: number;
  startedAt: string;
  ready: boolean;
  writtenAt: string;
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

async function customPersistEnabled(db: QubesDB, file: string, log: Logger): Promise<boolean> {
  if (existsSync(file)) return true;
  try {
    return (await db.read(CUSTOM_PERSIST_KEY)) === '1';
  } catch (e) {
    log.warn({ key: CUSTOM_PERSIST_KEY, err: forLog((e as Error).message) }, 'cannot read service flag');
    return false;
  }
}

/** Calls `changed` (debounced) whenever resolv.conf may have changed. */
export function watchResolvConf(path: string, log: Logger, changed: () => void): { close(): void } {
  const name = basename(path);
  let dirWatcher: FSWatcher | undefined;
  let fileWatcher: FSWatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const fire = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      armFile();
      changed();
    }, 100);
  };
  // The file watch follows an inode: after a replacement it must be set up again.
  const armFile = () => {
    fileWatcher?.close();
    fileWatcher = undefined;
    if (closed) return;
    try {
      fileWatcher = fsWatch(path, fire);
      fileWatcher.on('error', () => undefined);
    } catch {
      /* missing for now: the directory watch sees it appear */
    }
  };
  try {
    dirWatcher = fsWatch(dirname(path), (_event, file) => {
      if (file === null || file === name) fire();
    });
    dirWatcher.on('error', (e) => log.warn({ file: path, err: forLog(e.message) }, 'resolv.conf watch failed'));
  } catch (e) {
    log.warn({ file: path, err: forLog((e as Error).message) }, 'cannot watch resolv.conf; SIGHUP still reloads');
  }
  armFile();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      dirWatcher?.close();
      fileWatcher?.close();
    },
  };
}

/** Runs until SIGTERM/SIGINT; resolves with the exit code. */
export async function runDaemon(opts: DaemonOptions): Promise<number> {
  const { log } = opts;
  const startedAt = new Date();
  let statusTimer: NodeJS.Timeout | undefined;

  const nft = await runProcess(['nft', '--version'], { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
  if (!nft || nft.exitCode !== 0) {
    log.fatal('nft not found: the firewall needs nftables');
    return 1;
  }
  // Fail closed before anything else: the forward policy drop exists from here on. The
  // chains are complete before the user's hooks run, as upstream's init makes them.
  const skel = await ensureFirewallTables(firewallNftWriter(opts.nftBinary ? { noLibrary: true } : {}));
  if (!skel.ok) {
    log.fatal({ error: forLog(skel.error, 1000) }, 'cannot create the firewall tables');
    return 1;
  }
  log.info({ forwardBuilt: skel.built }, 'firewall tables in place');

  await mkdir(dirname(opts.pidfile), { recursive: true });
  await writeFile(opts.pidfile, `${process.pid}\n`);

  // Calls on a worker thread: a QubesDB daemon that stops answering must not freeze the loop.
  const db = opts.db ?? (await openOffLoopQubesDB(opts.qubesdb));
  if (opts.hooks) await runHooks(opts.hooks, await customPersistEnabled(db, opts.customPersistFile, log), log, opts.hookWaitMs);

  const kernel = realKernel(opts.nftBinary ? { nftBinary: true } : {});
  log.info({ applier: kernel.applier }, 'nft transactions via ' + kernel.applier);
  const engine = new FirewallEngine({
    db,
    log,
    kernel,
    resolve: (host, family, servers) => resolveHost(host, family, servers, opts.resolve),
    readDnsServers: async () => {
      const r = await readResolvConf(opts.resolvConf);
      if (r.error) log.warn({ file: opts.resolvConf, err: r.error }, 'cannot read resolv.conf');
      return r.servers;
    },
    refresh: opts.refresh,
    ...(opts.writingTimeoutMs !== undefined ? { writingTimeoutMs: opts.writingTimeoutMs } : {}),
    onSettled: () => statusSoon(),
  });

  let ready = false;
  const writeStatus = async () => {
    const st: StatusFile = { pid: process.pid, startedAt: startedAt.toISOString(), ready, writtenAt: new Date().toISOString(), ...engine.status() };
    await writeAtomic(opts.statusFile, JSON.stringify(st) + '\n').catch((e) => log.warn({ file: opts.statusFile, err: forLog((e as Error).message) }, 'cannot write status file'));
  };
  function statusSoon(): void {
    if (statusTimer || !ready) return;
    statusTimer = setTimeout(() => {
      statusTimer = undefined;
      void writeStatus();
    }, 200);
  }

  // Watch before the initial read: a change made in between is then seen, not lost.
  const watch = db.watch(WATCH_PATHS);
  const watchLoop = (async () => {
    for await (const path of watch) {
      engine.onWatchEvent(path);
      statusSoon();
    }
  })().catch((e) => log.error({ err: forLog((e as Error).message) }, 'qubesdb watch ended'));

  // resolv.conf is often replaced by rename (seen only by a watch on its directory) and
  // sometimes rewritten in place or bind-mounted (seen only by a watch on the file itself).
  const dnsWatch = watchResolvConf(opts.resolvConf, log, () => {
    engine.dnsMaybeChanged();
    statusSoon();
  });

  let stopping: (() => void) | undefined;
  const stopped = new Promise<void>((r) => (stopping = r));
  let reloading = Promise.resolve();
  const onHup = () => {
    reloading = reloading.then(async () => {
      sdNotify(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`);
      log.info('reload requested');
      await engine.reload();
      await writeStatus();
      sdNotify('READY=1');
      log.info('reload done');
    });
  };
  const onTerm = (sig: string) => {
    log.info({ signal: sig }, 'stopping; rules stay in force');
    stopping!();
  };
  process.on('SIGHUP', onHup);
  process.on('SIGTERM', () => onTerm('SIGTERM'));
  process.on('SIGINT', () => onTerm('SIGINT'));

  await engine.start();
  ready = true;
  await writeStatus();
  sdNotify('READY=1');
  log.info({ qubes: engine.status().qubes.length }, 'firewall ready');

  await stopped;
  process.off('SIGHUP', onHup);
  dnsWatch.close();
  clearTimeout(statusTimer);
  await reloading.catch(() => undefined);
  await engine.stop();
  await watch.close();
  await watchLoop;
  ready = false;
  await writeStatus();
  if (!opts.db) await db.close();
  // Remove the pidfile only if it is still ours.
  try {
    if ((await readFile(opts.pidfile, 'utf8')).trim() === String(process.pid)) await unlink(opts.pidfile);
  } catch {
    /* already gone */
  }
  sdNotify('STOPPING=1');
  return 0;
}

#!/usr/bin/env node
// qubes-net-guest: configures this qube's uplink from QubesDB. Each mode imports only what it
// needs, and the slow imports (logger, FFI) overlap with the first `ip` read, because `apply`
// runs on every boot and every netvm change and should be as quick as upstream's script.
import { createLineLogger, type LogLike as Logger } from '@qubes-net/common/line-log';
import type { QubesDB } from '@qubes-net/qubesdb/api';
import { DEFAULT_PATHS, type AgentPaths } from './apply.js';
import { DEFAULT_NM_PATHS } from './network-manager/nmcli.js';
import { DEFAULT_CONTROL_SOCKET } from './control/protocol.js';
import { EXIT } from './exit-codes.js';
import { packageVersion } from '@qubes-net/common/version';
import { parseIfname } from './model/uplink.js';
import * as WATCH_ARGS from './model/watch-args.js';

const HELP = `Usage: qubes-net-guest <command> [IFACE] [options]

Configures the uplink from QubesDB: addresses, permanent gateway neighbours, group 1 and
up, gateway and default routes, resolv.conf. Only what this agent added is ever removed.
The uplink is a Xen frontend (sysfs driver vif, not the backend MAC fe:ff:ff:ff:ff:ff): the
one whose MAC is /qubes-mac, else eth0; QUBES_NET_UPLINK_DRIVERS=vif,none widens the driver
set (none: links without a device, such as the lab's veths).

Commands:
  apply [IFACE]          configure once and exit: the one-shot the udev-started uplink unit
                         and qubes-net-watch run. Concurrent applies and removes wait for
                         each other.
  remove IFACE           take the link down and remove what this agent configured on it
  watch-args IFACE [--cli PATH] [--run-at-start] [--json]
                         print the qubes-net-watch arguments that keep IFACE applied (the
                         QubesDB keys, the link, and --run -- CLI apply IFACE), one per line
                         or as a JSON array; --cli is the command it runs (default
                         /usr/bin/qubes-net-guest; a .js/.cjs/.mjs file runs with this node)
  run [IFACE]            DEPRECATED (qubes-net-watch + apply replace it): stay up, apply now
                         and on every relevant QubesDB change and link event. While it
                         answers on the control socket, apply and remove hand it the work.
  status [IFACE] [--json]
                         show what is configured and whether it matches QubesDB

Options:
  --resolv-conf PATH     resolv.conf to manage (default /etc/resolv.conf)
  --qubesdb-run-dir DIR  directory of the QubesDB sockets (default /var/run/qubes)
  --state-dir DIR        record of the addresses we added (default /run/qubes-net)
  --driver-socket PATH   driver agent control socket (default /run/qubes-net/driver.sock)
  --control-socket PATH  the guest daemon's control socket (default /run/qubes-net/guest.sock):
                         run listens there; apply and remove send their request there first
                         (as qubes-net-uplink does), so the uplink never has two writers
  --no-daemon            apply, remove: do the work in this process, without asking a
                         daemon (qubes-net-uplink passes it when it runs this CLI because
                         no daemon answered)
  --debounce-ms N        run: quiet time after an event before applying (default 10)
  --nmcli PATH           nmcli of a qube with the network-manager service (default
                         /usr/bin/nmcli; absent = the uplink is configured directly)
  --nm-connections-dir DIR
                         NetworkManager's keyfile directory (default
                         /etc/NetworkManager/system-connections)
  --json                 status: print JSON
  --version              print the version
  -h, --help             this text

Exit codes of apply (remove and run use 3, 4 and 64 the same way):
  0   configured as QubesDB says, or nothing to configure (no /qubes-ip)
  2   QubesDB holds an invalid value (logged with key and value); the uplink is left
      without our addresses and down until the value is corrected
  3   the interface does not exist, the kernel refused a change, or resolv.conf
      could not be written
  4   QubesDB is not reachable
  64  usage error
status exits 0 when the kernel matches QubesDB, 1 when it does not (4, 64 as above).
run exits 3 when another daemon answers on the control socket.

While run is up, qubes-net-uplink apply|remove IFACE (the udev-started uplink unit) has the
daemon do the work and exits with the code above, without starting Node; with no daemon it
runs this CLI (with --no-daemon).

Logs: pino JSON lines on stdout (QUBES_NET_LOG_LEVEL=debug for more).
`;

interface Args {
  command: string;
  iface?: string;
  json: boolean;
  runDir?: string;
  cli?: string;
  runAtStart: boolean;
  /** apply's options as given, for watch-args to pass on. */
  applyArgs: string[];
  debounceMs?: number;
  controlSocket: string;
  noDaemon: boolean;
  paths: AgentPaths;
}

function usage(msg: string): never {
  process.stderr.write(`qubes-net-guest: ${msg}\n(see qubes-net-guest --help)\n`);
  process.exit(EXIT.usage);
}

function parseArgs(argv: string[]): Args {
  const paths: AgentPaths = { ...DEFAULT_PATHS };
  const positional: string[] = [];
  let json = false;
  let noDaemon = false;
  let runAtStart = false;
  let cli: string | undefined;
  const applyArgs: string[] = [];
  let runDir: string | undefined;
  let debounceMs: number | undefined;
  let controlSocket = DEFAULT_CONTROL_SOCKET;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) usage(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '-h': case '--help': process.stdout.write(HELP); process.exit(0);
      // eslint-disable-next-line no-fallthrough
      case '--version': process.stdout.write(`qubes-net-guest ${packageVersion(import.meta.url)}\n`); process.exit(0);
      // eslint-disable-next-line no-fallthrough
      case '--json': json = true; break;
      case '--no-daemon': noDaemon = true; break;
      case '--run-at-start': runAtStart = true; break;
      case '--cli': cli = value(); break;
      case '--resolv-conf': paths.resolvConf = value(); applyArgs.push(a, paths.resolvConf); break;
      case '--qubesdb-run-dir': runDir = value(); break;
      case '--state-dir': paths.stateDir = value(); applyArgs.push(a, paths.stateDir); break;
      case '--driver-socket': paths.driverSocket = value(); applyArgs.push(a, paths.driverSocket); break;
      case '--control-socket': controlSocket = value(); applyArgs.push(a, controlSocket); break;
      case '--nmcli': paths.networkManager = { ...(paths.networkManager ?? DEFAULT_NM_PATHS), nmcli: value() }; applyArgs.push(a, paths.networkManager.nmcli); break;
      case '--nm-connections-dir': paths.networkManager = { ...(paths.networkManager ?? DEFAULT_NM_PATHS), connectionsDir: value() }; applyArgs.push(a, paths.networkManager.connectionsDir); break;
      case '--debounce-ms': {
        const v = value();
        if (!/^\d{1,5}$/.test(v)) usage(`--debounce-ms wants milliseconds, got ${JSON.stringify(v)}`);
        debounceMs = Number(v);
        break;
      }
      default:
        if (a.startsWith('-')) usage(`unknown option ${a}`);
        positional.push(a);
    }
  }
  const [command, iface, ...extra] = positional;
  if (!command) usage('a command is needed');
  if (!['apply', 'remove', 'run', 'status', 'watch-args'].includes(command)) usage(`unknown command ${JSON.stringify(command)}`);
  if (extra.length) usage(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (iface !== undefined && !parseIfname(iface)) usage(`not an interface name: ${JSON.stringify(iface.slice(0, 40))}`);
  if ((command === 'remove' || command === 'watch-args') && iface === undefined) usage(`${command} needs the interface`);
  if (noDaemon) applyArgs.push('--no-daemon');
  for (const v of [cli, ...applyArgs, runDir]) {
    if (v !== undefined && (v === '' || /[\0-\x1f]/.test(v))) usage('option values must be non-empty, without control characters');
  }
  if ((cli !== undefined || runAtStart) && command !== 'watch-args') usage('--cli and --run-at-start are for watch-args');
  if (noDaemon && command !== 'apply' && command !== 'remove' && command !== 'watch-args') usage('--no-daemon is for apply and remove');
  const args: Args = { command, json, paths, controlSocket, noDaemon, runAtStart, applyArgs };
  if (cli !== undefined) args.cli = cli;
  if (iface !== undefined) args.iface = iface;
  if (runDir !== undefined) args.runDir = runDir;
  if (debounceMs !== undefined) args.debounceMs = debounceMs;
  return args;
}

// The one-shot modes log through the line logger (pino's line shape, without loading pino) and
// reach QubesDB through the pure-JS socket client; only the deprecated daemon loads pino and koffi.
async function logger(level?: 'warn'): Promise<Logger> {
  return createLineLogger('guest-agent', level ? { level } : {});
}

async function openOrExit(args: Args, log: Logger) {
  const { openSocketDb } = await import('./qubesdb-open.js');
  try {
    return await openSocketDb(args.runDir);
  } catch (err) {
    log.error({ error: (err as Error).message, runDir: args.runDir }, 'qubesdb not reachable');
    process.exit(EXIT.qubesdb);
  }
}

/** The qube's name from QubesDB (/name) as a log field, so merged logs (the lab) say whose. */
async function withQubeName<L extends Logger>(db: QubesDB, log: L): Promise<L> {
  const name = await db.read('/name').catch(() => undefined);
  return name !== undefined && /^[A-Za-z][A-Za-z0-9_.-]{0,31}$/.test(name) ? log.child({ qube: name }) as L : log;
}

/**
 * apply/remove started directly: a running daemon does the work (one writer per uplink), as for
 * qubes-net-uplink. The exit code of its reply, or undefined when no daemon answers (or
 * --no-daemon): then this process does the work. Without a daemon this costs one connect().
 * The daemon itself never comes here (run serves requests in-process).
 */
async function viaDaemon(args: Args, logP: Promise<Logger>): Promise<number | undefined> {
  if (args.noDaemon) return undefined;
  const { askDaemon } = await import('./control/client.js');
  const req = args.command === 'remove'
    ? { op: 'remove' as const, iface: args.iface! }
    : { op: 'apply' as const, ...(args.iface ? { iface: args.iface } : {}) };
  const out = await askDaemon(args.controlSocket, req);
  if (out.kind === 'no-daemon') {
    // Not waited for: the cold path goes on (its kernel read overlaps the logger load).
    void logP.then((log) => log.debug({ socket: args.controlSocket, reason: out.reason }, 'no guest daemon, working in this process'));
    return undefined;
  }
  const log = await logP;
  if (out.kind === 'failed') {
    log.error({ op: req.op, socket: args.controlSocket, error: out.error }, 'guest daemon did not answer the request');
    return EXIT.kernel;
  }
  const { ok, exitCode, ...rest } = out.reply;
  const fields = { op: req.op, socket: args.controlSocket, ...rest, exitCode };
  if (!ok) log.error(fields, 'the guest daemon refused the request');
  else if (exitCode !== EXIT.ok) log.error(fields, 'served by the guest daemon');
  else log.info(fields, 'served by the guest daemon');
  return exitCode;
}

/** One apply/remove at a time in this network namespace; held until the process exits. */
async function holdLock(logP: Promise<Logger>): Promise<void> {
  const { acquireApplyLock } = await import('./kernel/apply-lock.js');
  try {
    const lock = await acquireApplyLock();
    if (lock.waitedMs > 0) void logP.then((log) => log.debug({ waitedMs: lock.waitedMs }, 'waited for another apply'));
  } catch (err) {
    const e = err as Error & { code?: string; holderPid?: number; waitedMs?: number };
    (await logP).error({ error: e.message, code: e.code, holderPid: e.holderPid, waitedMs: e.waitedMs }, 'apply lock not acquired');
    process.exit(EXIT.kernel);
  }
}

function watchArgsCommand(args: Args): number {
  const cli = args.cli ?? '/usr/bin/qubes-net-guest';
  const { watchArgs } = WATCH_ARGS;
  const out = watchArgs(args.iface!, {
    cli: /\.(c|m)?js$/.test(cli) ? [process.execPath, cli] : [cli],
    runAtStart: args.runAtStart,
    applyArgs: args.applyArgs,
    ...(args.runDir !== undefined ? { qubesdbRunDir: args.runDir } : {}),
    ...(args.debounceMs !== undefined ? { debounceMs: args.debounceMs } : {}),
  });
  process.stdout.write(args.json ? JSON.stringify(out) + '\n' : out.join('\n') + '\n');
  return 0;
}

async function apply(args: Args): Promise<number> {
  const logP = logger();
  const served = await viaDaemon(args, logP);
  if (served !== undefined) return served;
  await holdLock(logP);
  // The kernel read runs in `ip` while this process loads the logger and the FFI client.
  const { readKernelState } = await import('./kernel/ip.js');
  const stateP = readKernelState();
  stateP.catch(() => undefined);
  const { applyOnce, runProviderHooks } = await import('./apply.js');
  const { generationCounter } = await import('./model/feedback.js');
  const db = await openOrExit(args, await logP);
  const log = await withQubeName(db, await logP);
  const ctx = { db, log, paths: args.paths, generation: generationCounter(), ...(args.iface ? { iface: args.iface } : {}) };
  const res = await applyOnce(ctx, stateP);
  // Upstream runs the provider hooks after every `setup-ip add`.
  if (res.providesNetwork && res.linkPresent) await runProviderHooks(args.paths, log);
  await db.close().catch(() => undefined);
  return res.exitCode;
}

async function remove(args: Args): Promise<number> {
  const logP = logger();
  const served = await viaDaemon(args, logP);
  if (served !== undefined) return served;
  await holdLock(logP);
  const log = await logP;
  const { removeUplink } = await import('./remove.js');
  const res = await removeUplink(args.iface!, args.paths, log);
  // Best effort feedback: at shutdown QubesDB may already be gone.
  try {
    const { openSocketDb } = await import('./qubesdb-open.js');
    const db = await openSocketDb(args.runDir);
    const { formatUplinkStatus, generationCounter } = await import('./model/feedback.js');
    const { KEY } = await import('./model/keys.js');
    await db.write(KEY.uplinkStatus, formatUplinkStatus(generationCounter()(), 'unconfigured', `${res.ifname} removed`));
    await db.close();
  } catch (err) {
    log.debug({ error: (err as Error).message }, 'no qubesdb feedback after remove');
  }
  return res.ok ? EXIT.ok : EXIT.kernel;
}

async function status(args: Args): Promise<number> {
  // stdout carries the report: only warnings and errors are logged (unless asked for more).
  const log = await logger('warn');
  const db = await openOrExit(args, log);
  const { collectStatus, formatStatusText } = await import('./status.js');
  const report = await collectStatus(db, args.paths, args.iface);
  await db.close().catch(() => undefined);
  process.stdout.write(args.json ? JSON.stringify(report) + '\n' : formatStatusText(report));
  return report.matches ? 0 : 1;
}

async function runDaemon(args: Args): Promise<void> {
  const { createLogger } = await import('@qubes-net/common/log');
  const log = createLogger('guest-agent');
  log.warn({ replacement: 'qubes-net-watch $(qubes-net-guest watch-args IFACE)' }, 'qubes-net-guest run is deprecated');
  const { openDb } = await import('./qubesdb-open.js');
  const { GuestDaemon, DaemonStoppingError } = await import('./daemon.js');
  const { ControlServer } = await import('./control/server.js');
  // QubesDB may start after us at boot: wait for it instead of failing the unit.
  let db;
  for (let delay = 100; ; delay = Math.min(delay * 2, 5000)) {
    try {
      db = await openDb(args.runDir, log);
      break;
    } catch (err) {
      log.error({ error: (err as Error).message, retryInMs: delay }, 'qubesdb not reachable, retrying');
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  const qlog = await withQubeName(db, log);
  const daemon = new GuestDaemon({
    db,
    log: qlog,
    paths: args.paths,
    ...(args.iface ? { iface: args.iface } : {}),
    ...(args.debounceMs !== undefined ? { debounceMs: args.debounceMs } : {}),
    onReady: () => {
      if (!process.env.NOTIFY_SOCKET) return;
      void import('@qubes-net/common/sd-notify')
        .then((m) => m.sdNotify('READY=1'))
        .catch((err: Error) => log.warn({ error: err.message }, 'sd_notify failed'));
    },
  });
  const control = new ControlServer(args.controlSocket, async (req) => {
    try {
      if (req.op === 'status') return { ok: true, pid: process.pid, ...daemon.status() };
      const outcome = req.op === 'apply' ? await daemon.requestApply(req.iface) : await daemon.requestRemove(req.iface);
      qlog.info({ op: req.op, ...outcome }, 'control request served');
      return { ok: true, ...outcome };
    } catch (err) {
      if (err instanceof DaemonStoppingError) return undefined; // the client runs the CLI instead
      throw err;
    }
  }, qlog);
  // Listening before the first pass: an uplink event at boot is then served by this daemon
  // instead of a second process configuring the same link at the same time.
  try {
    await control.listen();
  } catch (err) {
    if (/another guest daemon/.test((err as Error).message)) {
      qlog.error({ socket: args.controlSocket, error: (err as Error).message }, 'another guest daemon is running');
      await db.close().catch(() => undefined);
      process.exit(EXIT.kernel);
    }
    qlog.error({ socket: args.controlSocket, error: (err as Error).message }, 'control socket unavailable, uplink events will start the CLI');
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    qlog.info({ signal }, 'stopping');
    void daemon.stop().then(() => control.close()).then(() => db.close()).finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  await daemon.start();
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  switch (args.command) {
    case 'apply': process.exit(await apply(args));
    // eslint-disable-next-line no-fallthrough
    case 'remove': process.exit(await remove(args));
    // eslint-disable-next-line no-fallthrough
    case 'status': process.exit(await status(args));
    // eslint-disable-next-line no-fallthrough
    case 'watch-args': process.exit(watchArgsCommand(args));
    // eslint-disable-next-line no-fallthrough
    case 'run': await runDaemon(args); break;
  }
}

main().catch((err: Error) => {
  process.stdout.write(JSON.stringify({ level: 50, time: Date.now(), pid: process.pid, component: 'guest-agent', msg: 'qubes-net-guest failed', error: err.message, stack: err.stack }) + '\n');
  process.exit(EXIT.kernel);
});

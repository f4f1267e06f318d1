// `qubes-net-qdb daemon [--run-dir DIR] [--name NAME] [--rw-socket-perms OCTAL] [--ready-fd N]
// [limit flags]`:
// runs the QubesDB daemon until SIGTERM/SIGINT. Readiness (both sockets listening) is told
// three ways: "ready\n" on --ready-fd, sd_notify READY=1, and a `ready` log event.
import { closeSync, writeSync } from 'node:fs';
import { pino, type LevelWithSilent } from 'pino';
import { shorten as forLog } from './daemon/logging.js';
import { DEFAULT_RUN_DIR, QubesDBDaemon, isValidDaemonName, resolveLimits, type DaemonLimits } from './daemon/index.js';

/**
 * Same logger as common's createLogger, built here so the daemon does not load common's
 * index (execa, koffi) and stays within its memory budget.
 */
function daemonLogger(): pino.Logger {
  const level = (process.env.QUBES_NET_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info';
  return pino({ level, base: { component: 'qubesdb-daemon', pid: process.pid } });
}

/** sd_notify through common's helper, loaded only under systemd (NOTIFY_SOCKET set). */
async function notifySystemd(state: string): Promise<boolean> {
  if (!process.env.NOTIFY_SOCKET) return false;
  const { sdNotify } = await import('@qubes-net/common');
  return sdNotify(state);
}

export interface DaemonCliOptions {
  runDir: string;
  name?: string;
  rwSocketPerms?: number;
  readyFd?: number;
  /** Only the limits given on the command line; the daemon fills in DEFAULT_LIMITS. */
  limits?: Partial<DaemonLimits>;
}

/** Limit flags (docs/contracts.md, "QubesDB daemon limits"): non-negative integers. */
const LIMIT_FLAGS: Record<string, keyof DaemonLimits> = {
  '--max-clients': 'maxClients',
  '--rw-reserved-slots': 'rwReservedSlots',
  '--max-watches': 'maxWatchesPerClient',
  '--max-read-only-watches': 'maxReadOnlyWatches',
  '--idle-timeout-ms': 'idleTimeoutMs',
  '--partial-timeout-ms': 'partialTimeoutMs',
  '--max-client-output': 'maxClientOutput',
  '--max-total-output': 'maxTotalOutput',
};

const USAGE =
  'usage: qubes-net-qdb daemon [--run-dir DIR] [--name NAME] [--rw-socket-perms OCTAL] [--ready-fd N]\n' +
  '  [--max-clients N] [--rw-reserved-slots N] [--max-watches N] [--max-read-only-watches N] [--idle-timeout-ms MS] [--partial-timeout-ms MS]\n' +
  '  [--max-client-output BYTES] [--max-total-output BYTES] [0 [NAME]]';

/**
 * Parses the daemon's arguments (those after the word "daemon"). Accepts `--opt VALUE` and
 * `--opt=VALUE`, and upstream's positional form `<remote-domid> [<remote-name>]` where the
 * domid must be 0 (there is no vchan here).
 */
export function parseDaemonArgs(argv: readonly string[]): DaemonCliOptions {
  const opts: DaemonCliOptions = { runDir: DEFAULT_RUN_DIR };
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const key = eq === -1 ? arg : arg.slice(0, eq);
    const value = (): string => {
      if (eq !== -1) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new Error(`${key} needs a value`);
      return v;
    };
    switch (key) {
      case '--run-dir': {
        const v = value();
        if (!v) throw new Error('--run-dir must not be empty');
        opts.runDir = v;
        break;
      }
      case '--name':
        opts.name = value();
        break;
      case '--rw-socket-perms': {
        const v = value();
        if (!/^[0-7]{1,4}$/.test(v) || parseInt(v, 8) > 0o777) throw new Error(`--rw-socket-perms must be octal ≤ 0777, got ${forLog(v)}`);
        opts.rwSocketPerms = parseInt(v, 8);
        break;
      }
      case '--ready-fd': {
        const v = value();
        if (!/^\d{1,9}$/.test(v)) throw new Error(`--ready-fd must be a file descriptor number, got ${forLog(v)}`);
        opts.readyFd = Number(v);
        break;
      }
      case '--help':
        throw new Error(USAGE);
      default: {
        const limit = LIMIT_FLAGS[key];
        if (limit === undefined) throw new Error(`unknown option ${forLog(arg)}`);
        const v = value();
        if (!/^\d{1,12}$/.test(v)) throw new Error(`${key} must be a non-negative integer, got ${forLog(v)}`);
        (opts.limits ??= {})[limit] = Number(v);
      }
    }
  }
  if (positional.length > 2) throw new Error(`too many arguments`);
  if (positional.length >= 1 && positional[0] !== '0') throw new Error(`remote domid ${forLog(positional[0])} is not supported (no vchan): only 0`);
  if (positional.length === 2) {
    if (opts.name !== undefined && opts.name !== positional[1]) throw new Error('name given twice');
    opts.name = positional[1];
  }
  if (opts.name !== undefined && !isValidDaemonName(opts.name)) throw new Error(`invalid name ${forLog(opts.name)}`);
  if (opts.limits) resolveLimits(opts.limits); // throws on a combination that makes no sense
  return opts;
}

/** Runs the daemon; resolves with the exit code once it stopped (on SIGTERM/SIGINT). */
export async function runDaemonCli(argv: string[]): Promise<number> {
  const log = daemonLogger();
  let opts: DaemonCliOptions;
  try {
    opts = parseDaemonArgs(argv);
  } catch (err) {
    log.error({ args: argv.map((a) => forLog(a)) }, (err as Error).message);
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const daemon = new QubesDBDaemon({ runDir: opts.runDir, name: opts.name, rwSocketPerms: opts.rwSocketPerms, limits: opts.limits, logger: log });
  try {
    await daemon.start();
  } catch (err) {
    log.error({ err, runDir: opts.runDir }, 'cannot start');
    return 1;
  }

  const stopped = new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping');
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      daemon.stop().then(
        () => resolve(0),
        (err) => {
          log.error({ err }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });

  if (opts.readyFd !== undefined) {
    try {
      writeSync(opts.readyFd, 'ready\n');
      closeSync(opts.readyFd);
    } catch (err) {
      log.warn({ err, fd: opts.readyFd }, 'cannot write readiness to --ready-fd');
    }
  }
  try {
    await notifySystemd('READY=1');
  } catch (err) {
    log.warn({ err }, 'cannot notify systemd');
  }
  log.info({ socket: daemon.socketPath, roSocket: daemon.roSocketPath, limits: daemon.limits }, 'ready');
  const code = await stopped;
  log.info({ code }, 'stopped');
  return code;
}

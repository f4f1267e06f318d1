// A desktop alert when a qube's rules cannot be applied as written (bad rules, a name that did
// not resolve, nft refusing them), as upstream does: `notify-send` run as the user QubesDB's
// `/default-user` names, on display :0 with that user's session bus. Fire and forget: the
// engine never waits on it; one notification runs at a time, under a time limit, and a burst
// (1,000 qubes blocked at start) becomes a few alerts and one summary, not 1,000 processes.
import { access, constants, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { forLog, type Logger } from '@qubes-net/common';
import { runProcess, type ProcessOptions, type ProcessResult } from '@qubes-net/common/kernel';

export interface Alert {
  ip: string;
  outcome: 'blocked' | 'partial';
  /** Why, in a few words (the first reason). */
  reason: string;
}

/** Where the engine sends alerts; it never awaits the result. */
export type AlertSink = (alert: Alert) => void;

export interface DesktopNotifierOptions {
  db: { read(path: string): Promise<string | undefined> };
  log: Logger;
  /** Limit per notification (runuser + notify-send), then its process group is killed. */
  timeoutMs?: number;
  /** PATH given to runuser and notify-send (upstream uses the system directories). */
  path?: string;
  /** For resolving the user's uid (its session bus is /run/user/<uid>/bus). */
  passwdFile?: string;
  /** Alerts waiting beyond this many are counted and summed up in one last alert. */
  maxQueued?: number;
  /** Run as root (runuser -u USER) or as ourselves; default: from our uid. */
  asRoot?: boolean;
  /** For tests. */
  run?: (argv: readonly string[], opts: ProcessOptions) => Promise<ProcessResult>;
}

export const DEFAULT_USER_KEY = '/default-user';
const DEFAULT_USER = 'user';
const FALLBACK_UID = 1000;
const SYSTEM_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
// A POSIX-ish login name: what runuser would accept, nothing that could look like an option.
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

/** The text shown: one line, no control characters, bounded. */
export function alertText(a: Alert): string {
  const what = a.outcome === 'blocked' ? `traffic from ${a.ip} is blocked` : `some rules for ${a.ip} are not in force`;
  return `Qubes firewall: ${what} (${forLog(a.reason, 200)})`;
}

async function uidOf(user: string, passwdFile: string): Promise<number | undefined> {
  try {
    for (const line of (await readFile(passwdFile, 'utf8')).split('\n')) {
      const f = line.split(':');
      if (f[0] === user && f[2] !== undefined && /^\d{1,10}$/.test(f[2])) return Number(f[2]);
    }
  } catch {
    /* unreadable: the fallback uid */
  }
  return undefined;
}

async function onPath(name: string, path: string): Promise<boolean> {
  for (const dir of path.split(':')) {
    if (!dir) continue;
    try {
      await access(join(dir, name), constants.X_OK);
      return true;
    } catch {
      /* next */
    }
  }
  return false;
}

export interface DesktopNotifier extends AlertSink {
  /** Resolves when nothing is queued or running (tests, shutdown). */
  idle(): Promise<void>;
}

export function createDesktopNotifier(opts: DesktopNotifierOptions): DesktopNotifier {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const path = opts.path ?? SYSTEM_PATH;
  const passwdFile = opts.passwdFile ?? '/etc/passwd';
  const maxQueued = opts.maxQueued ?? 5;
  const asRoot = opts.asRoot ?? process.getuid?.() === 0;
  const run = opts.run ?? runProcess;
  const queue: string[] = [];
  let dropped = 0;
  let running: Promise<void> | undefined;
  let missingLogged = false;
  const waiters: (() => void)[] = [];

  async function send(text: string): Promise<void> {
    if (!(await onPath('notify-send', path))) {
      if (!missingLogged) opts.log.info({ path }, 'notify-send not found: firewall alerts go to the log only');
      missingLogged = true;
      return;
    }
    let user = DEFAULT_USER;
    try {
      const v = await opts.db.read(DEFAULT_USER_KEY);
      if (v !== undefined && v !== '') {
        if (USER_RE.test(v)) user = v;
        else opts.log.warn({ key: DEFAULT_USER_KEY, value: forLog(v, 80) }, 'invalid default user: alerting "user"');
      }
    } catch (e) {
      opts.log.warn({ key: DEFAULT_USER_KEY, err: forLog((e as Error).message) }, 'cannot read the default user: alerting "user"');
    }
    const uid = (await uidOf(user, passwdFile)) ?? FALLBACK_UID;
    const notify = ['notify-send', '-t', '8000', '--icon=network-error', text];
    const argv = asRoot ? ['runuser', '-u', user, '--', ...notify] : notify;
    const env = { DISPLAY: ':0', PATH: path, DBUS_SESSION_BUS_ADDRESS: `unix:path=/run/user/${uid}/bus` };
    const res = await run(argv, { env, timeoutMs, allowFailure: true, maxBuffer: 16 * 1024 }).catch((e): ProcessResult => ({ stdout: '', stderr: String((e as Error)?.message ?? e), exitCode: -1, timedOut: false }));
    if (res.exitCode !== 0 || res.timedOut) opts.log.warn({ user, exitCode: res.exitCode, timedOut: res.timedOut, stderr: forLog(res.stderr, 300) }, 'desktop alert failed');
  }

  async function drain(): Promise<void> {
    for (;;) {
      const text = queue.shift();
      if (text === undefined) {
        if (dropped === 0) break;
        const n = dropped;
        dropped = 0;
        await send(`Qubes firewall: ${n} more qube${n === 1 ? '' : 's'} with rules not in force; see the firewall's log`);
        continue;
      }
      await send(text);
    }
  }

  function kick(): void {
    if (running) return;
    running = drain()
      .catch((e) => opts.log.error({ err: forLog((e as Error)?.message ?? e) }, 'desktop alert failed'))
      .finally(() => {
        running = undefined;
        if (queue.length || dropped) kick();
        else for (const w of waiters.splice(0)) w();
      });
  }

  const sink = ((alert: Alert) => {
    if (queue.length >= maxQueued) dropped++;
    else queue.push(alertText(alert));
    kick();
  }) as DesktopNotifier;
  sink.idle = () => (running ? new Promise<void>((r) => waiters.push(r)) : Promise.resolve());
  return sink;
}

// One apply or remove at a time per network namespace: udev's uplink unit, the watcher (in a
// network qube its uplink group reacts to the link going down while the unit's `remove` +
// `apply` of a re-plug run) and an admin may start `qubes-net-guest apply` together, and two
// writers planning from the same kernel state would undo each other. The lock is an abstract
// unix socket name: bound while held, released by the kernel when the process exits however it
// exits (no stale lock file to detect, no native flock), and scoped to the network namespace,
// as the uplink is. Per namespace rather than per interface: `apply` without IFACE learns its
// interface only from QubesDB, after it must already hold the lock.
import { connect, createServer, type Server } from 'node:net';

export const APPLY_LOCK_NAME = 'qubes-net-guest-uplink';
/**
 * The longest wait for another holder: below the uplink unit's `TimeoutStartSec=30s`
 * (packaging's drop-in), so a stuck holder fails this apply with our error, not systemd's kill.
 */
export const APPLY_LOCK_WAIT_MS = 25_000;
const RETRY_MS = 20;
const NAME_RE = /^[A-Za-z0-9_.@-]{1,80}$/;

export class ApplyLockError extends Error {
  readonly code: 'ELOCKNAME' | 'ELOCKTIMEOUT';
  /** The holder's pid, as it answers on the lock's socket (undefined when it did not). */
  readonly holderPid: number | undefined;
  readonly waitedMs: number;
  constructor(code: ApplyLockError['code'], message: string, waitedMs = 0, holderPid?: number) {
    super(message);
    this.code = code;
    this.waitedMs = waitedMs;
    this.holderPid = holderPid;
  }
}

function tryBind(name: string): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    // The holder answers whoever connects with its pid: a waiter that gives up names it.
    const server = createServer((sock) => sock.end(`${process.pid}\n`));
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(undefined);
      else reject(err);
    });
    server.listen({ path: `\0${name}`, exclusive: true }, () => resolve(server));
  });
}

/** The pid the current holder answers with, or undefined (gone meanwhile, or no answer in 1 s). */
function holderPid(name: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    let text = '';
    const sock = connect({ path: `\0${name}` });
    const done = (pid: number | undefined): void => { sock.destroy(); resolve(pid); };
    sock.setTimeout(1000, () => done(undefined));
    sock.on('data', (d) => { text += d.toString('utf8'); if (text.length > 32) done(undefined); });
    sock.on('end', () => done(/^\d{1,10}\n$/.test(text) ? Number(text.trim()) : undefined));
    sock.on('error', () => done(undefined));
  });
}

export interface ApplyLock {
  /** How long acquiring waited for another holder (ms). */
  waitedMs: number;
  release(): void;
}

/** Waits until the lock is free (at most timeoutMs), then holds it until release() or exit. */
export async function acquireApplyLock(timeoutMs = APPLY_LOCK_WAIT_MS, name = APPLY_LOCK_NAME): Promise<ApplyLock> {
  if (!NAME_RE.test(name)) throw new ApplyLockError('ELOCKNAME', `invalid lock name ${JSON.stringify(name.slice(0, 100))}`);
  const start = Date.now();
  for (;;) {
    const server = await tryBind(name);
    if (server) {
      server.unref(); // never keeps the process alive
      return { waitedMs: Date.now() - start, release: () => server.close() };
    }
    const waited = Date.now() - start;
    if (waited >= timeoutMs) {
      const pid = await holderPid(name);
      throw new ApplyLockError('ELOCKTIMEOUT', `another qubes-net-guest apply/remove${pid ? ` (pid ${pid})` : ''} held the lock for ${timeoutMs} ms`, waited, pid);
    }
    await new Promise((r) => setTimeout(r, RETRY_MS));
  }
}

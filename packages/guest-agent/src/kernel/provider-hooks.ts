// What a qube that also provides network does after its uplink changed: tell the driver agent
// to re-learn the upstream DNS servers, and run the user's ip-change hooks.
import { access, constants } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { runProcess } from '@qubes-net/common/process';

export const DEFAULT_DRIVER_SOCKET = '/run/qubes-net/driver.sock';
/** The user hook, then upstream's legacy name (still run, like upstream does). */
export const DEFAULT_HOOKS: readonly string[] = ['/rw/config/qubes-ip-change-hook', '/rw/config/qubes_ip_change_hook'];

export type DriverReply = { sent: false; reason: string } | { sent: true; reply: string };

/** Sends `{"op":"dns-changed"}` and waits for the one-line reply. A missing driver is fine. */
export function notifyDriverDnsChanged(socketPath: string, timeoutMs = 2000): Promise<DriverReply> {
  return new Promise((resolve) => {
    let buffer = '';
    let done = false;
    const finish = (r: DriverReply): void => {
      if (done) return;
      done = true;
      sock.destroy();
      resolve(r);
    };
    const sock = createConnection(socketPath, () => sock.write('{"op":"dns-changed"}\n'));
    sock.setTimeout(timeoutMs, () => finish({ sent: false, reason: 'timeout waiting for the reply' }));
    sock.on('data', (b) => {
      buffer += b.toString();
      const nl = buffer.indexOf('\n');
      if (nl >= 0) finish({ sent: true, reply: buffer.slice(0, nl) });
    });
    sock.on('error', (err) => finish({ sent: false, reason: (err as NodeJS.ErrnoException).code ?? err.message }));
    sock.on('close', () => finish(buffer ? { sent: true, reply: buffer } : { sent: false, reason: 'closed without a reply' }));
  });
}

export interface HookRun {
  path: string;
  code: number;
  stderr: string;
}

/**
 * Runs each executable hook in turn (no arguments, like upstream); missing ones are skipped.
 * Each is done when it exits (a daemon it starts in the background does not hold the apply),
 * is killed with its process group after `timeoutMs`, and under systemd runs in a transient
 * scope of its own, outside the watcher unit's cgroup and memory limit.
 */
export async function runIpChangeHooks(paths: readonly string[], timeoutMs = 30_000): Promise<HookRun[]> {
  const runs: HookRun[] = [];
  for (const path of paths) {
    try {
      await access(path, constants.X_OK);
    } catch {
      continue;
    }
    const res = await runProcess([path], { timeoutMs, allowFailure: true, scope: 'hook' })
      .catch((e: Error) => ({ exitCode: -1, stderr: e.message }));
    runs.push({ path, code: res.exitCode, stderr: res.stderr.trim() });
  }
  return runs;
}

// User hooks, run once when the daemon starts (after our tables exist, before any qube's
// rules), like upstream: every executable regular file of /etc/qubes/qubes-firewall.d/ in
// sorted order, then of /rw/config/qubes-firewall.d/, then /rw/config/qubes-firewall-user-script;
// the two /rw ones are skipped when the custom-persist service is on (/rw is then not the
// user's to trust for this). A failing hook is logged and does not stop the daemon.
import { readdir, stat, access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { forLog, type Logger } from '@qubes-net/common';
import { runProcess } from '@qubes-net/common/kernel';

export interface HookPaths {
  etcDir: string;
  rwDir: string;
  userScript: string;
}

export const DEFAULT_HOOK_PATHS: HookPaths = {
  etcDir: '/etc/qubes/qubes-firewall.d',
  rwDir: '/rw/config/qubes-firewall.d',
  userScript: '/rw/config/qubes-firewall-user-script',
};

export interface HookResult {
  path: string;
  exitCode: number;
  timedOut?: boolean;
}

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    const st = await stat(path);
    if (!st.isFile()) return false;
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function dirEntries(dir: string): Promise<string[]> {
  try {
    // Plain code-point order, like upstream's sorted(): independent of the locale.
    return (await readdir(dir)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map((n) => join(dir, n));
  } catch {
    return [];
  }
}

/** The hooks that would run, in order. */
export async function listHooks(paths: HookPaths, customPersist: boolean): Promise<string[]> {
  const candidates = [...(await dirEntries(paths.etcDir))];
  if (!customPersist) candidates.push(...(await dirEntries(paths.rwDir)), paths.userScript);
  const out: string[] = [];
  for (const p of candidates) if (await isExecutableFile(p)) out.push(p);
  return out;
}

/** Default time a hook may run before its process group is killed (`--hook-wait-ms`). */
export const DEFAULT_HOOK_WAIT_MS = 120_000;

/**
 * Runs the hooks one after the other. Each ends when its process exits (a hook that starts a
 * daemon in the background returns at once), or is killed with its process group after
 * `timeoutMs`: a hung hook must not keep the firewall from loading qubes' rules. Under systemd
 * each runs in a transient scope of its own: what it leaves running outlives the agent.
 */
export async function runHooks(paths: HookPaths, customPersist: boolean, log: Logger, timeoutMs = DEFAULT_HOOK_WAIT_MS): Promise<HookResult[]> {
  if (customPersist) log.info({ skipped: [paths.rwDir, paths.userScript] }, 'custom-persist on: /rw hooks skipped');
  const results: HookResult[] = [];
  for (const path of await listHooks(paths, customPersist)) {
    const res = await runProcess([path], { allowFailure: true, timeoutMs, scope: 'hook' }).catch((e) => ({ exitCode: -1, stdout: '', stderr: String((e as Error).message), timedOut: false }));
    results.push({ path, exitCode: res.exitCode, ...(res.timedOut ? { timedOut: true } : {}) });
    if (res.exitCode === 0 && !res.timedOut) log.info({ hook: path }, 'hook ran');
    else if (res.timedOut) log.error({ hook: path, timeoutMs }, 'hook killed after its time limit');
    else log.error({ hook: path, exitCode: res.exitCode, stderr: forLog(res.stderr, 500) }, 'hook failed');
  }
  return results;
}

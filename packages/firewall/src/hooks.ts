// User hooks, run once when the daemon starts (after our tables exist, before any qube's
// rules), like upstream: every executable regular file of /etc/qubes/qubes-firewall.d/ in
// sorted order, then of /rw/config/qubes-firewall.d/, then /rw/config/qubes-firewall-user-script;
// the two /rw ones are skipped when the custom-persist service is on (/rw is then not the
// user's to trust for this). A failing hook is logged and does not stop the daemon.
import { readdir, stat, access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { run, forLog, type Logger } from '@qubes-net/common';

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

export async function runHooks(paths: HookPaths, customPersist: boolean, log: Logger, timeoutMs = 120_000): Promise<HookResult[]> {
  if (customPersist) log.info({ skipped: [paths.rwDir, paths.userScript] }, 'custom-persist on: /rw hooks skipped');
  const results: HookResult[] = [];
  for (const path of await listHooks(paths, customPersist)) {
    const res = await run(path, [], { allowFailure: true, timeoutMs }).catch((e) => ({ exitCode: -1, stdout: '', stderr: String((e as Error).message) }));
    results.push({ path, exitCode: res.exitCode });
    if (res.exitCode === 0) log.info({ hook: path }, 'hook ran');
    else log.error({ hook: path, exitCode: res.exitCode, stderr: forLog(res.stderr, 500) }, 'hook failed');
  }
  return results;
}

// The user's network hooks (/rw/config/network-hooks.d/*): every executable regular file is
// run with `command vif vif_type addr`, once per address (no address when the vif has none),
// like upstream. Failures are logged and otherwise ignored. Under systemd each run gets a
// transient scope of its own, so a daemon a hook starts is not the agent's to kill.
import { readdir, stat } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';
import { runProcess as run } from './process.js';
import type { HookCall } from '../model/planner.js';

export async function listHooks(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const n of names.sort()) {
    const p = join(dir, n);
    const st = await stat(p).catch(() => undefined);
    if (st?.isFile() && (st.mode & (constants.S_IXUSR | constants.S_IXGRP | constants.S_IXOTH))) out.push(p);
  }
  return out;
}

export interface HookFailure {
  hook: string;
  vif: string;
  message: string;
}

export async function runHooks(dir: string, calls: readonly HookCall[], timeoutMs = 30_000, listed?: readonly string[]): Promise<HookFailure[]> {
  if (calls.length === 0) return [];
  const hooks = listed ?? (await listHooks(dir));
  if (hooks.length === 0) return [];
  const failures: HookFailure[] = [];
  await Promise.all(calls.map(async (c) => {
    for (const hook of hooks) {
      for (const addr of c.addrs.length ? c.addrs : [undefined]) {
        const args = addr ? [c.command, c.vif, c.type, addr] : [c.command, c.vif, c.type];
        const res = await run(hook, args, { allowFailure: true, timeoutMs, scope: 'hook' }).catch((e: Error) => ({ exitCode: -1, stderr: e.message, stdout: '' }));
        if (res.exitCode !== 0) failures.push({ hook, vif: c.vif, message: `exit ${res.exitCode}: ${res.stderr.trim().slice(0, 200)}` });
      }
    }
  }));
  return failures;
}

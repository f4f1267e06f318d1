// `qubes-net-driver hotplug online|offline`: the Xen hotplug entry, called like upstream's
// vif-route-qubes (env `vif` and `XENBUS_PATH`, the command as first argument). It reads the
// vif's addresses, MAC and type from xenstore, hands the event to the daemon and waits for
// the result; without a daemon it does the work itself. Exit 0 only when the vif is
// configured (online) or cleaned up (offline). The C client (qubes-net-hotplug) does the
// same without starting Node and execs this command only when no daemon runs.
import { createLogger, forLog, type Logger } from '@qubes-net/common';
import { runProcess as run } from './kernel/process.js';
import { DriverLoop } from './loop.js';
import { driverOptions } from './daemon.js';
import { request, NoDaemonError } from './control-client.js';
import type { CommonOptions } from './options.js';
import type { EventResult } from './model/planner.js';

export interface HotplugInput {
  command: string;
  vif: string | undefined;
  xenbusPath: string | undefined;
}

async function xenstoreRead(path: string): Promise<string | undefined> {
  const r = await run('xenstore-read', [path], { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
  return r && r.exitCode === 0 ? r.stdout.replace(/\n$/, '') : undefined;
}

async function xenstoreWrite(pairs: Array<[string, string]>): Promise<void> {
  await run('xenstore-write', pairs.flat(), { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
}

/** Runs one hotplug event; returns the process exit code. */
export async function hotplug(input: HotplugInput, opts: CommonOptions, log: Logger = createLogger('driver-hotplug')): Promise<number> {
  const { command, vif, xenbusPath } = input;
  if (command === 'add' || command === 'remove') return 0; // vif devices need nothing on add/remove (like Xen's vif-common)
  if (command !== 'online' && command !== 'offline') {
    log.error({ source: 'argv', key: 'command', value: forLog(command) }, 'hotplug command must be online|offline|add|remove');
    return 2;
  }
  const ev: Record<string, unknown> = { op: command, vif, xenbusPath };
  if (xenbusPath) {
    const [ip, mac, type] = await Promise.all(['ip', 'mac', 'type'].map((k) => xenstoreRead(`${xenbusPath}/${k}`)));
    ev.ips = ip ?? '';
    ev.mac = mac ?? '';
    ev.type = type ?? '';
  } else if (command === 'online') {
    log.error({ source: 'env', key: 'XENBUS_PATH', value: '' }, 'XENBUS_PATH is not set');
    return 1;
  }

  let result: EventResult;
  try {
    result = (await request(opts.controlSocket, ev)) as unknown as EventResult;
  } catch (err) {
    if (!(err instanceof NoDaemonError)) {
      log.error({ vif: forLog(vif), err: String(err) }, 'driver daemon did not answer');
      result = { ok: false, error: String(err) };
    } else {
      log.info({ vif: forLog(vif), socket: opts.controlSocket }, 'no driver daemon: configuring in-process');
      result = await inProcess(ev, opts, log);
    }
  }
  if (xenbusPath && command === 'online') {
    if (result.ok) await xenstoreWrite([[`${xenbusPath}/hotplug-status`, 'connected']]);
    else await xenstoreWrite([[`${xenbusPath}/hotplug-error`, String(result.error ?? 'failed').slice(0, 500)], [`${xenbusPath}/hotplug-status`, 'error']]);
  }
  if (!result.ok) process.stderr.write(`qubes-net-driver hotplug ${command} ${forLog(vif)}: ${result.error}\n`);
  return result.ok ? 0 : 1;
}

async function inProcess(ev: Record<string, unknown>, opts: CommonOptions, log: Logger): Promise<EventResult> {
  const dopts = driverOptions(opts, log);
  const driver = new DriverLoop(dopts);
  try {
    await driver.start();
    return await driver.submit(ev as { op: unknown; vif: unknown });
  } finally {
    await driver.stop();
    await dopts.qdb.close().catch(() => undefined);
  }
}

#!/usr/bin/env node
// qubes-net-driver: see USAGE in options.ts.
import { createLogger, packageVersion, requireRootOrExit } from '@qubes-net/common';
import { parseOptions, USAGE, type CommonOptions } from './options.js';
import { runDaemon } from './daemon.js';
import { hotplug } from './hotplug.js';
import { request, NoDaemonError } from './control-client.js';
import { formatStatus } from './status.js';
import { DriverLoop, type StatusReport } from './loop.js';
import { driverOptions } from './daemon.js';
import { loadBaseRuleset } from './base.js';
import { openDriverQubesDB } from './qubesdb-open.js';
import { setQubesDBLogger } from '@qubes-net/qubesdb/library';

async function viaDaemon(opts: CommonOptions, req: Record<string, unknown>): Promise<Record<string, unknown> & { ok: boolean }> {
  return request(opts.controlSocket, req);
}

async function statusWithoutDaemon(opts: CommonOptions): Promise<StatusReport> {
  const dopts = driverOptions(opts, createLogger('driver-status', 'warn'));
  const driver = new DriverLoop(dopts);
  try {
    await driver.start({ apply: false });
    return await driver.status();
  } finally {
    await driver.stop();
    await dopts.qdb.close().catch(() => undefined);
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command === '--version') {
    process.stdout.write(`qubes-net-driver ${packageVersion(import.meta.url)}\n`);
    return 0;
  }
  let opts: CommonOptions;
  try {
    opts = parseOptions(rest);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  requireRootOrExit(`qubes-net-driver ${command}`);
  switch (command) {
    case 'run':
      await runDaemon(opts);
      return -1; // keeps running
    case 'base-ruleset': {
      const qdb = openDriverQubesDB(opts);
      try {
        await loadBaseRuleset({ qdb, log: createLogger('driver'), firewall: opts.firewall });
      } finally {
        await qdb.close().catch(() => undefined);
      }
      return 0;
    }
    case 'hotplug':
      return hotplug({ command: opts.positionals[0] ?? process.env.command ?? '', vif: process.env.vif, xenbusPath: process.env.XENBUS_PATH }, opts);
    case 'dns-changed': {
      try {
        const r = await viaDaemon(opts, { op: 'sync', reason: 'dns-changed' });
        const d = (r.details ?? {}) as { changed?: boolean; mode?: string; upstream?: string[] };
        process.stdout.write(opts.json ? JSON.stringify({ ok: r.ok, ...d }) + '\n' : `dns ${d.changed ? 'changed' : 'unchanged'}: ${d.mode} ${d.upstream?.join(' ') ?? ''}\n`);
        return r.ok ? 0 : 1;
      } catch (err) {
        // No daemon: nothing holds a mapping to update; the daemon learns DNS when it starts.
        process.stderr.write(`${(err as Error).message}\n`);
        return err instanceof NoDaemonError ? 0 : 1;
      }
    }
    case 'status': {
      // Its stdout is the report (JSON with --json): library chatter stays out of it.
      setQubesDBLogger(createLogger('qubesdb-client', 'warn'));
      let s: StatusReport;
      try {
        s = (await viaDaemon(opts, { op: 'status' })).details as unknown as StatusReport;
      } catch (err) {
        if (!(err instanceof NoDaemonError)) throw err;
        s = await statusWithoutDaemon(opts);
      }
      process.stdout.write(opts.json ? JSON.stringify(s) + '\n' : formatStatus(s));
      return 0;
    }
    case 'reconcile': {
      const r = await viaDaemon(opts, { op: 'reconcile' });
      process.stdout.write(JSON.stringify(r) + '\n');
      return r.ok ? 0 : 1;
    }
    default:
      process.stderr.write(`unknown command ${JSON.stringify(command)}\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err) => {
    process.stderr.write(`qubes-net-driver: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);

// `qubes-net-driver run`: the long-running driver. The control socket listens first (early
// hotplug events wait instead of racing a one-shot fallback), then the base ruleset and
// reconciliation, then forwarding, then readiness. Stopping leaves the kernel as it is.
import { createLogger, sdNotify, type Logger } from '@qubes-net/common';
import { Driver } from './driver.js';
import { ControlServer } from './control-server.js';
import { openDriverQubesDB } from './qubesdb-open.js';
import type { CommonOptions } from './options.js';
import type { Request } from './protocol.js';

export function controlHandler(driver: Driver): (req: Request) => Promise<{ ok: boolean } & Record<string, unknown>> {
  return async (req) => {
    switch (req.op) {
      case 'online':
      case 'offline': {
        const r = await driver.submit(req);
        const { inputError: _ignored, ...rest } = r;
        return rest;
      }
      case 'dns-changed': {
        const { changed, dns } = await driver.dnsChanged('dns-changed request');
        return { ok: true, changed, mode: dns.mapping.mode, upstream: dns.mapping.upstream };
      }
      case 'status':
        return { ...(await driver.status()) };
      case 'reconcile': {
        const { differences } = await driver.reconcileNow();
        return { ok: true, differences };
      }
    }
  };
}

export async function runDaemon(opts: CommonOptions, log: Logger = createLogger('driver')): Promise<void> {
  const qdb = openDriverQubesDB(opts);
  const driver = new Driver({ qdb, log, resolvConf: opts.resolvConf, resolved: opts.resolved, ...(opts.resolvedRunDir ? { resolvedRunDir: opts.resolvedRunDir } : {}), hooksDir: opts.hooksDir, firewall: opts.firewall, firewallPidFile: opts.firewallPidFile, batchWindowMs: opts.batchWindowMs, persistentTools: true });
  const server = new ControlServer(opts.controlSocket, controlHandler(driver), log);
  await server.listen();

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping (configuration stays in place)');
    sdNotify('STOPPING=1');
    await server.close();
    await driver.stop();
    await qdb.close().catch(() => undefined);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => {
    log.info({}, 'SIGHUP: reconciling and re-learning DNS');
    void driver.reconcileNow().then(() => driver.dnsChanged('SIGHUP')).catch((err) => log.error({ err: String(err) }, 'reload failed'));
  });

  await driver.start();
  await driver.follow();
  sdNotify('READY=1');
  log.info({ socket: opts.controlSocket, generation: driver.generation - 1 }, 'driver ready');
}

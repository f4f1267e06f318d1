// `qubes-net-driver run`: the long-running driver. The control socket listens first (early
// hotplug events wait instead of racing a one-shot fallback), then the one start path, then
// readiness. Stopping leaves the kernel as it is.
import { createLogger, sdNotify, type Logger } from '@qubes-net/common';
import { DriverLoop, type Reply } from './loop.js';
import { ControlServer } from './control-server.js';
import { openDriverQubesDB } from './qubesdb-open.js';
import type { CommonOptions } from './options.js';
import type { Request } from './protocol.js';

export function controlHandler(driver: DriverLoop): (req: Request) => Promise<Reply & Record<string, unknown>> {
  return async (req) => ({ ...(await driver.handle(req)) });
}

export function driverOptions(opts: CommonOptions, log: Logger) {
  return {
    qdb: openDriverQubesDB(opts),
    log,
    resolvConf: opts.resolvConf,
    resolved: opts.resolved,
    ...(opts.resolvedRunDir ? { resolvedRunDir: opts.resolvedRunDir } : {}),
    ...(opts.xenstoreDir ? { xenstoreDir: opts.xenstoreDir } : {}),
    hooksDir: opts.hooksDir,
    firewall: opts.firewall,
    firewallPidFile: opts.firewallPidFile,
    batchWindowMs: opts.batchWindowMs,
  };
}

export async function runDaemon(opts: CommonOptions, log: Logger = createLogger('driver')): Promise<void> {
  const dopts = driverOptions(opts, log);
  const driver = new DriverLoop(dopts);
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
    await dopts.qdb.close().catch(() => undefined);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => {
    log.info({}, 'SIGHUP: reconciling and re-learning DNS');
    void driver.reconcileNow().then(() => driver.sync('SIGHUP')).catch((err) => log.error({ err: String(err) }, 'reload failed'));
  });

  await driver.start({ follow: true });
  sdNotify('READY=1');
  log.info({ socket: opts.controlSocket, generation: driver.generation - 1 }, 'driver ready');
}

// Opens the qube's QubesDB through the FFI client. Only the client modules are imported (the
// package index also loads the daemon and the codec, which an agent never uses), and the client
// library logs through the agent's logger, so there is one pino and one stream per process.
import type { Logger } from '@qubes-net/common/log';
import type { QubesDB } from '@qubes-net/qubesdb/api';

/**
 * The one-shot paths' QubesDB: the pure-JS socket client (no koffi to load). Daemons use
 * openDb (the FFI client, which keeps its watches across daemon restarts).
 */
export async function openSocketDb(runDir: string | undefined): Promise<QubesDB> {
  const { openSocketQubesDB } = await import('@qubes-net/qubesdb/socket-client');
  return openSocketQubesDB(runDir !== undefined ? { runDir } : {});
}

export async function openDb(runDir: string | undefined, log: Logger): Promise<QubesDB> {
  const [{ openQubesDB }, { setQubesDBLogger }] = await Promise.all([import('@qubes-net/qubesdb/client'), import('@qubes-net/qubesdb/library')]);
  setQubesDBLogger(log.child({ lib: 'qubesdb-client' }));
  return openQubesDB(runDir !== undefined ? { runDir } : {});
}

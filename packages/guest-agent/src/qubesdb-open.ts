// Opens the qube's QubesDB through the FFI client, imported only when needed. The client
// modules are loaded by themselves, next to the package index, because the index also loads
// the QubesDB daemon and codec, which the agent never uses (startup time matters for `apply`).
import type { QubesDB, OpenOptions } from '@qubes-net/qubesdb';
import type { Logger } from './common-lite.js';

type OpenFn = (opts?: OpenOptions) => QubesDB | Promise<QubesDB>;
type SetLoggerFn = (l: Pick<Logger, 'info' | 'warn' | 'error'>) => void;

async function loadClient(): Promise<{ open: OpenFn; setLogger?: SetLoggerFn }> {
  const index = import.meta.resolve('@qubes-net/qubesdb');
  try {
    const [client, library] = await Promise.all([
      import(new URL('./ffi-client.js', index).href) as Promise<{ openQubesDB?: OpenFn }>,
      import(new URL('./ffi-library.js', index).href) as Promise<{ setQubesDBLogger?: SetLoggerFn }>,
    ]);
    if (typeof client.openQubesDB === 'function') {
      return typeof library.setQubesDBLogger === 'function' ? { open: client.openQubesDB, setLogger: library.setQubesDBLogger } : { open: client.openQubesDB };
    }
  } catch {
    // laid out differently: the package index has it too
  }
  const mod = await import('@qubes-net/qubesdb');
  return { open: mod.openQubesDB, setLogger: mod.setQubesDBLogger };
}

/** Opens the database; the client library logs through `log` (one pino, one stream). */
export async function openDb(runDir: string | undefined, log: Logger): Promise<QubesDB> {
  const { open, setLogger } = await loadClient();
  setLogger?.(log.child({ lib: 'qubesdb-client' }));
  return await open(runDir !== undefined ? { runDir } : {});
}

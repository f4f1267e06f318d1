// Opens this qube's QubesDB through the FFI client (libqubesdb through koffi), at the sockets
// the options name, else the library's default. Only the client module is loaded: the package
// index also brings the daemon and the codec, which the driver never uses.
import { openQubesDB } from '@qubes-net/qubesdb/client';
import type { QubesDB } from '@qubes-net/qubesdb/api';

export function openDriverQubesDB(opts: { qubesdbRunDir?: string | undefined }): QubesDB {
  return openQubesDB(opts.qubesdbRunDir ? { runDir: opts.qubesdbRunDir } : {});
}

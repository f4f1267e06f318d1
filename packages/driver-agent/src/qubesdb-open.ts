// Opens QubesDB through @qubes-net/qubesdb's FFI client (libqubesdb through koffi).
import { openQubesDB, type QubesDB, type OpenOptions } from '@qubes-net/qubesdb';

export async function openQubesDBClient(opts: OpenOptions = {}): Promise<QubesDB> {
  return openQubesDB(opts);
}

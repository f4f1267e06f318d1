// Upstream's scripts test a service with the flag file /run/qubes-service/<name> (qsvc), which
// qubes-sysinit creates from the VM type's defaults and QubesDB's /qubes-service/ entries at
// boot, and which a user may create or remove by hand. We follow QubesDB live (an explicit
// "1" or "0" there wins, so dom0's changes take effect without a reboot) and otherwise take
// the flag file, so a qube-local setting still counts.
import { access } from 'node:fs/promises';

export const DEFAULT_SERVICE_DIR = '/run/qubes-service';

const SERVICE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,62}$/;

/** Whether the flag file of `name` exists in `dir`. */
export async function serviceFlagSet(dir: string, name: string): Promise<boolean> {
  if (!SERVICE_NAME.test(name)) return false;
  try {
    await access(`${dir}/${name}`);
    return true;
  } catch {
    return false;
  }
}

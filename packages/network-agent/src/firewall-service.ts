// Whether this qube runs the per-qube firewall ("auto"): upstream's units test the service flag
// file /run/qubes-service/qubes-firewall, written by qubes-sysinit from dom0's service list;
// QubesDB's /qubes-service/qubes-firewall is the fallback where no flag files exist.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { QubesDB } from '@qubes-net/qubesdb/api';

export async function firewallEnabled(mode: 'auto' | 'on' | 'off', serviceDir: string, db: QubesDB): Promise<boolean> {
  if (mode !== 'auto') return mode === 'on';
  if (existsSync(join(serviceDir, 'qubes-firewall'))) return true;
  try {
    return (await db.read('/qubes-service/qubes-firewall')) === '1';
  } catch {
    return false;
  }
}

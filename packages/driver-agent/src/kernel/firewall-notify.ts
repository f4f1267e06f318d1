// "Let the firewall know" after a DNS mapping change: the firewall's dns-addr set and its
// specialtarget=dns rules depend on the upstream servers, so it reloads on SIGHUP.
import { readFile } from 'node:fs/promises';

export type NotifyResult = 'sent' | 'no-pidfile' | 'stale' | 'bad-pidfile';

export async function notifyFirewall(pidFile: string): Promise<NotifyResult> {
  let text: string;
  try {
    text = (await readFile(pidFile, 'utf8')).trim();
  } catch {
    return 'no-pidfile';
  }
  if (!/^[1-9]\d{0,9}$/.test(text)) return 'bad-pidfile';
  try {
    process.kill(Number(text), 'SIGHUP');
    return 'sent';
  } catch {
    return 'stale';
  }
}

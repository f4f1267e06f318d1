// "Let the firewall know" after a DNS mapping change: the firewall's dns-addr set and its
// specialtarget=dns rules depend on the upstream servers, so it reloads on SIGHUP. The pid
// file may be stale (the firewall died, its pid reused): the signal goes only to a process
// whose command line names the firewall (issue 13.5), never to whatever now has that pid.
// (Hosted in one process with the firewall, the agent calls the engine instead.)
import { readFile } from 'node:fs/promises';

export type NotifyResult = 'sent' | 'no-pidfile' | 'stale' | 'bad-pidfile' | 'not-the-firewall';

/** Whether /proc/PID/cmdline is a qubes-net firewall (or the merged agent hosting it). */
export function isFirewallCmdline(cmdline: string): boolean {
  const args = cmdline.split('\0').filter(Boolean);
  // Installed: `node …/@qubes-net/firewall/dist/cli.js run` (packaging's wrapper); in the
  // workspace `node packages/firewall/dist/cli.js run`; bundled entries by their name.
  return args.slice(0, 3).some((a) => /(^|\/)qubes-net-(firewall|agent)(\.[cm]?js)?$/.test(a) || /(^|\/)(firewall|network-agent)\/dist\/cli\.js$/.test(a));
}

export async function notifyFirewall(pidFile: string): Promise<NotifyResult> {
  let text: string;
  try {
    text = (await readFile(pidFile, 'utf8')).trim();
  } catch {
    return 'no-pidfile';
  }
  if (!/^[1-9]\d{0,9}$/.test(text)) return 'bad-pidfile';
  const cmdline = await readFile(`/proc/${text}/cmdline`, 'latin1').catch(() => undefined);
  if (cmdline === undefined) return 'stale';
  if (!isFirewallCmdline(cmdline)) return 'not-the-firewall';
  try {
    process.kill(Number(text), 'SIGHUP');
    return 'sent';
  } catch {
    return 'stale';
  }
}

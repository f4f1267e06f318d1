// Command-line options shared by the daemon and the one-shot commands. Every path is an
// option (tests and the lab run several drivers on one machine).
import { parseArgs } from 'node:util';
import { DEFAULT_SOCKET } from './protocol.js';

export interface CommonOptions {
  controlSocket: string;
  resolvConf: string;
  resolved: 'auto' | 'off';
  resolvedRunDir?: string;
  qubesdbRunDir?: string;
  xenstoreDir?: string;
  hooksDir: string;
  firewall: 'auto' | 'on' | 'off';
  firewallPidFile: string;
  batchWindowMs: number;
  json: boolean;
  positionals: string[];
}

export const USAGE = `usage: qubes-net-driver <command> [options]
commands:
  run                       the daemon: base ruleset, forwarding, vif events, DNS, uplink
  base-ruleset              load the base tables once (every qube, at boot) and exit
  hotplug online|offline    Xen hotplug entry (env vif, XENBUS_PATH); via the daemon, or
                            done in-process when no daemon runs
  dns-changed               re-learn the provider settings and upstream DNS servers now
  status [--json]           vifs, DNS mapping, and whether the kernel matches
  reconcile                 compare the kernel with the desired state and correct it
options:
  --version                 print the version
  -h, --help                this text
  --control-socket PATH     (${DEFAULT_SOCKET})
  --resolv-conf PATH        (/etc/resolv.conf)
  --no-resolved             never ask systemd-resolved
  --resolved-dir PATH       (/run/systemd/resolve)
  --qubesdb-run-dir DIR     QubesDB sockets directory (default: the library's)
  --xenstore-dir DIR        the lab's xenstore stand-in (default: QN_XENSTORE_DIR, then
                            /run/qubes-net-xenstore if present, else the xenstore tools)
  --hooks-dir DIR           (/rw/config/network-hooks.d)
  --firewall | --no-firewall  load the firewall skeleton (default: /qubes-service/qubes-firewall)
  --firewall-pid PATH       (/run/qubes-net/firewall.pid)
  --batch-window-ms N       gather events for N ms before applying (default 0: one loop turn)
`;

export function parseOptions(argv: readonly string[]): CommonOptions {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      'control-socket': { type: 'string' },
      'resolv-conf': { type: 'string' },
      'no-resolved': { type: 'boolean' },
      'resolved-dir': { type: 'string' },
      'qubesdb-run-dir': { type: 'string' },
      'xenstore-dir': { type: 'string' },
      'hooks-dir': { type: 'string' },
      firewall: { type: 'boolean' },
      'no-firewall': { type: 'boolean' },
      'firewall-pid': { type: 'string' },
      'batch-window-ms': { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const windowMs = values['batch-window-ms'] === undefined ? 0 : Number(values['batch-window-ms']);
  if (!Number.isInteger(windowMs) || windowMs < 0 || windowMs > 1000) throw new Error('--batch-window-ms must be an integer 0..1000');
  return {
    controlSocket: values['control-socket'] ?? process.env.QUBES_NET_DRIVER_SOCKET ?? DEFAULT_SOCKET,
    resolvConf: values['resolv-conf'] ?? '/etc/resolv.conf',
    resolved: values['no-resolved'] ? 'off' : 'auto',
    ...(values['resolved-dir'] ? { resolvedRunDir: values['resolved-dir'] } : {}),
    ...(values['qubesdb-run-dir'] ? { qubesdbRunDir: values['qubesdb-run-dir'] } : {}),
    ...(values['xenstore-dir'] ? { xenstoreDir: values['xenstore-dir'] } : {}),
    hooksDir: values['hooks-dir'] ?? '/rw/config/network-hooks.d',
    firewall: values.firewall ? 'on' : values['no-firewall'] ? 'off' : 'auto',
    firewallPidFile: values['firewall-pid'] ?? '/run/qubes-net/firewall.pid',
    batchWindowMs: windowMs,
    json: !!values.json,
    positionals,
  };
}

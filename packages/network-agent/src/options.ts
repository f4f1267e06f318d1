// The network agent's command line (node:util parseArgs). Every path is an option so that
// tests and the lab run several agents on one machine; `--qubesdb-run-dir` is the QubesDB socket
// directory's flag name in every qubes-net command.
import { parseArgs } from 'node:util';
import { DEFAULT_AGENT_SOCKET } from '@qubes-net/common/control/protocol';

export interface AgentOptions {
  command: string;
  positionals: string[];
  socket: string;
  qubesdbDir?: string;
  /** Milliseconds without work before `run` exits; 0 = never. */
  idleExitMs: number;
  wakeFile: string;
  resolvConf: string;
  resolved: 'auto' | 'off';
  resolvedDir?: string;
  hooksDir: string;
  /** Directory of upstream's service flag files (qubes-firewall, custom-persist). */
  serviceDir: string;
  firewall: 'auto' | 'on' | 'off';
  /** Firewall user hooks run once per boot: this file records that they did. */
  hooksDoneFile: string;
  /** Milliseconds a QubesDB call may take before it fails (the event loop never waits on it). */
  qubesdbTimeoutMs: number;
  json: boolean;
  /** watch-args: the agent command the watcher starts, and the uplinks whose link events wake it. */
  cli: string;
  uplinks: string[];
  /** Whether --idle-exit was given (watch-args passes it on only then). */
  idleExitGiven: boolean;
  /** watch-args --notify: the systemd form (the .socket unit holds the socket). */
  notify: boolean;
}

export const USAGE = `usage: qubes-net-agent <command> [options]
commands:
  run                      serve vifs (driver) and per-qube firewall rules until idle
  hotplug online|offline   Xen hotplug fallback when the agent socket does not exist
                           (env vif, XENBUS_PATH): does the work in-process
  status [--json]          the running agent's status (starts it under activation)
  render-firewall IP       print the nft transaction the firewall would apply for IP
  watch-args [--json] [--notify]
                           the argv of the qubes-net-watch that starts \`run\` on demand
                           (--notify: under systemd's qubes-net-agent.socket, it only pokes it)
                           (--cli PATH, --uplink IFACE..., and run's --socket, --wake-file,
                           --resolv-conf, --idle-exit, --qubesdb-run-dir)
options:
  -h, --help, --version
  --socket PATH            control socket (${DEFAULT_AGENT_SOCKET})
  --qubesdb-run-dir DIR    QubesDB sockets directory (default: the library's)
  --idle-exit MS           exit after MS without work (default 30000, 0 = never)
  --wake-file PATH         where run leaves the next deadline it must be woken at
                           (/run/qubes-net/agent.wake)
  --firewall on|off|auto   per-qube firewall (auto: /run/qubes-service/qubes-firewall,
                           else QubesDB /qubes-service/qubes-firewall)
  --service-dir DIR        service flag files (/run/qubes-service)
  --resolv-conf PATH       (/etc/resolv.conf)
  --no-resolved            never ask systemd-resolved
  --resolved-dir DIR       (/run/systemd/resolve)
  --hooks-dir DIR          driver hooks (/rw/config/network-hooks.d)
  --qubesdb-timeout-ms N   a QubesDB call failing after N ms (default 10000)
  --json                   machine-readable output
`;

function int(name: string, v: string | undefined, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n > max) throw new Error(`--${name} must be an integer 0..${max}`);
  return n;
}

export function parseOptions(argv: readonly string[]): AgentOptions {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      socket: { type: 'string' },
      'qubesdb-run-dir': { type: 'string' },
      'idle-exit': { type: 'string' },
      'wake-file': { type: 'string' },
      'resolv-conf': { type: 'string' },
      'no-resolved': { type: 'boolean' },
      'resolved-dir': { type: 'string' },
      'hooks-dir': { type: 'string' },
      'service-dir': { type: 'string' },
      firewall: { type: 'string' },
      'hooks-done-file': { type: 'string' },
      'qubesdb-timeout-ms': { type: 'string' },
      json: { type: 'boolean' },
      cli: { type: 'string' },
      uplink: { type: 'string', multiple: true },
      notify: { type: 'boolean' },
    },
  });
  const [command = '', ...rest] = positionals;
  const fw = values.firewall ?? 'auto';
  if (fw !== 'auto' && fw !== 'on' && fw !== 'off') throw new Error('--firewall must be on, off or auto');
  return {
    command,
    positionals: rest,
    socket: values.socket ?? process.env.QUBES_NET_AGENT_SOCKET ?? DEFAULT_AGENT_SOCKET,
    ...(values['qubesdb-run-dir'] ? { qubesdbDir: values['qubesdb-run-dir'] } : {}),
    idleExitMs: int('idle-exit', values['idle-exit'], 30_000, 86_400_000),
    wakeFile: values['wake-file'] ?? '/run/qubes-net/agent.wake',
    resolvConf: values['resolv-conf'] ?? '/etc/resolv.conf',
    resolved: values['no-resolved'] ? 'off' : 'auto',
    ...(values['resolved-dir'] ? { resolvedDir: values['resolved-dir'] } : {}),
    hooksDir: values['hooks-dir'] ?? '/rw/config/network-hooks.d',
    serviceDir: values['service-dir'] ?? '/run/qubes-service',
    firewall: fw,
    hooksDoneFile: values['hooks-done-file'] ?? '/run/qubes-net/firewall-hooks.done',
    qubesdbTimeoutMs: int('qubesdb-timeout-ms', values['qubesdb-timeout-ms'], 10_000, 600_000),
    json: !!values.json,
    cli: values.cli ?? '/usr/bin/qubes-net-agent',
    uplinks: values.uplink ?? ['eth0'],
    idleExitGiven: values['idle-exit'] !== undefined,
    notify: !!values.notify,
  };
}

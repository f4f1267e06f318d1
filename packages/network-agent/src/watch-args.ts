// The argv of the `qubes-net-watch` that starts the network agent on demand (what
// `qubes-net-agent watch-args` prints; units and the lab take it from here): the QubesDB keys
// the agent serves, resolv.conf (and systemd-resolved's file), the uplink's link events, the
// wake file the agent leaves for its next deadline, then `--activate SOCKET -- AGENT run`.
import { PROVIDER_KEYS } from '@qubes-net/driver-agent';
import { WATCH_PATHS } from '@qubes-net/firewall';
import { DEFAULT_AGENT_SOCKET } from '@qubes-net/common/control/protocol';

export interface AgentWatchOptions {
  /** The agent command: ['/usr/bin/qubes-net-agent'] or [node, cli.js]. */
  cli: readonly string[];
  socket?: string;
  wakeFile?: string;
  qubesdbDir?: string;
  resolvConf?: string;
  /** systemd-resolved's file, watched too where it exists. */
  resolvedFile?: string | null;
  uplinks?: readonly string[];
  debounceMs?: number;
  /** Arguments for `run` (--idle-exit, --resolv-conf, …). */
  runArgs?: readonly string[];
  /**
   * `activate` (default): the watcher holds the socket and starts the agent (the lab, templates
   * without the .socket unit). `notify`: systemd's qubes-net-agent.socket holds it; the watcher
   * only connects and sends a sync request, which socket-activates the agent.
   */
  mode?: 'activate' | 'notify';
}

/** Every QubesDB path a change of which is work for the agent. */
export const AGENT_WATCHED_KEYS: readonly string[] = [...new Set([...Object.values(PROVIDER_KEYS), ...WATCH_PATHS])];

export function agentWatchArgs(opts: AgentWatchOptions): string[] {
  const socket = opts.socket ?? DEFAULT_AGENT_SOCKET;
  const wake = opts.wakeFile ?? '/run/qubes-net/agent.wake';
  const args: string[] = [];
  if (opts.qubesdbDir !== undefined) args.push('--qdb-dir', opts.qubesdbDir);
  if (opts.debounceMs !== undefined) args.push('--debounce-ms', String(opts.debounceMs));
  for (const k of AGENT_WATCHED_KEYS) args.push('--qdb', k);
  args.push('--file', opts.resolvConf ?? '/etc/resolv.conf');
  const resolved = opts.resolvedFile === undefined ? '/run/systemd/resolve/resolv.conf' : opts.resolvedFile;
  if (resolved) args.push('--file', resolved);
  for (const l of opts.uplinks ?? ['eth0']) args.push('--link', l);
  args.push('--wake-file', wake);
  if (opts.mode === 'notify') {
    args.push('--notify', socket);
    return args;
  }
  args.push('--activate', socket, '--', ...opts.cli, 'run', '--socket', socket, '--wake-file', wake);
  if (opts.qubesdbDir !== undefined) args.push('--qubesdb-run-dir', opts.qubesdbDir);
  args.push(...(opts.runArgs ?? []));
  return args;
}

/**
 * One watcher for a whole network qube (docs/runtime-shape.md): the agent's group and, where the
 * qube has an uplink of its own, the uplink's group (`qubes-net-guest watch-args`), joined by
 * `--group`. A command of a group ends at the next `--group`, so none of its arguments may be
 * that word.
 */
export function combinedWatchArgs(agent: readonly string[], ...others: (readonly string[])[]): string[] {
  const groups = [agent, ...others];
  for (const g of groups) if (g.includes('--group')) throw new Error('a watch group cannot contain the argument --group');
  return groups.flatMap((g, i) => (i === 0 ? [...g] : ['--group', ...g]));
}

// Where the programs the lab runs inside qubes come from. By default: this checkout's builds
// (packages/*/dist). For an installed or unpacked package, point QUBES_NET_AGENT_ROOT at a
// directory laid out like packages/ (guest-agent/dist/cli.js, driver-agent/scripts/…), or
// QUBES_NET_AGENT_BINDIR at a directory holding the installed commands (qubes-net-guest,
// qubes-net-agent, qubes-net-qdb, vif-route-qubes; qubes-net-watch there or at QUBES_NET_WATCH).
//
// The runtime shape (docs/runtime-shape.md): what stays resident in a qube is the C watcher;
// `guest` (apply) and `agent` (run) are the one-shot and on-demand Node commands it starts.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface AgentCommands {
  /** QubesDB daemon; the lab appends `--ready-fd 3`. */
  qubesdbDaemon: string[];
  /** Guest agent command, without its subcommand (the lab runs `apply IFACE`). */
  guest: string[];
  /** Network agent command, without its subcommand (the watcher runs `run`). */
  agent: string[];
  /** The C watcher, qubes-net-watch. */
  watch: string;
  /** The Xen hotplug script; the lab appends `online` / `offline`. */
  vifScript: string[];
  /** Extra environment for the hotplug script (where its C client is, in a checkout). */
  vifScriptEnv: Record<string, string>;
}

export interface AgentCommandOptions {
  /** A directory laid out like packages/ (overrides QUBES_NET_AGENT_ROOT). */
  root?: string;
  /** A directory with the installed commands (overrides QUBES_NET_AGENT_BINDIR). */
  binDir?: string;
  env?: NodeJS.ProcessEnv;
}

/** packages/ of this checkout (dist/runtime → lab → packages). */
export const PACKAGES_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

function nodeScript(path: string, ...args: string[]): string[] {
  return [process.execPath, path, ...args];
}

export function resolveAgentCommands(opts: AgentCommandOptions = {}): AgentCommands {
  const env = opts.env ?? process.env;
  const binDir = opts.binDir ?? env.QUBES_NET_AGENT_BINDIR;
  const vifOverride = env.QUBES_NET_VIF_SCRIPT;
  if (binDir && !opts.root) {
    return {
      qubesdbDaemon: [join(binDir, 'qubes-net-qdb'), 'daemon'],
      guest: [join(binDir, 'qubes-net-guest')],
      agent: [join(binDir, 'qubes-net-agent')],
      watch: env.QUBES_NET_WATCH ?? join(binDir, 'qubes-net-watch'),
      vifScript: [vifOverride ?? join(binDir, 'vif-route-qubes')],
      vifScriptEnv: hotplugEnv(env, [join(binDir, 'qubes-net-hotplug')]),
    };
  }
  const root = opts.root ?? env.QUBES_NET_AGENT_ROOT ?? PACKAGES_DIR;
  const qdbCli = join(root, 'qubesdb', 'dist', 'cli.js');
  return {
    qubesdbDaemon: existsSync(qdbCli) ? nodeScript(qdbCli, 'daemon') : nodeScript(join(root, 'qubesdb', 'dist', 'daemon-main-bin.js')),
    // The bundled one-shot (scripts/bundle.mjs) where it was built, as a template ships it.
    guest: nodeScript([join(root, 'guest-agent', 'bundle', 'qubes-net-guest.cjs')].find((b) => existsSync(b)) ?? join(root, 'guest-agent', 'dist', 'cli.js')),
    // The bundle's launcher with its V8 code cache, as the package runs it, where it was built.
    agent: nodeScript([join(root, 'network-agent', 'bundle', 'qubes-net-agent-cached.cjs'), join(root, 'network-agent', 'bundle', 'qubes-net-agent.cjs')].find((b) => existsSync(b)) ?? join(root, 'network-agent', 'dist', 'cli.js')),
    watch: env.QUBES_NET_WATCH ?? [join(root, '..', 'native-bindings', 'build', 'qubes-net-watch'), join(root, 'native', 'qubes-net-watch')].find((c) => existsSync(c)) ?? join(root, '..', 'native-bindings', 'build', 'qubes-net-watch'),
    vifScript: [vifOverride ?? join(root, 'driver-agent', 'scripts', 'vif-route-qubes')],
    // The script hands the event to the C client; in a checkout that is native-bindings' build.
    vifScriptEnv: hotplugEnv(env, [join(root, '..', 'native-bindings', 'build', 'qubes-net-hotplug'), join(root, 'native', 'qubes-net-hotplug')]),
  };
}

function hotplugEnv(env: NodeJS.ProcessEnv, candidates: string[]): Record<string, string> {
  if (env.QUBES_NET_HOTPLUG) return { QUBES_NET_HOTPLUG: env.QUBES_NET_HOTPLUG };
  const found = candidates.find((c) => existsSync(c));
  return found ? { QUBES_NET_HOTPLUG: found } : {};
}

/** The files behind the commands that are missing (a clear error before anything starts). */
export function missingAgentFiles(cmds: AgentCommands): string[] {
  const files = [cmds.qubesdbDaemon, cmds.guest, cmds.agent, [cmds.watch], cmds.vifScript].map((c) => (c[0] === process.execPath ? c[1]! : c[0]!));
  return files.filter((f) => !existsSync(f));
}

// The network agent in a provider qube of the driver tests' lab (real QubesDB daemon, real
// kernel, vif events through the real C hotplug client), with helpers to start it as an
// activator or systemd would, and to ask its control socket.
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { agentWatchArgs } from '@qubes-net/network-agent/watch-args';
import { controlRequest, type Reply } from '@qubes-net/common/control';
import type { Qube } from '@qubes-net/netns';
import { DriverLab, RESOLV } from '../driver-agent/lab.js';
import { spawnAgent, type AgentProcess } from '../helpers/agent-process.js';
import { waitFor } from '../helpers/wait.js';

export const AGENT_CLI = join(import.meta.dirname, '..', '..', '..', 'packages', 'network-agent', 'dist', 'cli.js');
export const SOCKET = '/run/qubes-net/agent.sock';
export const WATCH = join(import.meta.dirname, '..', '..', '..', 'native-bindings', 'build', 'qubes-net-watch');

export class AgentLab {
  agent: AgentProcess | undefined;
  watcher: ChildProcess | undefined;
  private peer: Qube | undefined;
  private constructor(readonly lab: DriverLab) {}

  static async create(label: string): Promise<AgentLab> {
    return new AgentLab(await DriverLab.create(label));
  }

  async destroy(): Promise<void> {
    await this.stop('SIGKILL').catch(() => undefined);
    this.watcher?.kill('SIGKILL');
    await this.lab.destroy();
  }

  /** Starts `qubes-net-agent run` in the provider; resolves once it is ready. */
  async start(args: string[] = []): Promise<AgentProcess> {
    const a = spawnAgent(this.lab.netvm, [AGENT_CLI, 'run', '--resolv-conf', RESOLV, '--no-resolved', ...args]);
    this.agent = a;
    await waitFor('network agent ready', () => {
      if (a.child.exitCode !== null) throw new Error(`agent exited ${a.child.exitCode}: ${this.lab.netvm.outputOf(a.child).stderr}`);
      return a.logs.some((l) => l.msg === 'network agent ready');
    });
    return a;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const a = this.agent;
    if (!a) return null;
    this.agent = undefined;
    if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill(signal);
    return a.exited;
  }

  /**
   * The agent as the lab and templates without systemd run it: qubes-net-watch --activate
   * holds the socket and starts `run` on the first connection (and again after it exits
   * while connections are pending).
   */
  startWatched(runArgs: string[] = []): ChildProcess {
    const w = this.lab.netvm.spawn(WATCH, agentWatchArgs({ cli: [process.execPath, AGENT_CLI], resolvConf: RESOLV, resolvedFile: null, runArgs: ['--resolv-conf', RESOLV, '--no-resolved', ...runArgs] }), { stdio: ['ignore', 'ignore', 'pipe'] });
    this.watcher = w;
    return w;
  }

  socketHostPath(): string {
    return this.lab.netvm.hostPath(SOCKET);
  }

  request(req: Record<string, unknown>, timeoutMs = 20_000): Promise<Reply> {
    return controlRequest(this.socketHostPath(), req, { timeoutMs });
  }

  /** A vif (and its xenstore backend entries) whose other end is `eth<domid>` of one shared peer qube. */
  async plainVif(domid: number, peerName = 'peers'): Promise<{ vif: string; domid: number; ip: string }> {
    this.peer ??= await this.lab.session.qube(peerName);
    const peer = this.peer;
    const vif = `vif${domid}.0`;
    const ip = `10.137.${Math.floor(domid / 250)}.${(domid % 250) + 3}`;
    await this.lab.session.link(this.lab.netvm, vif, peer, `eth${domid}`, { aMac: 'fe:ff:ff:ff:ff:ff', bMac: '00:16:3e:5e:6c:00', up: false });
    await this.lab.setXenstore({ domid, ip, ip6: '' });
    return { vif, domid, ip };
  }
}

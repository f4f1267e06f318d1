// A client qube and a netvm qube joined by a veth pair (client eth0 ↔ netvm vif12.0), the
// real QubesDB daemon inside the client, an FFI client for the test to write keys as dom0
// would, and the real `qubes-net-guest` CLI run inside the client.
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ipBatch, ipJson } from '@qubes-net/common';
import { openQubesDB, type QubesDB } from '@qubes-net/qubesdb';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { startQubesDB, type RunningQubesDB } from '../helpers/qubesdb.js';
import { waitFor } from '../helpers/wait.js';
import { spawnAgent, type AgentProcess, type LogLine } from '../helpers/agent-process.js';
import { APPENDIX_A } from './fixtures.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(repoRoot, 'packages', 'guest-agent', 'dist', 'cli.js');
/** The C client the udev-started uplink unit runs (`make -C native-bindings`). */
export const UPLINK = join(repoRoot, 'native-bindings', 'build', 'qubes-net-uplink');

/**
 * An executable stand-in for /usr/bin/qubes-net-guest (what qubes-net-uplink execs without a
 * daemon): a Node script, not a shell wrapper, that notes each run in `marker` and then runs
 * the real CLI with the same arguments.
 */
export async function writeCliWrapper(path: string, marker: string): Promise<void> {
  if (!path.endsWith('.mjs')) throw new Error('the wrapper is an ES module: its name must end in .mjs');
  await writeFile(path, [
    `#!${process.execPath}`,
    `import { appendFileSync } from 'node:fs';`,
    `appendFileSync(${JSON.stringify(marker)}, JSON.stringify(process.argv.slice(2)) + '\\n');`,
    `await import(${JSON.stringify(pathToFileURL(CLI).href)});`,
    '',
  ].join('\n'));
  await chmod(path, 0o755);
}

export const CLIENT_MAC = '00:16:3e:5e:6c:00';
/** The client's eth0 is a veth (no device: driver "none"); on Xen only driver vif counts. */
export const LAB_UPLINK_ENV = { QUBES_NET_UPLINK_DRIVERS: 'vif,none' } as const;
export const VIF = 'vif12.0';

export type { LogLine };

export function parseLogLines(stdout: string): LogLine[] {
  return stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
}

export interface Agent extends AgentProcess {
  stop(): Promise<number | null>;
}

export class GuestLab {
  private constructor(
    readonly session: NetnsSession,
    readonly client: Qube,
    readonly netvm: Qube,
    readonly qdb: RunningQubesDB,
    readonly db: QubesDB,
  ) {}

  /** Builds the two qubes, links them, starts QubesDB in the client. Call destroy() in an after hook. */
  static async create(label: string): Promise<GuestLab> {
    const session = await NetnsSession.create(label);
    try {
      const [client, netvm] = await Promise.all([session.qube('client'), session.qube('netvm')]);
      const qdb = await startQubesDB({ qube: client });
      const lab = new GuestLab(session, client, netvm, qdb, openQubesDB({ runDir: qdb.runDir }));
      await lab.linkNetvm();
      return lab;
    } catch (err) {
      await session.destroy().catch(() => undefined);
      throw err;
    }
  }

  async destroy(): Promise<void> {
    await this.db.close().catch(() => undefined);
    await this.qdb.stop().catch(() => undefined);
    await this.session.destroy();
  }

  /** Removes every key a test may have written (dom0's and ours). */
  async clearKeys(): Promise<void> {
    for (const k of await this.db.list('/qubes-')) await this.db.rm(k);
    await this.db.rm('/net-config/');
  }

  /** (Re)creates the veth pair and gives the netvm side what the driver agent would. */
  async linkNetvm(): Promise<void> {
    await this.session.link(this.netvm, VIF, this.client, 'eth0', { aMac: 'fe:ff:ff:ff:ff:ff', bMac: CLIENT_MAC, up: false });
    const res = await ipBatch([
      `link set dev ${VIF} up`,
      `address replace 10.137.0.3/32 dev ${VIF}`,
      `address replace fd09:24ef:4179::a89:3/128 dev ${VIF} nodad`,
      `route replace 10.137.0.0/16 dev ${VIF}`,
      `route replace fd09:24ef:4179::/64 dev ${VIF}`,
    ], { netns: this.netvm.netns });
    if (!res.ok) throw new Error(`netvm side: ${res.stderr}`);
  }

  async writeKeys(keys: Record<string, string | undefined>): Promise<void> {
    for (const [k, v] of Object.entries(keys)) {
      if (v === undefined) await this.db.rm(k);
      else await this.db.write(k, v);
    }
  }

  async writeAppendixA(over: Record<string, string | undefined> = {}): Promise<void> {
    await this.writeKeys({ ...APPENDIX_A, ...over });
  }

  /** Runs the CLI once inside the client. */
  async cli(args: string[]): Promise<{ code: number; logs: LogLine[]; stdout: string }> {
    const res = await this.client.exec(process.execPath, [CLI, ...args], { allowFailure: true, env: { QUBES_NET_LOG_LEVEL: 'debug', ...LAB_UPLINK_ENV } });
    return { code: res.exitCode, logs: parseLogLines(res.stdout), stdout: res.stdout };
  }

  /** Runs `qubes-net-uplink ARGS` inside the client (the CLI it falls back to: `cli`, see writeCliWrapper). */
  async uplink(args: string[], cli: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
    const res = await this.client.exec(UPLINK, args, { allowFailure: true, env: { QUBES_NET_GUEST_CLI: cli, QUBES_NET_LOG_LEVEL: 'debug', ...LAB_UPLINK_ENV, ...env } });
    return { code: res.exitCode, stdout: res.stdout, stderr: res.stderr };
  }

  /** Starts `qubes-net-guest run` inside the client, collecting its log lines. */
  startAgent(args: string[] = []): Agent {
    const { child, logs, exited } = spawnAgent(this.client, [CLI, 'run', ...args], { ...LAB_UPLINK_ENV });
    return {
      child,
      logs,
      exited,
      async stop() {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        return exited;
      },
    };
  }

  /** Kernel state of the client's eth0, in a form tests compare. */
  async eth0(): Promise<EthState> {
    const ns = { netns: this.client.netns };
    const links = await ipJson<any[]>(['address', 'show'], ns);
    const link = links.find((l) => l.ifname === 'eth0');
    const [r4, r6, neigh] = await Promise.all([
      ipJson<any[]>(['-4', 'route', 'show', 'table', 'main'], ns),
      ipJson<any[]>(['-6', 'route', 'show', 'table', 'main'], ns),
      ipJson<any[]>(['neigh', 'show', 'nud', 'permanent'], ns),
    ]);
    const onEth0 = (x: { dev?: string }) => x.dev === 'eth0';
    const fmtRoute = (r: any) => `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''}${r.flags?.includes('onlink') ? ' onlink' : ''}${r.scope ? ` scope ${r.scope}` : ''}`;
    return {
      present: link !== undefined,
      up: link ? (link.flags as string[]).includes('UP') : false,
      group: link?.group,
      addresses: link ? (link.addr_info as any[]).filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`).sort() : [],
      routes4: r4.filter(onEth0).filter((r) => r.protocol !== 'kernel').map(fmtRoute).sort(),
      routes6: r6.filter(onEth0).filter((r) => r.protocol !== 'kernel').map(fmtRoute).sort(),
      neighbours: neigh.filter(onEth0).map((n) => `${n.dst} ${n.lladdr}`).sort(),
    };
  }

  /**
   * Waits until the kernel is done with duplicate address detection on eth0 (the link-local
   * address stops being tentative, and its local route appears): the kernel's own change,
   * which a "nothing changed" comparison must not pick up.
   */
  async settled(): Promise<void> {
    await waitFor('DAD finished on eth0', async () => {
      const links = await ipJson<any[]>(['address', 'show', 'dev', 'eth0'], { netns: this.client.netns });
      return !(links[0]?.addr_info as any[] | undefined)?.some((a) => a.tentative);
    });
  }

  /** Full JSON dumps of the client's network state, for "nothing changed" comparisons. */
  async dump(): Promise<string> {
    const ns = { netns: this.client.netns };
    const parts = await Promise.all([
      ipJson(['-d', 'link', 'show'], ns),
      ipJson(['address', 'show'], ns),
      ipJson(['-4', 'route', 'show', 'table', 'all'], ns),
      ipJson(['-6', 'route', 'show', 'table', 'all'], ns),
      ipJson(['neigh', 'show', 'nud', 'permanent'], ns),
    ]);
    // Counters and lifetimes move by themselves; everything else must stay put.
    return JSON.stringify(parts, (k, v) => (['stats64', 'valid_life_time', 'preferred_life_time'].includes(k) ? undefined : v));
  }

  resolvConf(): Promise<string> {
    return readFile(this.client.hostPath('/etc/resolv.conf'), 'utf8');
  }

  async status(): Promise<{ generation: string; status: string; detail: string } | undefined> {
    const v = await this.db.read('/qubes-uplink-status');
    const m = v === undefined ? null : /^(\S+) (ok|error|unconfigured) ?(.*)$/.exec(v);
    return m ? { generation: m[1]!, status: m[2]!, detail: m[3]! } : undefined;
  }

  /** Waits for a feedback value other than `previous` that satisfies `check`. */
  async waitStatus(previous: string | undefined, check: (s: { status: string; detail: string }) => boolean, what: string) {
    return waitFor(what, async () => {
      const s = await this.status();
      return s && s.generation !== previous && check(s) ? s : undefined;
    });
  }
}

export interface EthState {
  present: boolean;
  up: boolean;
  group: string | undefined;
  addresses: string[];
  routes4: string[];
  routes6: string[];
  neighbours: string[];
}

/** Appendix A's expected client state (global addresses, non-kernel routes, permanent neighbours). */
export const APPENDIX_A_STATE: EthState = {
  present: true,
  up: true,
  group: '1',
  addresses: ['10.137.0.7/32', 'fd09:24ef:4179::a89:7/128'],
  routes4: ['10.137.0.3 scope link', 'default via 10.137.0.3 onlink'],
  routes6: ['default via fd09:24ef:4179::a89:3 onlink', 'fd09:24ef:4179::a89:3'],
  neighbours: ['10.137.0.3 fe:ff:ff:ff:ff:ff', 'fd09:24ef:4179::a89:3 fe:ff:ff:ff:ff:ff'],
};

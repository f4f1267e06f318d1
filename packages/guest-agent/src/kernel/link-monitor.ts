// Link events from a long-running `ip -o monitor link` child: one line per event, cheap when
// idle. The agent only uses them as a trigger to re-read the state, so parsing stays minimal.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface LinkEvent {
  deleted: boolean;
  ifindex: number;
  ifname: string;
  /** The link/ether address when the line carries one. */
  mac: string | undefined;
}

/** Parses one line of `ip -o monitor link`, e.g. `3: eth0: <…> … link/ether 00:16:3e:… brd …`. */
export function parseLinkEventLine(line: string): LinkEvent | undefined {
  const m = /^(Deleted )?(\d+): ([^:@\s]+)(?:@[^:\s]+)?: /.exec(line);
  if (!m) return undefined;
  const mac = /link\/ether ([0-9a-f]{2}(?::[0-9a-f]{2}){5})/.exec(line);
  return { deleted: m[1] !== undefined, ifindex: Number(m[2]), ifname: m[3]!, mac: mac?.[1] };
}

export interface LinkMonitorOptions {
  onEvent: (e: LinkEvent) => void;
  /** Called when the child dies unexpectedly; it is restarted after `restartDelayMs`. */
  onExit?: (code: number | null, signal: NodeJS.Signals | null) => void;
  restartDelayMs?: number;
}

export class LinkMonitor {
  private child: ChildProcess | undefined;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: LinkMonitorOptions) {}

  start(): void {
    if (this.stopped) return;
    const child = spawn(process.env.QUBES_NET_IP ?? 'ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.child = child;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const e = parseLinkEventLine(line);
      if (e) this.opts.onEvent(e);
    });
    child.on('error', () => { /* reported through 'exit' */ });
    child.on('exit', (code, signal) => {
      if (this.stopped) return;
      this.opts.onExit?.(code, signal);
      this.restartTimer = setTimeout(() => this.start(), this.opts.restartDelayMs ?? 1000);
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.child?.kill('SIGTERM');
  }
}

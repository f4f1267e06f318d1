// Follows link and address changes with one long-lived `ip -o monitor link address`: an
// uplink going down/up or getting a new address makes the driver re-learn DNS (own
// addresses must never be DNAT targets) and update the flowtable's devices; a vif that
// disappears without an offline event is cleaned up.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface LinkEvent {
  ifname: string;
  kind: 'link' | 'addr';
  deleted: boolean;
}

/** Parses one line of `ip -o monitor link address`. */
export function parseMonitorLine(line: string): LinkEvent | undefined {
  const deleted = line.startsWith('Deleted ');
  const rest = deleted ? line.slice(8) : line;
  // link: "5: vif5.0@if4: <BROADCAST,…> …"; addr: "5: vif5.0    inet 10.0.0.1/32 …"
  const m = /^\d+:\s+([^\s:@]+)(@\S+)?:?\s+(.*)$/.exec(rest);
  if (!m) return undefined;
  const tail = m[3]!;
  const kind = /^inet6?\s/.test(tail) ? 'addr' : 'link';
  return { ifname: m[1]!, kind, deleted };
}

export class UplinkMonitor {
  private child: ChildProcess | undefined;
  private stopped = false;

  constructor(private readonly onEvent: (e: LinkEvent) => void, private readonly onError: (err: Error) => void) {}

  start(): void {
    if (this.stopped) return;
    const child = spawn('ip', ['-o', 'monitor', 'link', 'address'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      const e = parseMonitorLine(line);
      if (e) this.onEvent(e);
    });
    child.on('error', (err) => this.onError(err));
    child.on('exit', (code) => {
      if (this.stopped) return;
      this.onError(new Error(`ip monitor exited (${code}); restarting it`));
      setTimeout(() => this.start(), 1000).unref();
    });
  }

  stop(): void {
    this.stopped = true;
    this.child?.kill('SIGTERM');
  }
}

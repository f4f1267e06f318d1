// A long-running `ip -force -batch -` for the daemon's per-turn ip lines. Starting ip costs
// ~2 ms (far more on a loaded machine, and more as the daemon's RSS grows: fork copies its page
// tables) against ~0.3 ms for lines sent to a process that is already running; a turn's nft
// part runs in process (libnftables), so this spawn would be most of a vif's latency.
// Semantics stay those of the one-shot tool: ip runs the lines one by one, its errors are
// numbered by input line.
//
// Knowing when a request is done: after it we send a sentinel command that fails on purpose
// with a recognisable message on stderr (a device named qnsN that does not exist). Errors
// come on stderr in order, so everything before the sentinel's message belongs to the
// request. Nothing is read from stdout.
//
// ip's cache grows with the devices it has seen (~20 KB each), so the process is replaced by
// a fresh one once its RSS passes a bound, between two requests. Any trouble (ip exits, as
// it does on some failing `neigh` changes; a time-out; a write error) fails the request with
// SessionBroken; the caller then falls back to the one-shot tool, and the next request starts
// a fresh process.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { IpLine } from '../model/planner.js';
import type { IpFailure } from './ip-writer.js';
import { parseBatchErrors } from './ip-writer.js';

export class SessionBroken extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SessionBroken';
  }
}

interface Pending {
  seq: number;
  resolve: (stderr: string[]) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** One long-running tool reading commands on stdin. Requests run one after the other. */
abstract class Session {
  private child: ChildProcess | undefined;
  private lines: string[] = [];
  private partial = '';
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private seq = 0;
  /** Lines written to the current process (ip numbers its errors by input line). */
  protected written = 0;

  constructor(
    private readonly command: string,
    private readonly args: readonly string[],
    /** Replace the process once its RSS is above this (kB). */
    private readonly maxRssKb: number,
    private readonly timeoutMs = 30_000,
  ) {}

  /** The command whose failure marks the end of request `seq`. */
  protected abstract sentinel(seq: number): string;
  /** Whether stderr lines so far end with the sentinel's complete message; returns where that message starts. */
  protected abstract sentinelAt(lines: readonly string[], seq: number, sentinelLineNo: number): number | undefined;

  private start(): ChildProcess {
    const child = spawn(this.command, [...this.args], { stdio: ['pipe', 'ignore', 'pipe'] });
    this.child = child;
    this.written = 0;
    this.lines = [];
    this.partial = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      if (this.child === child) this.onStderr(d);
    });
    child.stdin!.on('error', () => this.broken(child, `${this.command}: stdin closed`));
    child.once('error', (err) => this.broken(child, `${this.command}: ${err.message}`));
    child.once('exit', (code, signal) => this.broken(child, `${this.command} exited (${code ?? signal})`));
    return child;
  }

  private onStderr(data: string): void {
    const parts = (this.partial + data).split('\n');
    this.partial = parts.pop()!;
    this.lines.push(...parts);
    const p = this.pending;
    if (!p) return;
    const at = this.sentinelAt(this.lines, p.seq, this.sentinelLineNo);
    if (at === undefined) return;
    const mine = this.lines.slice(0, at);
    this.lines = [];
    this.pending = undefined;
    clearTimeout(p.timer);
    p.resolve(mine);
  }

  private sentinelLineNo = 0;

  /** `child` is no longer usable: fail whatever waits on it (a later process is left alone). */
  private broken(child: ChildProcess | undefined, reason: string): void {
    if (!child || this.child !== child) return;
    this.child = undefined;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    const p = this.pending;
    this.pending = undefined;
    if (p) {
      clearTimeout(p.timer);
      p.reject(new SessionBroken(`${reason}; stderr: ${[...this.lines, this.partial].join(' | ').slice(0, 300)}`));
    }
  }

  /** Sends `lines` (no newline inside any) and resolves with the stderr lines they produced. */
  protected request(lines: readonly string[]): Promise<{ stderr: string[]; firstLine: number }> {
    const run = () => new Promise<{ stderr: string[]; firstLine: number }>((resolve, reject) => {
      const child = this.child ?? this.start();
      const seq = ++this.seq;
      const firstLine = this.written + 1;
      this.written += lines.length + 1;
      this.sentinelLineNo = this.written;
      const timer = setTimeout(() => this.broken(child, `${this.command}: no answer within ${this.timeoutMs} ms`), this.timeoutMs);
      this.pending = { seq, timer, reject, resolve: (stderr) => resolve({ stderr, firstLine }) };
      child.stdin!.write(lines.join('\n') + '\n' + this.sentinel(seq) + '\n');
    });
    const next = this.queue.then(run, run).finally(() => this.recycleIfBig());
    this.queue = next.catch(() => undefined);
    return next;
  }

  private recycleIfBig(): void {
    const child = this.child;
    if (!child?.pid || this.pending) return;
    let rssKb = 0;
    try {
      rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      return;
    }
    if (rssKb > this.maxRssKb) this.close();
  }

  /** Starts the process before the first request needs it (its spawn then overlaps other waiting). */
  warm(): void {
    if (!this.child) this.start();
  }

  close(): void {
    const child = this.child;
    this.child = undefined;
    child?.stdin?.end();
    child?.kill('SIGTERM');
  }
}

/** `ip -force -batch -`: lines one by one, failures attributed per line. */
export class IpSession extends Session {
  constructor(timeoutMs?: number) {
    super('ip', ['-force', '-batch', '-'], 6 * 1024, timeoutMs);
  }

  protected sentinel(seq: number): string {
    return `link show dev qns${seq % 1_000_000_000}`;
  }

  // ip -force reports the sentinel as 'Device "qnsN" does not exist.' then "Command failed -:L".
  protected sentinelAt(lines: readonly string[], _seq: number, sentinelLineNo: number): number | undefined {
    const end = lines.lastIndexOf(`Command failed -:${sentinelLineNo}`);
    if (end < 0) return undefined;
    let start = end;
    while (start > 0 && !lines[start - 1]!.startsWith('Command failed -:')) start--;
    return start;
  }

  /** Applies the lines; returns the failing ones (like applyIpLines). Throws SessionBroken. */
  async apply(lines: readonly IpLine[]): Promise<IpFailure[]> {
    if (lines.length === 0) return [];
    for (const l of lines) if (l.line.includes('\n')) throw new Error(`ip batch line contains a newline: ${JSON.stringify(l.line)}`);
    const { stderr, firstLine } = await this.request(lines.map((l) => l.line));
    const failures: IpFailure[] = [];
    for (const [n, message] of parseBatchErrors(stderr.join('\n'))) {
      const l = lines[n - firstLine];
      if (l) failures.push({ ...l, message });
    }
    return failures;
  }
}

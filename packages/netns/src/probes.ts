// Library side of the qn-* probes: run them inside a qube and parse what they print.
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import type { DnsAnswer } from './dns-wire.js';
import { pollUntil } from './poll.js';
import type { Qube } from './qube.js';

export interface DnsResult {
  /** NOERROR, NXDOMAIN, REFUSED, …, TIMEOUT when no reply came, REJECTED when an ICMP error did */
  rcode: string;
  /** The errno of a REJECTED query (ECONNREFUSED for ICMP port unreachable). */
  error?: string;
  /** Milliseconds from sending to the outcome, measured inside the qube. */
  ms?: number;
  answers: DnsAnswer[];
  /** the A/AAAA data of the answers */
  addresses: string[];
}

/** One DNS query from inside `qube` to `server` (no retries). */
export async function dnsQuery(qube: Qube, server: string, name: string, type = 'A', opts: { timeoutMs?: number } = {}): Promise<DnsResult> {
  const r = await qube.exec('qn-dns-query', [server, name, type, '--timeout', String(opts.timeoutMs ?? 2000)], { allowFailure: true });
  if (r.exitCode !== 0 && r.exitCode !== 3) throw new Error(`qn-dns-query failed (${r.exitCode}): ${r.stderr.trim()}`);
  const o = JSON.parse(r.stdout) as DnsResult;
  return { rcode: o.rcode, answers: o.answers, addresses: o.addresses, ...(o.error ? { error: o.error } : {}), ...(o.ms !== undefined ? { ms: o.ms } : {}) };
}

export interface HttpResult {
  /** 0 when the connection failed or timed out */
  status: number;
  body: string;
  error?: string;
  headers?: Record<string, string>;
}

/** GET `url` from inside `qube`. Never throws for network errors: look at status/error. */
export async function httpGet(qube: Qube, url: string, opts: { timeoutMs?: number } = {}): Promise<HttpResult> {
  const r = await qube.exec('qn-http-get', [url, '--json', '--timeout', String(opts.timeoutMs ?? 3000)], { allowFailure: true });
  if (r.exitCode === 2) throw new Error(`qn-http-get: ${r.stderr.trim()}`);
  const o = JSON.parse(r.stdout) as { status: number; body?: string; error?: string; headers?: Record<string, string> };
  return { status: o.status, body: o.body ?? '', ...(o.error ? { error: o.error } : {}), ...(o.headers ? { headers: o.headers } : {}) };
}

/** ICMP echo from inside `qube`; true when a reply came within timeoutMs. */
export async function ping(qube: Qube, address: string, opts: { count?: number; timeoutMs?: number } = {}): Promise<boolean> {
  const r = await qube.exec('qn-ping', ['-c', String(opts.count ?? 1), '-W', String(opts.timeoutMs ?? 1000), address], { allowFailure: true });
  if (r.exitCode === 2) throw new Error(`qn-ping: ${r.stderr.trim()}`);
  return r.exitCode === 0;
}

export interface TcpHoldEvent {
  event: 'connected' | 'echo' | 'broken' | 'done' | 'stopped';
  n?: number;
  reason?: string;
  local?: string;
  remote?: string;
  echoes?: number;
}

/** A TCP connection held open by qn-tcp-hold inside a qube. */
export class TcpHold {
  readonly events: TcpHoldEvent[] = [];
  readonly ended: Promise<TcpHoldEvent>;

  constructor(readonly child: ChildProcess) {
    let resolveEnd!: (e: TcpHoldEvent) => void;
    this.ended = new Promise((r) => (resolveEnd = r));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const ev = JSON.parse(line) as TcpHoldEvent;
        this.events.push(ev);
        if (ev.event === 'broken' || ev.event === 'done' || ev.event === 'stopped') resolveEnd(ev);
      } catch {
        // not ours
      }
    });
    child.once('exit', () => resolveEnd({ event: 'broken', reason: 'process exited' }));
  }

  echoes(): number {
    return this.events.filter((e) => e.event === 'echo').length;
  }

  /** The final event if the connection ended, else undefined. */
  brokenEvent(): TcpHoldEvent | undefined {
    return this.events.find((e) => e.event === 'broken');
  }

  /** Resolves once `n` more echoes arrived than when called; rejects if the connection breaks first. */
  async waitForMoreEchoes(n: number, timeoutMs = 10_000): Promise<void> {
    const target = this.echoes() + n;
    await pollUntil(`${n} more echoes`, () => {
      const b = this.brokenEvent();
      if (b) throw new Error(`connection broke: ${b.reason}`);
      return this.echoes() >= target;
    }, timeoutMs);
  }

  /** Stops the probe (SIGTERM) and returns its last event. */
  async stop(): Promise<TcpHoldEvent> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.ended;
  }
}

/** Opens a held TCP connection from `qube` to a line-echo service (the fake internet's ports 1234/4321); resolves once connected. */
export async function tcpHold(qube: Qube, host: string, port: number, opts: { intervalMs?: number; stallMs?: number } = {}): Promise<TcpHold> {
  const child = qube.spawn('qn-tcp-hold', [host, String(port), '--interval', String(opts.intervalMs ?? 100), '--stall', String(opts.stallMs ?? 2000)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const hold = new TcpHold(child);
  await pollUntil('tcp hold connected', () => {
    const b = hold.events.find((e) => e.event === 'broken');
    if (b) throw new Error(`qn-tcp-hold could not connect to ${host}:${port}: ${b.reason}`);
    return hold.events.some((e) => e.event === 'connected');
  }, 15_000);
  return hold;
}

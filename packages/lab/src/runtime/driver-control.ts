// Client side of the driver agent's control socket (docs/contracts.md): one JSON request per
// connection, one JSON line back. The lab uses it for readiness (`status`) and, as
// NetworkManager's dispatcher hook would, to say the uplink's DNS changed (`dns-changed`).
import { connect } from 'node:net';
import type { Qube } from '@qubes-net/netns';

export function driverSocketPath(q: Qube): string {
  return q.hostPath('/run/qubes-net/driver.sock');
}

export interface DriverReply {
  ok: boolean;
  error?: string;
  [key: string]: unknown;
}

export function sendDriverRequest(socketPath: string, request: Record<string, unknown>, timeoutMs = 5_000): Promise<DriverReply> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no reply from ${socketPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(request) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.destroy();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as DriverReply);
      } catch (err) {
        reject(new Error(`bad reply from ${socketPath}: ${buf.slice(0, 200)}`));
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('end', () => {
      clearTimeout(timer);
      if (!buf.includes('\n')) reject(new Error(`${socketPath} closed without a reply`));
    });
  });
}

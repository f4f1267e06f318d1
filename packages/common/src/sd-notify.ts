// systemd readiness notification (READY=1, RELOADING=1 …) without linking libsystemd: the
// datagram goes to $NOTIFY_SOCKET through libc's socket/sendto, called with koffi. Without
// NOTIFY_SOCKET it does nothing.
import { createRequire } from 'node:module';

// koffi is required on first use only: most processes never run under systemd.
const requireLazily = createRequire(import.meta.url);

let sender: ((msg: string) => boolean) | undefined;

function makeSender(): (msg: string) => boolean {
  const koffi = requireLazily('koffi') as typeof import('koffi');
  const libc = koffi.load('libc.so.6');
  const socket = libc.func('int socket(int, int, int)');
  const close = libc.func('int close(int)');
  const sendto = libc.func('long sendto(int, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)');
  return (msg: string) => {
    const target = process.env.NOTIFY_SOCKET;
    if (!target) return false;
    const AF_UNIX = 1, SOCK_DGRAM = 2, SOCK_CLOEXEC = 0o2000000;
    const path = Buffer.from(target.startsWith('@') ? '\0' + target.slice(1) : target);
    if (path.length > 107) return false;
    const addr = Buffer.alloc(2 + path.length + (target.startsWith('@') ? 0 : 1));
    addr.writeUInt16LE(AF_UNIX, 0);
    path.copy(addr, 2);
    const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
    if (fd < 0) return false;
    const data = Buffer.from(msg);
    const sent = sendto(fd, data, data.length, 0, addr, addr.length) as number;
    close(fd);
    return sent === data.length;
  };
}

/** Sends `state` (e.g. "READY=1") to systemd; returns whether a notification was sent. */
export function sdNotify(state: string): boolean {
  if (!process.env.NOTIFY_SOCKET) return false;
  sender ??= makeSender();
  return sender(state);
}

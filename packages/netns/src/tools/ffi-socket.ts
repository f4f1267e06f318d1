// The few libc socket calls node does not offer (raw ICMP sockets), through koffi.
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
export const socket = libc.func('int socket(int domain, int type, int protocol)');
export const close = libc.func('int close(int fd)');
export const sendto = libc.func('long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)');
export const recv = libc.func('long recv(int fd, _Out_ void *buf, size_t len, int flags)');
export const poll = libc.func('int poll(_Inout_ void *fds, unsigned long nfds, int timeout)');
export const ifNameToIndex = libc.func('unsigned int if_nametoindex(const char *ifname)');

export const AF_INET = 2, AF_INET6 = 10, SOCK_RAW = 3, SOCK_CLOEXEC = 0o2000000;
export const IPPROTO_ICMP = 1, IPPROTO_ICMPV6 = 58, POLLIN = 1, MSG_DONTWAIT = 0x40;

/** Waits until fd is readable or timeoutMs passes. */
export function waitReadable(fd: number, timeoutMs: number): boolean {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  const n = poll(pfd, 1, Math.max(0, Math.floor(timeoutMs))) as number;
  return n > 0 && (pfd.readInt16LE(6) & POLLIN) !== 0;
}

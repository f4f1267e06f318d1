// The reference's Appendix A, shared by the unit tests, the lab's dom0 tests and the benches:
// the QubesDB keys dom0 gives the client qube "work" (qid 7) behind sys-firewall (qid 3), with
// IPv6 enabled on sys-net.

/** The client side of the reference's Appendix A (qube "work"). */
export const APPENDIX_A: Record<string, string> = {
  '/qubes-vm-type': 'AppVM',
  '/qubes-mac': '00:16:3e:5e:6c:00',
  '/qubes-ip': '10.137.0.7',
  '/qubes-netmask': '255.255.255.255',
  '/qubes-gateway': '10.137.0.3',
  '/qubes-primary-dns': '10.139.1.1',
  '/qubes-secondary-dns': '10.139.1.2',
  '/qubes-ip6': 'fd09:24ef:4179::a89:7',
  '/qubes-gateway6': 'fd09:24ef:4179::a89:3',
};

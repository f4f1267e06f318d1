// Exit codes of `qubes-net-guest apply` (printed by --help). remove and run use 3, 4 and 64 the
// same way, and the control socket replies carry them so that `qubes-net-uplink` exits with the
// code the CLI would have.
export const EXIT = {
  ok: 0,
  usage: 64,
  invalidConfig: 2,
  kernel: 3,
  qubesdb: 4,
} as const;

// The exit codes every qubes-net command line uses (qubes-net-qdb keeps upstream's own).
// One table so that a C client relaying a reply, the one-shot fallback and the CLI all exit
// with the same number for the same failure; native-bindings/src/ctl-protocol.h is generated
// from it (scripts/gen-ctl-header.mjs).
export const EXIT = {
  ok: 0,
  /** The work was refused or failed for a reason not listed below. */
  failure: 1,
  /** QubesDB or argv gave values that do not validate. */
  invalidConfig: 2,
  /** The kernel (nft, ip, sysctl) refused a change. */
  kernel: 3,
  /** QubesDB could not be reached or answered an error. */
  qubesdb: 4,
  /** The agent did not answer in time, or hung up without a reply. */
  noReply: 5,
  /** Bad command line (like sysexits' EX_USAGE). */
  usage: 64,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

// Exit codes of `qubes-net-guest apply` (printed by --help): the shared table of every
// qubes-net command line (common/exit-codes.ts), so the uplink's C client, the CLI and the
// agents exit with the same number for the same failure.
export { EXIT } from '@qubes-net/common/exit-codes';

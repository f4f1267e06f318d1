// The one status shape every agent reports (over the control socket and `status --json`):
// who answers, since when, whether it works right now, and one section per part it hosts
// (driver, firewall). Parts keep their own fields; the envelope is the same everywhere.
export interface AgentStatus {
  agent: string;
  version: string;
  pid: number;
  /** ISO time the process started. */
  startedAt: string;
  /** False while start-up (base ruleset, first sync) has not finished. */
  ready: boolean;
  /** Requests and events being worked on now. */
  inFlight: number;
  /** ISO time of the last work (request, QubesDB event, DNS/uplink change, refresh). */
  lastWorkAt: string;
  /** Milliseconds without work after which the agent exits; 0 = never. */
  idleExitMs: number;
  /** How it came to listen: inherited from an activator (systemd or qubes-net-watch) or bound itself. */
  socket: { path: string; activated: boolean };
  parts: Record<string, unknown>;
}

// The typed form of one qube's firewall rules, as the parser produces them and the compiler
// and the conntrack matcher consume them.
import type { Family } from './skeleton.js';

export type Action = 'accept' | 'drop';
export type Proto = 'tcp' | 'udp' | 'icmp';

/** An address range: canonical network address and prefix length. */
export interface Cidr {
  family: Family;
  /** Network address with the host bits cleared, canonical text. */
  addr: string;
  prefix: number;
}

export type Destination =
  | { kind: 'cidr'; cidr: Cidr }
  | { kind: 'host'; name: string };

export interface PortRange {
  lo: number;
  hi: number;
}

export interface Rule {
  /** Where the rule came from: the 4-digit key, or 'policy' for the final default rule. */
  key: string;
  action: Action;
  proto?: Proto;
  dst?: Destination;
  /** specialtarget=dns: the destination is one of this VM's own DNS servers, port 53. */
  dns?: boolean;
  ports?: PortRange;
  icmpType?: number;
}

export type RuleErrorKind =
  | 'bad-address'
  | 'missing-marker'
  | 'missing-policy'
  | 'bad-policy'
  | 'bad-key'
  | 'empty-rule'
  | 'garbage'
  | 'empty-token'
  | 'token-without-equals'
  | 'unknown-option'
  | 'duplicate-option'
  | 'missing-action'
  | 'bad-action'
  | 'bad-proto'
  | 'bad-cidr'
  | 'bad-hostname'
  | 'bad-ports'
  | 'ports-reversed'
  | 'port-out-of-range'
  | 'ports-without-tcp-udp'
  | 'bad-icmptype'
  | 'icmptype-without-icmp'
  | 'bad-specialtarget'
  | 'family-mismatch'
  | 'conflicting-destinations'
  | 'internal';

export interface RuleError {
  kind: RuleErrorKind;
  /** The QubesDB key (relative: 'policy', '0003', or the full path for structural errors). */
  key: string;
  /** The offending value, already shortened for logs. */
  value?: string;
  message: string;
}

/** The outcome of reading one qube's rules: the full rule list or every error found. */
export type ParsedQube =
  | { ok: true; addr: string; family: Family; rules: Rule[] }
  | { ok: false; addr: string; family: Family; errors: RuleError[] };

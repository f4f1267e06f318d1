// One loop turn: what every manager wants from the kernel, gathered into ONE nft transaction
// and ONE ip batch, with the state each manager commits only once the kernel accepted the
// transaction. A manager never changes its own state while planning; it registers a commit.
import { NftTransaction } from '@qubes-net/common/kernel';
import type { IpLine } from '../model/planner.js';
import type { IpFailure } from '../kernel/ip-writer.js';
import type { Sysctl } from '../model/vif-state.js';

export interface TurnSysctl extends Sysctl {
  /** The vif it belongs to; a failure of a non-tolerant one fails that vif. */
  vif?: string;
  tolerant: boolean;
}

/** What the kernel said about the parts of a turn that are not all-or-nothing. */
export interface TurnOutcome {
  /** vif → why a non-tolerant sysctl or ip line for it failed. */
  failedVifs: Map<string, string>;
  ipFailures: IpFailure[];
}

export class Turn {
  /** Sysctls written before the transaction (proxy_arp before the link comes up). */
  readonly sysctls: TurnSysctl[] = [];
  /** The turn's one nft transaction. */
  readonly tx = new NftTransaction();
  readonly ip: IpLine[] = [];
  private readonly commits: Array<() => void> = [];
  private readonly rejects: Array<(err: Error) => void> = [];
  private readonly afters: Array<(o: TurnOutcome) => Promise<void> | void> = [];

  /** `full`: this turn rebuilds from the kernel (start, failed write, periodic, reconcile). */
  constructor(readonly full: boolean) {}

  /** Runs after the kernel accepted the transaction, before the ip batch. Synchronous. */
  onCommit(fn: () => void): void {
    this.commits.push(fn);
  }

  /** Runs when nft refused the transaction: nothing of this turn is in the kernel. */
  onReject(fn: (err: Error) => void): void {
    this.rejects.push(fn);
  }

  /** Runs after the ip batch (hooks, replies, feedback, forwarding, purges). */
  after(fn: (o: TurnOutcome) => Promise<void> | void): void {
    this.afters.push(fn);
  }

  commit(): void {
    for (const f of this.commits) f();
  }

  reject(err: Error): void {
    for (const f of this.rejects) f(err);
  }

  async finish(o: TurnOutcome): Promise<void> {
    for (const f of this.afters) await f(o);
  }
}

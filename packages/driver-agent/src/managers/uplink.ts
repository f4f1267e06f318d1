// The uplink: link and address events (one long-lived `ip -o monitor`) make DNS be re-learned
// (an own address must never be a DNAT target). A vif that disappears without an offline
// event is reported to the vif manager. (Flow offload is gone with the typed kernel layer:
// the kernels we run on have no nftables flowtables; model/flowtable.ts keeps the text.)
import type { Logger } from '@qubes-net/common';
import { UplinkMonitor, type LinkEvent } from '../kernel/uplink-monitor.js';
import type { Turn } from './turn.js';

export class UplinkManager {
  dirty = false;
  private monitor: UplinkMonitor | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: { log: Logger; onChange: () => void; onVifGone: (vif: string) => void }) {}

  follow(): void {
    this.monitor = new UplinkMonitor((e) => this.onLinkEvent(e), (err) => this.deps.log.warn({ err: err.message }, 'link monitor'));
    this.monitor.start();
  }

  private onLinkEvent(e: LinkEvent): void {
    if (/^vif\d/.test(e.ifname)) {
      if (e.kind === 'link' && e.deleted) this.deps.onVifGone(e.ifname);
      return;
    }
    if (e.ifname === 'lo') return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.deps.log.info({ ifname: e.ifname, kind: e.kind, deleted: e.deleted }, 'uplink changed');
      this.dirty = true;
      this.deps.onChange();
    }, 50);
  }

  /** Returns whether DNS must be re-learned this turn. */
  plan(turn: Turn): boolean {
    if (!this.dirty) return false;
    this.dirty = false;
    turn.onReject(() => (this.dirty = true));
    return true;
  }

  stop(): void {
    clearTimeout(this.timer);
    this.monitor?.stop();
  }
}

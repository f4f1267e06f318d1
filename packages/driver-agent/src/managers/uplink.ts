// The uplink: link and address events (one long-lived `ip -o monitor`) make DNS be re-learned
// (an own address must never be a DNAT target) and, where the kernel has flowtables, change
// the flowtable's devices. A vif that disappears without an offline event is reported to the
// vif manager.
import { readdir } from 'node:fs/promises';
import type { Logger } from '@qubes-net/common';
import { UplinkMonitor, type LinkEvent } from '../kernel/uplink-monitor.js';
import { interfaceExists } from '../kernel/procfs.js';
import { nftListJsonFast } from '../kernel/process.js';
import { flowtableBaseStatements, flowtableDeviceStatements, flowtableDevicesFromJson, ACCEL_FLOWTABLE } from '../model/flowtable.js';
import type { Turn } from './turn.js';

export async function currentUplinks(): Promise<string[]> {
  const names = await readdir('/proc/sys/net/ipv4/conf').catch(() => [] as string[]);
  return names.filter((n) => n !== 'all' && n !== 'default' && n !== 'lo' && !/^vif\d/.test(n) && /^[A-Za-z0-9_.-]{1,15}$/.test(n));
}

export class UplinkManager {
  /** Committed: the uplink devices in the flowtable. */
  private devices = new Set<string>();
  dirty = false;
  flowtables = false;
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

  /** The flowtable part of a full turn: only the devices it lacks (naming one it has is refused). */
  async planFull(turn: Turn, onlineVifs: readonly string[]): Promise<void> {
    if (!this.flowtables) return;
    const now = new Set(await currentUplinks());
    const present = flowtableDevicesFromJson(await nftListJsonFast(['flowtable', 'inet', 'qubes-nat-accel', ACCEL_FLOWTABLE]).catch(() => undefined));
    turn.nft.push(...flowtableBaseStatements([...now, ...onlineVifs].filter((d) => !present.includes(d))));
    turn.onCommit(() => (this.devices = now));
  }

  /** Returns whether DNS must be re-learned this turn. */
  async plan(turn: Turn): Promise<boolean> {
    if (!this.dirty) return false;
    this.dirty = false;
    turn.onReject(() => (this.dirty = true));
    if (this.flowtables) {
      const now = new Set(await currentUplinks());
      const add = [...now].filter((d) => !this.devices.has(d));
      const remove = [...this.devices].filter((d) => !now.has(d) && interfaceExists(d));
      turn.nft.push(...flowtableDeviceStatements(add, remove));
      turn.onCommit(() => (this.devices = now));
    }
    return true;
  }

  stop(): void {
    clearTimeout(this.timer);
    this.monitor?.stop();
  }
}

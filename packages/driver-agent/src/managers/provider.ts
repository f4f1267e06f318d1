// Provider settings and forwarding: the qube's own QubesDB keys (gateway, connected
// addresses, virtual DNS, the qubes-firewall service), the firewall skeleton, and the
// forwarding sysctls, switched on only once the base (and, where wanted, the firewall's drop
// policy) is in the kernel.
import type { Logger } from '@qubes-net/common';
import type { QubesDB } from '@qubes-net/qubesdb';
import { parseProviderConfig, PROVIDER_KEYS, type ProviderConfig } from '../model/provider-config.js';
import { addConnected } from '../model/ruleset.js';
import type { HostAccess } from '../kernel/host.js';
import { loadFirewallSkeleton, type SkeletonAdder } from '../firewall-skeleton.js';
import type { Turn } from './turn.js';

export const WATCHED_KEYS = Object.values(PROVIDER_KEYS);

export const EMPTY_PROVIDER: ProviderConfig = { virtualDns: [], connected4: [], connected6: [], firewallService: false, hardenInterfaces: false, behindQubesProvider: false };

/** What a turn works with: the settings it plans against, and whether they changed. */
export interface ProviderView {
  config: ProviderConfig;
  gatewayChanged: boolean;
  dnsInputsChanged: boolean;
}

export class ProviderManager {
  /** Committed: what the kernel was last programmed with. */
  config: ProviderConfig = EMPTY_PROVIDER;
  firewallLoaded = false;
  forwarding = { ipv4: false, ipv6: false };
  /** A watched key changed: re-read on the next turn. */
  dirty = false;

  constructor(private readonly deps: { qdb: QubesDB; log: Logger; firewall: 'auto' | 'on' | 'off'; ipv6Kernel: () => boolean; host: Pick<HostAccess, 'readSysctl' | 'writeSysctl'> }) {}

  /**
   * Reads and validates the keys; a rejected gateway keeps the last valid one. `quietGateway`:
   * a qube that provides no network has no gateway, and that is no error.
   */
  async read(quietGateway = false): Promise<ProviderConfig> {
    const raw = new Map<string, string | undefined>();
    await Promise.all(WATCHED_KEYS.map(async (k) => raw.set(k, await this.deps.qdb.read(k))));
    const { config, errors } = parseProviderConfig(raw);
    for (const e of errors) {
      if (quietGateway && e.key === PROVIDER_KEYS.gateway && e.reason.startsWith('missing')) continue;
      this.deps.log.error({ ...e.logFields() }, 'invalid provider setting');
    }
    if (!config.gateway && this.config.gateway) {
      this.deps.log.error({ key: PROVIDER_KEYS.gateway, kept: this.config.gateway }, 'keeping the last valid gateway');
      config.gateway = this.config.gateway;
    }
    if (this.deps.firewall !== 'auto') config.firewallService = this.deps.firewall === 'on';
    return config;
  }

  async skeleton(config: ProviderConfig): Promise<SkeletonAdder | undefined> {
    if (!config.firewallService) return undefined;
    const sk = await loadFirewallSkeleton();
    if (!sk.ok) {
      this.deps.log.error({ err: sk.error }, 'qubes-firewall service is on but its skeleton cannot be loaded: forwarding stays off');
      return undefined;
    }
    return sk.add;
  }

  /**
   * A turn that is not full: when the keys changed, their nft deltas (connected sets, the
   * skeleton when the service was switched on) and what else must follow.
   */
  async plan(turn: Turn, full: { config: ProviderConfig; skeleton: SkeletonAdder | undefined } | undefined): Promise<ProviderView> {
    const before = this.config;
    let config = before;
    let skeleton: SkeletonAdder | undefined;
    if (full) {
      config = full.config;
      skeleton = full.skeleton;
    } else if (this.dirty) {
      config = await this.read();
      if (before.connected4.join(' ') !== config.connected4.join(' ')) addConnected(turn.tx, 'ip', config.connected4);
      if (this.deps.ipv6Kernel() && before.connected6.join(' ') !== config.connected6.join(' ')) addConnected(turn.tx, 'ip6', config.connected6);
      if (config.firewallService && !this.firewallLoaded) {
        skeleton = await this.skeleton(config);
        skeleton?.(turn.tx);
      }
    }
    const wasDirty = this.dirty;
    this.dirty = false;
    turn.onCommit(() => {
      this.config = config;
      if (skeleton) this.firewallLoaded = true;
    });
    turn.onReject(() => {
      if (wasDirty) this.dirty = true;
    });
    turn.after(() => this.setForwarding());
    return {
      config,
      gatewayChanged: before !== EMPTY_PROVIDER && (before.gateway !== config.gateway || before.gateway6 !== config.gateway6 || before.hardenInterfaces !== config.hardenInterfaces),
      dnsInputsChanged: before.virtualDns.join(' ') !== config.virtualDns.join(' ') || before.behindQubesProvider !== config.behindQubesProvider || before.gateway !== config.gateway,
    };
  }

  /** A vif arrived before the gateway's watch event (react to state, not to event order). */
  async gatewayIfMissing(): Promise<ProviderConfig | undefined> {
    if (this.config.gateway) return undefined;
    const c = await this.read();
    return c.gateway ? { ...this.config, gateway: c.gateway } : undefined;
  }

  /** IPv4 forwarding once the base (and, if wanted, the firewall's drop policy) is in place. */
  setForwarding(): void {
    const { readSysctl, writeSysctl } = this.deps.host;
    const c = this.config;
    const allowed = !c.firewallService || this.firewallLoaded;
    const ipv6 = this.deps.ipv6Kernel();
    const want6 = allowed && !!c.gateway6 && ipv6;
    // Off again when the firewall's drop policy is wanted but missing (fail closed, 13.5).
    if (readSysctl('net/ipv4/ip_forward') !== (allowed ? '1' : '0')) {
      try {
        writeSysctl({ path: 'net/ipv4/ip_forward', value: allowed ? '1' : '0' });
        this.deps.log.info({}, allowed ? 'ipv4 forwarding on' : 'ipv4 forwarding off: the firewall skeleton is not loaded');
      } catch (err) {
        this.deps.log.error({ err: String(err) }, 'cannot change ipv4 forwarding');
      }
    }
    this.forwarding.ipv4 = readSysctl('net/ipv4/ip_forward') === '1';
    if (ipv6) {
      if (readSysctl('net/ipv6/conf/all/forwarding') !== (want6 ? '1' : '0')) {
        try {
          writeSysctl({ path: 'net/ipv6/conf/all/forwarding', value: want6 ? '1' : '0' });
          this.deps.log.info({ gateway6: c.gateway6 }, want6 ? 'ipv6 forwarding on' : 'ipv6 forwarding off');
        } catch (err) {
          this.deps.log.error({ err: String(err) }, 'cannot change ipv6 forwarding');
        }
      }
      this.forwarding.ipv6 = readSysctl('net/ipv6/conf/all/forwarding') === '1';
    }
  }
}

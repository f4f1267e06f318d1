// The QubesDB keys the guest agent reads (dom0 writes them, see the reference §2.2) and the one
// it writes back for feedback. Every value read from them is untrusted.

export const KEY = {
  mac: '/qubes-mac',
  ip: '/qubes-ip',
  netmask: '/qubes-netmask',
  gateway: '/qubes-gateway',
  primaryDns: '/qubes-primary-dns',
  secondaryDns: '/qubes-secondary-dns',
  /** The proposed IPv6 virtual DNS (qubes-issues 10038), written by dom0 for qubes with IPv6. */
  primaryDns6: '/qubes-primary-dns6',
  secondaryDns6: '/qubes-secondary-dns6',
  ip6: '/qubes-ip6',
  netmask6: '/qubes-netmask6',
  gateway6: '/qubes-gateway6',
  /** Non-empty when this qube serves downstream qubes (netvm / proxy). */
  netvmNetwork: '/qubes-netvm-network',
  disableDefaultRoute: '/qubes-service/disable-default-route',
  disableDnsServer: '/qubes-service/disable-dns-server',
  /** dom0's `vm-config.net-mtu` feature: the uplink's MTU (optional, see model/mtu.ts). */
  netMtu: '/vm-config/net-mtu',
  /** Written by us after every apply: `<generation> ok|error|unconfigured <detail>`. */
  uplinkStatus: '/qubes-uplink-status',
} as const;

/** Keys read one by one on every apply. */
export const EXACT_KEYS: readonly string[] = [
  KEY.mac, KEY.ip, KEY.netmask, KEY.gateway, KEY.primaryDns, KEY.secondaryDns,
  KEY.ip6, KEY.netmask6, KEY.gateway6, KEY.netvmNetwork, KEY.disableDefaultRoute, KEY.disableDnsServer,
  KEY.netMtu,
  KEY.primaryDns6, KEY.secondaryDns6,
];

/** The per-interface layout `/net-config/<MAC>/{ip,netmask,gateway,ip6,netmask6,gateway6,custom}`. */
export const NET_CONFIG_PREFIX = '/net-config/';

/**
 * What the run mode watches. The service directory is watched as a whole (cheap: a handful of
 * keys) so that a service switched on later is seen; our own status key is not in this list,
 * so writing it does not wake us up.
 */
export const WATCHED_PATHS: readonly string[] = [
  ...EXACT_KEYS.filter((k) => !k.startsWith('/qubes-service/')),
  '/qubes-service/',
  NET_CONFIG_PREFIX,
];

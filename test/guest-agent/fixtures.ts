// `ip -j -batch` output (STATE_READ_COMMANDS) captured from a real kernel in a throwaway
// namespace: eth0 (00:16:3e:5e:6c:00) veth-paired with vif12.0, in three states; and the
// QubesDB keys of the reference's Appendix A.

/** The client side of the reference's Appendix A (qube "work"). */
export const APPENDIX_A: Record<string, string> = {
  '/qubes-vm-type': 'AppVM',
  '/qubes-mac': '00:16:3e:5e:6c:00',
  '/qubes-ip': '10.137.0.7',
  '/qubes-netmask': '255.255.255.255',
  '/qubes-gateway': '10.137.0.3',
  '/qubes-primary-dns': '10.139.1.1',
  '/qubes-secondary-dns': '10.139.1.2',
  '/qubes-ip6': 'fd09:24ef:4179::a89:7',
  '/qubes-gateway6': 'fd09:24ef:4179::a89:3',
};


/** A new link, down, no addresses. */
export const FRESH = `[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[]},{"ifindex":2,"link":"eth0","ifname":"vif12.0","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP","M-DOWN"],"mtu":1500,"qdisc":"noqueue","operstate":"LOWERLAYERDOWN","group":"default","txqlen":1000,"link_type":"ether","address":"fe:ff:ff:ff:ff:ff","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]},{"ifindex":3,"link":"vif12.0","ifname":"eth0","flags":["BROADCAST","MULTICAST"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"00:16:3e:5e:6c:00","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]}]
[]
[]
[]
`;

/** After upstream's `setup-ip add eth0` commands for Appendix A (proto boot, no nodad). */
export const UPSTREAM = `[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[]},{"ifindex":2,"link":"eth0","ifname":"vif12.0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"fe:ff:ff:ff:ff:ff","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet6","local":"fe80::fcff:ffff:feff:ffff","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":3,"link":"vif12.0","ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"1","txqlen":1000,"link_type":"ether","address":"00:16:3e:5e:6c:00","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"10.137.0.7","prefixlen":32,"scope":"global","label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fd09:24ef:4179::a89:7","prefixlen":128,"scope":"global","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::216:3eff:fe5e:6c00","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]
[{"dst":"default","gateway":"10.137.0.3","dev":"eth0","flags":["onlink"]},{"dst":"10.137.0.3","dev":"eth0","scope":"link","flags":[]},{"type":"local","dst":"10.137.0.7","dev":"eth0","table":"local","protocol":"kernel","scope":"host","prefsrc":"10.137.0.7","flags":[]}]
[{"dst":"fd09:24ef:4179::a89:3","dev":"eth0","metric":1024,"flags":[],"pref":"medium"},{"dst":"fd09:24ef:4179::a89:7","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"vif12.0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"default","gateway":"fd09:24ef:4179::a89:3","dev":"eth0","metric":1024,"flags":["onlink"],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"eth0","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"vif12.0","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"}]
[{"dst":"10.137.0.3","dev":"eth0","lladdr":"fe:ff:ff:ff:ff:ff","state":["PERMANENT"]},{"dst":"fd09:24ef:4179::a89:3","dev":"eth0","lladdr":"fe:ff:ff:ff:ff:ff","state":["PERMANENT"]}]
`;

/** After our own planned lines for Appendix A (proto 75 on routes and neighbours). */
export const OURS = `[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[]},{"ifindex":2,"link":"eth0","ifname":"vif12.0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"fe:ff:ff:ff:ff:ff","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet6","local":"fe80::fcff:ffff:feff:ffff","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":3,"link":"vif12.0","ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"1","txqlen":1000,"link_type":"ether","address":"00:16:3e:5e:6c:00","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"10.137.0.7","prefixlen":32,"scope":"global","label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fd09:24ef:4179::a89:7","prefixlen":128,"scope":"global","nodad":true,"valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::216:3eff:fe5e:6c00","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]
[{"dst":"default","gateway":"10.137.0.3","dev":"eth0","protocol":"75","flags":["onlink"]},{"dst":"10.137.0.3","dev":"eth0","protocol":"75","scope":"link","flags":[]},{"type":"local","dst":"10.137.0.7","dev":"eth0","table":"local","protocol":"kernel","scope":"host","prefsrc":"10.137.0.7","flags":[]}]
[{"dst":"fd09:24ef:4179::a89:3","dev":"eth0","protocol":"75","metric":1024,"flags":[],"pref":"medium"},{"dst":"fd09:24ef:4179::a89:7","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"vif12.0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"default","gateway":"fd09:24ef:4179::a89:3","dev":"eth0","protocol":"75","metric":1024,"flags":["onlink"],"pref":"medium"},{"type":"local","dst":"fd09:24ef:4179::a89:7","dev":"eth0","table":"local","protocol":"kernel","metric":0,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"eth0","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"vif12.0","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"}]
[{"dst":"10.137.0.3","dev":"eth0","lladdr":"fe:ff:ff:ff:ff:ff","state":["PERMANENT"],"protocol":"75"},{"dst":"fd09:24ef:4179::a89:3","dev":"eth0","lladdr":"fe:ff:ff:ff:ff:ff","state":["PERMANENT"],"protocol":"75"}]
`;

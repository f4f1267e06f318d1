#!/bin/sh
# The bench baseline: upstream's per-vif `vif-route-qubes online` sequence, written from the
# reference's step list (section 4.1), one process per step as upstream runs them:
# xenstore-read for ip and mac, a C qdb-read per QubesDB key, nft for the accel table and
# for the set elements, conntrack -D twice per address, ip once per neighbour, link, route
# and address, and xenstore-write for hotplug-status. Shell builtins stay builtins.
#
#   QDB_READ=/path/to/qdb-read vif=vifN.M XENBUS_PATH=… upstream-vif-route.sh online
set -e
command=$1
[ "$command" = online ] || exit 0
case "$vif" in vif[0-9]*.[0-9]*) ;; *) exit 1 ;; esac
domid=${vif#vif}; domid=${domid%%.*}
metric=$((32752 - domid))

ip=$(xenstore-read "$XENBUS_PATH/ip")
back_ip=$("$QDB_READ" /qubes-netvm-gateway)
back_ip6=$("$QDB_READ" --default '' /qubes-netvm-gateway6)
"$QDB_READ" --default '' /qubes-netvm-primary-dns >/dev/null
"$QDB_READ" --default '' /qubes-netvm-secondary-dns >/dev/null
ip4=${ip%% *}
"$QDB_READ" --default '' "/mapped-ip/$ip4/visible-ip" >/dev/null
"$QDB_READ" --default '' "/mapped-ip/$ip4/visible-gateway" >/dev/null

echo 1 > "/proc/sys/net/ipv4/conf/$vif/proxy_arp"
read -r ipv6_disabled < "/proc/sys/net/ipv6/conf/$vif/disable_ipv6" || ipv6_disabled=1

# The accel table, recreated on every online (this kernel has no flowtables, so the chain
# alone: still one nft process, like upstream's).
nft -f - <<NFT
add table inet qubes-bench-accel
delete table inet qubes-bench-accel
table inet qubes-bench-accel {
  chain qubes-accel {
    type filter hook forward priority filter + 5; policy accept;
    meta l4proto { tcp, udp } iifgroup 2 oifgroup 1 counter
  }
}
NFT

mac=$(xenstore-read "$XENBUS_PATH/mac")
elements=""
for addr in $ip; do
  conntrack -D -s "$addr" >/dev/null 2>&1 || true
  conntrack -D -d "$addr" >/dev/null 2>&1 || true
  ip neighbour replace to "$addr" dev "$vif" lladdr "$mac" nud permanent
  case "$addr" in
    *:*) elements="$elements
add element ip6 qubes allowed { \"$vif\" . $addr }
add element ip6 qubes downstream { $addr }" ;;
    *) elements="$elements
add element ip qubes allowed { \"$vif\" . $addr }
add element ip qubes downstream { $addr }" ;;
  esac
done
printf '%s\n' "$elements" | nft -f -
ip link set dev "$vif" group 2 up
for addr in $ip; do
  case "$addr" in *:*) [ "$ipv6_disabled" = 1 ] && continue ;; esac
  ip route replace "$addr" dev "$vif" metric "$metric"
done
ip addr replace "$back_ip/32" dev "$vif"
if [ -n "$back_ip6" ] && [ "$ipv6_disabled" != 1 ]; then
  ip addr replace "$back_ip6/128" dev "$vif" nodad
  echo 1 > "/proc/sys/net/ipv6/conf/$vif/proxy_ndp"
fi
xenstore-write "$XENBUS_PATH/hotplug-status" connected

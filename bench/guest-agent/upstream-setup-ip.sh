#!/bin/sh
# The bench baseline: the sequence of upstream's `setup-ip add IF` (reference §3.2-3.3), as a
# small POSIX script of our own: one qdb-read process per QubesDB key, one `ip` process per
# kernel step, resolv.conf written with shell redirections. systemd-sysctl is left out (it is
# not installed here); so is NetworkManager. $QDB_READ is the C reader built by the bench.
IF=$1
QDB=${QDB_READ:?}
MAC=$(cat "/sys/class/net/$IF/address") || exit 1
[ -n "$MAC" ] || exit 0

custom=false
$QDB -q "/net-config/$MAC/custom"
case $? in 0) custom=true ;; 2) ;; *) exit 1 ;; esac

if ip=$($QDB "/net-config/$MAC/ip" 2>/dev/null); then
    prefix=/net-config/$MAC/
else
    prefix=/qubes-
    ip=$($QDB --default '' /qubes-ip)
fi
netmask=$($QDB --default 255.255.255.255 "${prefix}netmask")
gateway=$($QDB --default '' "${prefix}gateway")
if ip6=$($QDB "${prefix}ip6" 2>/dev/null); then
    netmask6=$($QDB --default 128 "${prefix}netmask6")
    gateway6=$($QDB --default '' "${prefix}gateway6")
else
    ip6=''; netmask6=128; gateway6=''
fi
primary_dns=$($QDB --default '' /qubes-primary-dns)
secondary_dns=$($QDB --default '' /qubes-secondary-dns)

if [ -n "$ip" ]; then
    ip address replace "$ip/$netmask" dev "$IF"
    [ "$custom" = true ] || ip neighbour replace "$gateway" dev "$IF" lladdr fe:ff:ff:ff:ff:ff nud permanent
    if [ -n "$ip6" ]; then
        ip address replace "$ip6/$netmask6" dev "$IF"
        if [ "$custom" = false ] && [ -n "$gateway6" ]; then
            ip neighbour replace "$gateway6" dev "$IF" lladdr fe:ff:ff:ff:ff:ff nud permanent
        fi
    fi
    ip link set dev "$IF" group 1 up
    if [ -n "$gateway" ]; then
        ip route replace to unicast "$gateway" dev "$IF" scope link
        case $gateway6 in
            ''|fe80:*) ;;
            *) ip route replace to unicast "$gateway6/$netmask6" dev "$IF" scope link ;;
        esac
        if [ ! -e /run/qubes-service/disable-default-route ]; then
            ip route replace to unicast default via "$gateway" dev "$IF" onlink
            [ -z "$gateway6" ] || ip route replace to unicast default via "$gateway6" dev "$IF" onlink
        fi
    fi
    [ -n "$primary_dns" ] || primary_dns=$gateway
    if ! grep -Fxqs /etc/resolv.conf /etc/qubes/protected-files.d/*.conf /rw/config/protected-files.d/*.conf; then
        [ ! -L /etc/resolv.conf ] || rm -f /etc/resolv.conf
        echo > /etc/resolv.conf
        if [ ! -e /run/qubes-service/disable-dns-server ]; then
            echo "nameserver $primary_dns" > /etc/resolv.conf
            echo "nameserver $secondary_dns" >> /etc/resolv.conf
        fi
    fi
fi

network=$($QDB --default '' /qubes-netvm-network)
if [ -n "$network" ]; then
    [ ! -x /rw/config/qubes-ip-change-hook ] || /rw/config/qubes-ip-change-hook
    [ ! -x /rw/config/qubes_ip_change_hook ] || /rw/config/qubes_ip_change_hook
fi
exit 0

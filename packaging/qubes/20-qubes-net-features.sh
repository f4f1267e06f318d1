#!/bin/sh
# qubes-net: tell dom0 whether this template's firewall agent handles dom0's firewall rules.
# Upstream's 10-qubes-core-agent-features.sh answers from qubes-firewall.service, which this
# package replaces by qubes-net-firewall.service; this script runs after it and corrects the
# answer (a later request for the same feature wins).
if systemctl -q is-enabled qubes-net-firewall.service 2>/dev/null; then
    qvm-features-request qubes-firewall=1
else
    qvm-features-request qubes-firewall=0
fi
# IPv6 virtual DNS (qubes-issues 10038): the guest lists /qubes-primary-dns6 and
# /qubes-secondary-dns6 in resolv.conf and the network agent DNATs (or rejects) them, so
# dom0 may write those keys for this template's qubes.
qvm-features-request supported-feature.ipv6dns=1

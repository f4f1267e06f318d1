#!/bin/sh
# qubes-net: tell dom0 that qubes based on this template can run the qubes-net service, so that
# `qvm-service QUBE qubes-net on|off` is offered (upstream advertises its own services the
# same way). A conffile: kept when the package is removed but not purged, hence the check; a
# qube without the package runs upstream's agents whatever the service says.
if [ -x /usr/lib/qubes-net/qubes-net-choice ]; then
    qvm-features-request supported-service.qubes-net=1
fi
# IPv6 virtual DNS (qubes-issues 10038): the guest lists /qubes-primary-dns6 and
# /qubes-secondary-dns6 in resolv.conf and the network agent DNATs (or rejects) them, so
# dom0 may write those keys for this template's qubes.
qvm-features-request supported-feature.ipv6dns=1

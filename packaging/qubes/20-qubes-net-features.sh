#!/bin/sh
# qubes-net: tell dom0 that qubes based on this template can run the qubes-net service, so that
# `qvm-service QUBE qubes-net on|off` is offered (upstream advertises its own services the
# same way). A conffile: kept when the package is removed but not purged, hence the check; a
# qube without the package runs upstream's agents whatever the service says.
if [ -x /usr/lib/qubes-net/qubes-net-choice ]; then
    qvm-features-request supported-service.qubes-net=1
fi

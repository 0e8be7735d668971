"""Two hosts, one collector: keepalived moves one service address between the two hosts, and tells the suite
on each host its role.

No election of our own: keepalived (VRRP, version 2, one advert a second, unicast to the peer) decides which host
holds ``PAIR_ADDRESS``. Both hosts start as BACKUP with ``nopreempt``: whoever holds the address keeps it, a host
that comes back stays the standby. A track script pings ``PAIR_WITNESS`` (the site's gateway) every second; a
host that cannot reach it goes to FAULT and gives the address up.

- ``keepalived.py``: keepalived's configuration from the PAIR_* settings (pure) and its command line;
- ``role.py``: the role file ``$VIIRS_BASE/run/pair.role`` (JSON: ``role`` MASTER, BACKUP, FAULT or STOP, and
  ``since``), written atomically by the notify reader keepalived runs (its notify FIFO keeps the changes in order),
  and read by whoever needs the role;
- ``cli.py``: ``avoviirscollector pair config|keepalived|notify|role``.

Nothing here starts unless PAIR_PEER is set (config.py): one host is the default.
"""

"""Guest IP discovery: where addresses come from, each with its source and age.

* ``libvirt_source``: libvirt ``interfaceAddresses`` (guest agent, DHCP leases, ARP);
* ``local_sweep``: scapy ARP/ICMP sweeps from this machine, or without raw sockets the
  neighbour table after a UDP poke (``neigh``);
* ``remote``: the same neighbour-table sweep on a remote host over its ssh connection;
* ``scheduler``: ``IpScanner`` runs them per host (background and on demand) and feeds an
  ``IpBook`` (``catkeeper.backend.ipscan.book``), which puts the addresses on VM rows by MAC.

Nothing here imports scapy until a privileged local sweep runs.
"""

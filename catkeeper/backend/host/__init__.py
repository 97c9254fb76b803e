"""One libvirt host: ``HostSession`` (connection in connection.py, inventory in session.py)."""

from catkeeper.backend.host.attempt import effective_uri
from catkeeper.backend.host.session import HostSession

__all__ = ["HostSession", "effective_uri"]

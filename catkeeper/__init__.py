"""catkeeper: a terminal UI for teams that share a pool of libvirt/KVM hosts."""

__version__ = "0.1.0"

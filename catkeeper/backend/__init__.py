"""Everything that talks to libvirt and ssh. Never imports textual or rich."""

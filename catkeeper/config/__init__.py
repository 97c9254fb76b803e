"""YAML configuration → typed, validated settings.

Search order: ``--config PATH``, ``$CATKEEPER_CONFIG``,
``$XDG_CONFIG_HOME/catkeeper/config.yaml`` (``~/.config`` when unset), then the embedded
demo fleet. Every error names the file, the line and the key.
"""

from catkeeper.config.loading import demo_config, find_config_path, load_config
from catkeeper.config.parse import parse_config
from catkeeper.config.settings import (
    DEMO_DIR,
    DEMO_SOURCE,
    LIBVIRT_TRANSPORTS,
    Config,
    ConfigError,
    GracefulStop,
    HostConfig,
    IpScan,
    LibvirtTransport,
    SshSettings,
    StaleSettings,
    Timing,
    current_user,
)

__all__ = [
    "DEMO_DIR",
    "DEMO_SOURCE",
    "LIBVIRT_TRANSPORTS",
    "Config",
    "ConfigError",
    "GracefulStop",
    "HostConfig",
    "IpScan",
    "LibvirtTransport",
    "SshSettings",
    "StaleSettings",
    "Timing",
    "current_user",
    "demo_config",
    "find_config_path",
    "load_config",
    "parse_config",
]

"""Where the configuration comes from: ``--config``, the environment, XDG, or the demo."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from catkeeper.config.parse import parse_config
from catkeeper.config.settings import DEMO_DIR, DEMO_SOURCE, Config, ConfigError, HostConfig
from catkeeper.config.views import with_saved_views


def find_config_path(explicit: str | None, env: Mapping[str, str]) -> str | None:
    """The config file to use, or None when there is none (the caller falls back to demo).

    A path the user named (``--config``, ``$CATKEEPER_CONFIG``) must exist: silently
    showing the demo fleet instead of a mistyped file would hide the mistake.
    """
    if explicit is not None:
        if not os.path.exists(explicit):
            raise ConfigError(explicit, None, "--config", "no such file")
        return explicit
    named = env.get("CATKEEPER_CONFIG")
    if named:
        if not os.path.exists(named):
            raise ConfigError(named, None, "$CATKEEPER_CONFIG", "no such file")
        return named
    base = env.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):  # the XDG spec says to ignore relative values
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    candidate = os.path.join(base, "catkeeper", "config.yaml")
    return candidate if os.path.exists(candidate) else None


def load_config(
    explicit: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    demo: bool = False,
    demo_dir: Path | None = None,
) -> Config:
    """The validated config from the search order, or the demo fleet when none is found."""
    env = os.environ if env is None else env
    if demo:
        return with_saved_views(demo_config(demo_dir), env)
    path = find_config_path(explicit, env)
    if path is None:
        return with_saved_views(demo_config(demo_dir), env)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(path, line, None, "not UTF-8 text") from e
    return with_saved_views(parse_config(text, path), env)


def demo_config(demo_dir: Path | None = None) -> Config:
    """One test-driver host per shipped XML file, so a fresh install has something to show."""
    folder = (demo_dir or DEMO_DIR).resolve()
    files = sorted(folder.glob("*.xml"), key=lambda p: p.name)
    if not files:
        raise ConfigError(DEMO_SOURCE, None, None, f"no demo fleet: no *.xml in {folder}")
    hosts = tuple(HostConfig(name=p.stem, uri=f"test://{p.as_posix()}") for p in files)
    return Config(hosts=hosts, source=DEMO_SOURCE)

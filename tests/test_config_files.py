"""Config files that parse: every key of a full file, the example, the search order, the demo."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from catkeeper.config import (
    Config,
    ConfigError,
    GracefulStop,
    SshSettings,
    Timing,
    demo_config,
    find_config_path,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parent.parent

GOOD_HOST = "hosts:\n  - name: a\n    uri: qemu:///system\n"


def test_full_file() -> None:
    text = textwrap.dedent(
        """\
        hosts:
          - name: lab1
            uri: qemu+ssh://root@lab1.example.net:2222/system?keyfile=/k&no_tty=1
            tags: [gpu]
            subnets: [10.0.0.7/24, "fd00::/64"]
          - name: lab2
            ssh:
              host: lab2
              user: ops
              port: 2222
              key: ~/.ssh/lab
              known_hosts: ~/.ssh/kh
              accept_unknown_host_key: true
          - name: lab3
            ssh: root@lab3:2022
            readonly: true
          - name: lab.4_x-y
            uri: test:///default
            ssh: "[::1]"
          - name: local
            uri: qemu+unix:///system?socket=/run/libvirt/libvirt-sock
        timing:
          connect_timeout: 2.5
          refresh_interval: 0
          keepalive_count: 7
        graceful_stop: {acpi_wait: 5}
        viewer: [remote-viewer, "vnc://{host}:{port}"]
        owner: alice
        readonly: true
        """
    )
    config = parse_config(text, "/etc/c.yaml")
    assert config.source == "/etc/c.yaml" and not config.is_demo
    lab1, lab2, lab3, lab4, local = config.hosts
    assert lab1.uri.startswith("qemu+ssh://root@lab1.example.net:2222/system?")
    assert lab1.ssh is None
    assert lab1.tags == ("gpu",)
    assert lab1.subnets == ("10.0.0.0/24", "fd00::/64")  # normalised
    assert lab2.uri == "qemu:///system"
    assert lab2.ssh == SshSettings(
        host="lab2",
        user="ops",
        port=2222,
        key=os.path.expanduser("~/.ssh/lab"),
        known_hosts=os.path.expanduser("~/.ssh/kh"),
        accept_unknown_host_key=True,
    )
    assert lab3.ssh == SshSettings(host="lab3", user="root", port=2022)
    assert lab3.readonly and not lab2.readonly
    assert lab4.name == "lab.4_x-y" and lab4.uri == "test:///default"
    assert lab4.ssh == SshSettings(host="::1")
    assert local.uri == "qemu+unix:///system?socket=/run/libvirt/libvirt-sock"
    assert config.timing == Timing(connect_timeout=2.5, refresh_interval=0.0, keepalive_count=7)
    assert isinstance(config.timing.keepalive_count, int)
    assert isinstance(config.timing.call_timeout, float)
    assert config.graceful_stop == GracefulStop(acpi_wait=5.0)
    assert config.viewer == ("remote-viewer", "vnc://{host}:{port}")
    assert config.owner == "alice"
    assert config.readonly


def test_minimal_file_defaults() -> None:
    config = parse_config(GOOD_HOST, "c.yaml")
    assert config == Config(hosts=config.hosts, source="c.yaml")
    assert config.timing == Timing() and config.viewer is None and config.owner is None


def test_example_file_parses() -> None:
    config = load_config(str(REPO / "config.example.yaml"), {})
    assert [h.name for h in config.hosts] == ["lab1", "lab2", "lab3", "lab4"]
    lab1, lab2, lab3, lab4 = config.hosts
    assert lab1.uri == "qemu+ssh://root@lab1.example.net/system" and lab1.ssh is None
    assert lab1.subnets == ("10.20.0.0/24",)
    assert lab2.uri == "qemu:///system"
    assert lab2.ssh is not None and lab2.ssh.port == 2222 and lab2.ssh.user == "ops"
    assert lab2.ssh.key == os.path.expanduser("~/.ssh/id_ed25519_lab")
    assert lab3.ssh == SshSettings(host="lab3", user="root") and lab3.readonly
    assert lab4.uri.startswith("qemu+tls://")
    assert config.viewer is not None and any("{port}" in a for a in config.viewer)


# -- search order ---------------------------------------------------------------------------


def _write(path: Path, name: str = "a") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"hosts:\n  - name: {name}\n    uri: test:///default\n", encoding="utf-8")
    return path


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "demo"
    folder.mkdir()
    for stem in ("zeta", "alpha", "mid"):
        (folder / f"{stem}.xml").write_text("<node/>", encoding="utf-8")
    (folder / "README.txt").write_text("not a host", encoding="utf-8")
    return folder


def test_explicit_beats_everything(tmp_path: Path) -> None:
    explicit = _write(tmp_path / "explicit.yaml")
    env = {
        "CATKEEPER_CONFIG": str(_write(tmp_path / "env.yaml")),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }
    _write(tmp_path / "xdg" / "catkeeper" / "config.yaml")
    assert find_config_path(str(explicit), env) == str(explicit)


def test_explicit_missing_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"--config: no such file") as info:
        find_config_path(str(missing), {"HOME": str(tmp_path)})
    assert str(info.value).startswith(str(missing))


def test_catkeeper_config_beats_xdg(tmp_path: Path) -> None:
    named = _write(tmp_path / "env.yaml")
    _write(tmp_path / "xdg" / "catkeeper" / "config.yaml")
    env = {"CATKEEPER_CONFIG": str(named), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert find_config_path(None, env) == str(named)


def test_catkeeper_config_missing_is_an_error(tmp_path: Path) -> None:
    env = {"CATKEEPER_CONFIG": str(tmp_path / "gone.yaml"), "HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"\$CATKEEPER_CONFIG: no such file"):
        find_config_path(None, env)


def test_empty_catkeeper_config_is_ignored(tmp_path: Path) -> None:
    xdg = _write(tmp_path / "xdg" / "catkeeper" / "config.yaml")
    env = {"CATKEEPER_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert find_config_path(None, env) == str(xdg)


def test_xdg_defaults_to_home_dot_config(tmp_path: Path) -> None:
    found = _write(tmp_path / ".config" / "catkeeper" / "config.yaml")
    assert find_config_path(None, {"HOME": str(tmp_path)}) == str(found)
    # A relative XDG_CONFIG_HOME is invalid per the spec and falls back the same way.
    assert find_config_path(None, {"HOME": str(tmp_path), "XDG_CONFIG_HOME": "rel"}) == str(found)


def test_xdg_config_home_replaces_home(tmp_path: Path) -> None:
    _write(tmp_path / ".config" / "catkeeper" / "config.yaml")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "elsewhere")}
    assert find_config_path(None, env) is None


def test_nothing_found_falls_back_to_demo(tmp_path: Path, demo_dir: Path) -> None:
    config = load_config(None, {"HOME": str(tmp_path / "home")}, demo_dir=demo_dir)
    assert config.is_demo and config.source == "<demo>"
    assert [h.name for h in config.hosts] == ["alpha", "mid", "zeta"]
    assert config.hosts[0].uri == f"test://{demo_dir.resolve()}/alpha.xml"
    assert config.hosts[0].uri.startswith("test:///")


def test_demo_flag_ignores_files(tmp_path: Path, demo_dir: Path) -> None:
    explicit = _write(tmp_path / "c.yaml")
    config = load_config(str(explicit), {}, demo=True, demo_dir=demo_dir)
    assert config.is_demo and len(config.hosts) == 3


def test_load_config_reads_found_file(tmp_path: Path, demo_dir: Path) -> None:
    path = _write(tmp_path / "xdg" / "catkeeper" / "config.yaml", name="found")
    config = load_config(None, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, demo_dir=demo_dir)
    assert config.source == str(path)
    assert [h.name for h in config.hosts] == ["found"]


def test_demo_dir_without_xml_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no demo fleet"):
        demo_config(tmp_path)


def test_shipped_demo_fleet() -> None:
    config = demo_config()
    assert len(config.hosts) == len(list((REPO / "catkeeper" / "demo").glob("*.xml"))) > 0
    assert all(h.uri.startswith("test:///") for h in config.hosts)
    assert all(Path(h.uri.removeprefix("test://")).is_file() for h in config.hosts)


def test_ipscan_section(tmp_path: Path) -> None:
    text = (
        "hosts:\n  - name: a\n    uri: test:///x\n"
        "ipscan:\n  sweep_interval: 300\n  max_addresses: 256\n"
    )
    cfg = parse_config(text, str(tmp_path / "c.yaml"))
    assert cfg.ipscan.sweep_interval == 300.0
    assert cfg.ipscan.max_addresses == 256
    assert cfg.ipscan.libvirt_interval == 60.0  # default kept


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("ipscan:\n  sweep_interval: -1\n", ":5: ipscan.sweep_interval"),
        ("ipscan:\n  max_addresses: 1.5\n", ":5: ipscan.max_addresses"),
        ("ipscan:\n  sweeps: 3\n", ":5: ipscan.sweeps"),
    ],
)
def test_ipscan_errors(tmp_path: Path, body: str, where: str) -> None:
    path = tmp_path / "c.yaml"
    with pytest.raises(ConfigError) as info:
        parse_config("hosts:\n  - name: a\n    uri: test:///x\n" + body, str(path))
    assert f"{path}{where}" in str(info.value)

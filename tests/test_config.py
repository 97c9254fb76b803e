"""Config errors: one line per bad file, naming the file, the line and the key.

Files that parse, the search order and the demo fallback: test_config_files.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from catkeeper.config import (
    ConfigError,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent

GOOD_HOST = "hosts:\n  - name: a\n    uri: qemu:///system\n"

# (id, file text, expected line, expected key or None, a fragment of the message)
BAD_FILES: list[tuple[str, str, int, str | None, str]] = [
    ("syntax", "hosts:\n  - name: a\n   uri: x: y\n", 3, None, "YAML syntax error"),
    ("tab", "hosts:\n\t- name: a\n", 2, None, "YAML syntax error"),
    ("two-docs", GOOD_HOST + "---\n" + GOOD_HOST, 4, None, "single document"),
    ("undefined-alias", "hosts: *nope\n", 1, None, "alias"),
    ("bad-char", "hosts:\n  - name: a\x07\n", 2, None, "not allowed"),
    ("empty-file", "# nothing\n", 1, None, "empty file"),
    ("top-list", "- name: a\n", 1, None, "expected a mapping, got a list"),
    ("top-scalar", "\n\nlab1\n", 3, None, "expected a mapping, got string 'lab1'"),
    ("no-hosts", "\nowner: bob\n", 2, "hosts", "required key is missing"),
    ("hosts-empty", "hosts: []\n", 1, "hosts", "is empty"),
    ("hosts-null", "owner: bob\nhosts:\n", 2, "hosts", "expected a list, got nothing"),
    ("hosts-mapping", "hosts:\n  a: qemu:///system\n", 2, "hosts", "expected a list"),
    ("host-scalar", "hosts:\n  - lab1\n", 2, "hosts[0]", "expected a mapping"),
    ("unknown-top", GOOD_HOST + "timeing: {}\n", 4, "timeing", "did you mean 'timing'?"),
    (
        "unknown-host-key",
        "hosts:\n  - name: a\n    uir: qemu:///system\n",
        3,
        "hosts[0].uir",
        "did you mean 'uri'?",
    ),
    ("unknown-far", GOOD_HOST + "colour: red\n", 4, "colour", "known: hosts, timing"),
    (
        "unknown-ssh-key",
        "hosts:\n  - name: a\n    ssh:\n      host: h\n      prot: 22\n",
        5,
        "hosts[0].ssh.prot",
        "did you mean 'port'?",
    ),
    (
        "unknown-timing",
        GOOD_HOST + "timing:\n  call_timout: 3\n",
        5,
        "timing.call_timout",
        "did you mean 'call_timeout'?",
    ),
    ("merge-key", GOOD_HOST + "timing:\n  <<: {call_timeout: 3}\n", 5, "timing", "merge keys"),
    ("non-string-key", GOOD_HOST + "1: x\n", 4, None, "keys must be strings"),
    (
        "dup-top-key",
        GOOD_HOST + "owner: a\nowner: b\n",
        5,
        "owner",
        "duplicate key (first on line 4)",
    ),
    (
        "dup-host-key",
        "hosts:\n  - name: a\n    uri: qemu:///system\n    uri: qemu:///session\n",
        4,
        "hosts[0].uri",
        "duplicate key (first on line 3)",
    ),
    ("missing-name", "hosts:\n  - uri: qemu:///system\n", 2, "hosts[0].name", "required"),
    (
        "missing-uri",
        GOOD_HOST + "  - name: b\n    tags: [x]\n",
        4,
        "hosts[1].uri",
        "required unless ssh is given",
    ),
    (
        "missing-ssh-host",
        "hosts:\n  - name: a\n    ssh:\n      user: root\n",
        4,
        "hosts[0].ssh.host",
        "required",
    ),
    (
        "dup-host-name",
        GOOD_HOST + "  - name: b\n    uri: test:///default\n  - name: a\n    uri: lxc:///\n",
        6,
        "hosts[2].name",
        "duplicate host 'a' (first on line 2)",
    ),
    (
        "bad-name",
        "hosts:\n  - name: lab 1\n    uri: qemu:///system\n",
        2,
        "hosts[0].name",
        "only letters",
    ),
    (
        "name-not-str",
        "hosts:\n  - name: 01\n    uri: qemu:///system\n",
        2,
        "hosts[0].name",
        "expected a string, got number '01'",
    ),
    (
        "name-empty",
        "hosts:\n  - name: ''\n    uri: qemu:///system\n",
        2,
        "hosts[0].name",
        "must not be empty",
    ),
    (
        "uri-garbage",
        GOOD_HOST + "  - name: b\n\n    uri: lab1\n",
        6,
        "hosts[1].uri",
        "'lab1' is not a libvirt URI (expected e.g. qemu+ssh://user@host/system)",
    ),
    (
        "uri-http",
        "hosts:\n  - name: a\n    uri: http://x/\n",
        3,
        "hosts[0].uri",
        "unknown scheme 'http'",
    ),
    (
        "uri-no-path",
        "hosts:\n  - name: a\n    uri: qemu+ssh://root@lab1\n",
        3,
        "hosts[0].uri",
        "is not a libvirt URI",
    ),
    (
        "uri-bad-transport",
        "hosts:\n  - name: a\n    uri: qemu+ftp://h/system\n",
        3,
        "hosts[0].uri",
        "unknown scheme 'qemu+ftp'",
    ),
    (
        "uri-space",
        "hosts:\n  - name: a\n    uri: 'qemu+ssh://h /system'\n",
        3,
        "hosts[0].uri",
        "is not a libvirt URI",
    ),
    (
        "uri-list",
        "hosts:\n  - name: a\n    uri: [qemu:///system]\n",
        3,
        "hosts[0].uri",
        "expected a string, got a list",
    ),
    (
        "bad-cidr",
        "hosts:\n  - name: a\n    uri: test:///default\n    subnets:\n"
        "      - 10.0.0.0/24\n      - 10.0.0.0/33\n",
        6,
        "hosts[0].subnets[1]",
        "not a CIDR",
    ),
    (
        "cidr-word",
        "hosts:\n  - name: a\n    uri: test:///default\n    subnets: [lan]\n",
        4,
        "hosts[0].subnets[0]",
        "'lan' is not a CIDR subnet",
    ),
    (
        "subnets-scalar",
        "hosts:\n  - name: a\n    uri: test:///default\n    subnets: 10.0.0.0/8\n",
        4,
        "hosts[0].subnets",
        "expected a list",
    ),
    (
        "tags-not-str",
        "hosts:\n  - name: a\n    uri: test:///default\n    tags: [x, 2024]\n",
        4,
        "hosts[0].tags[1]",
        "expected a string, got number '2024'",
    ),
    (
        "host-readonly-word",
        "hosts:\n  - name: a\n    uri: test:///default\n    readonly: maybe\n",
        4,
        "hosts[0].readonly",
        "expected true or false",
    ),
    (
        "ssh-bad-string",
        "hosts:\n  - name: a\n    ssh: root@@lab3\n",
        3,
        "hosts[0].ssh",
        "is not [user@]host[:port]",
    ),
    (
        "ssh-bad-port-string",
        "hosts:\n  - name: a\n    ssh: lab3:99999\n",
        3,
        "hosts[0].ssh",
        "port 99999",
    ),
    (
        "ssh-port-str",
        "hosts:\n  - name: a\n    ssh:\n      host: h\n      port: '22'\n",
        5,
        "hosts[0].ssh.port",
        "expected a whole number",
    ),
    (
        "ssh-port-zero",
        "hosts:\n  - name: a\n    ssh:\n      host: h\n      port: 0\n",
        5,
        "hosts[0].ssh.port",
        "not in 1-65535",
    ),
    ("ssh-list", "hosts:\n  - name: a\n    ssh: [h]\n", 3, "hosts[0].ssh", "expected a mapping"),
    (
        "ssh-bad-host",
        "hosts:\n  - name: a\n    ssh:\n      host: 'a b'\n",
        4,
        "hosts[0].ssh.host",
        "not a host name",
    ),
    (
        "ssh-accept-str",
        "hosts:\n  - name: a\n    ssh:\n      host: h\n      accept_unknown_host_key: 'yes'\n",
        5,
        "hosts[0].ssh.accept_unknown_host_key",
        "expected true or false",
    ),
    (
        "timing-bool",
        GOOD_HOST + "timing:\n  call_timeout: yes\n",
        5,
        "timing.call_timeout",
        "expected a number, got boolean 'yes'",
    ),
    (
        "timing-str",
        GOOD_HOST + "timing:\n  connect_timeout: 10s\n",
        5,
        "timing.connect_timeout",
        "expected a number, got string '10s'",
    ),
    (
        "timing-zero",
        GOOD_HOST + "timing:\n  call_timeout: 0\n",
        5,
        "timing.call_timeout",
        "must be > 0",
    ),
    (
        "timing-negative-refresh",
        GOOD_HOST + "timing:\n  refresh_interval: -1\n",
        5,
        "timing.refresh_interval",
        "must be >= 0",
    ),
    (
        "timing-float-for-int",
        GOOD_HOST + "timing:\n  workers_per_host: 2.5\n",
        5,
        "timing.workers_per_host",
        "expected a whole number",
    ),
    (
        "timing-inf",
        GOOD_HOST + "timing:\n  call_timeout: .inf\n",
        5,
        "timing.call_timeout",
        "finite",
    ),
    (
        "timing-backoff",
        GOOD_HOST + "timing:\n  backoff_initial: 5\n  backoff_max: 2\n",
        6,
        "timing.backoff_max",
        "backoff_max must be >= backoff_initial",
    ),
    (
        "timing-jitter",
        GOOD_HOST + "timing:\n  backoff_jitter: 1.5\n",
        5,
        "timing.backoff_jitter",
        "must be between 0 and 1, got 1.5",
    ),
    ("timing-list", GOOD_HOST + "timing: [1]\n", 4, "timing", "expected a mapping"),
    (
        "graceful-unknown",
        GOOD_HOST + "graceful_stop:\n  acpi: 5\n",
        5,
        "graceful_stop.acpi",
        "did you mean 'acpi_wait'?",
    ),
    (
        "graceful-bool",
        GOOD_HOST + "graceful_stop:\n  acpi_wait: off\n",
        5,
        "graceful_stop.acpi_wait",
        "boolean 'off'",
    ),
    ("viewer-empty", GOOD_HOST + "viewer: []\n", 4, "viewer", "is empty"),
    (
        "viewer-no-port",
        GOOD_HOST + "viewer: [vncviewer, '{host}']\n",
        4,
        "viewer",
        "no argument contains {port}",
    ),
    (
        "viewer-string",
        GOOD_HOST + "viewer: vncviewer {host}::{port}\n",
        4,
        "viewer",
        "expected a list",
    ),
    (
        "viewer-unquoted-brace",
        GOOD_HOST + "viewer:\n  - vncviewer\n  - {host}::{port}\n",
        6,
        None,
        "YAML syntax error",
    ),
    (
        "viewer-brace",
        GOOD_HOST + "viewer:\n  - vncviewer\n  - '{host::{port}'\n",
        6,
        "viewer[1]",
        "bad placeholder",
    ),
    ("owner-bool", GOOD_HOST + "owner: no\n", 4, "owner", "got boolean 'no' (quote it)"),
    ("readonly-int", GOOD_HOST + "readonly: 1\n", 4, "readonly", "expected true or false"),
    ("unknown-tag", GOOD_HOST + "owner: !vault abc\n", 4, "owner", "cannot read value"),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_FILES],
)
def test_bad_file(tmp_path: Path, text: str, line: int, key: str | None, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    err = info.value
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert (err.path, err.line, err.key) == (str(path), line, key), message
    if key is not None:
        assert f": {key}: " in message
    assert fragment in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read") as info:
        load_config(str(tmp_path), {})  # a directory: exists, but cannot be read as a file
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"hosts:\n  - name: \xff\n")
    with pytest.raises(ConfigError, match=r"not UTF-8") as info:
        load_config(str(path), {})
    assert info.value.line == 2

"""The filter grammar shared by the TUI's ``/`` bar and ``catkeeper --json --filter``.

One implementation for both, so a filter typed in the table and the same text given to a
script select the same VMs. Plain model code: no textual, no rich.

Tags belong to hosts (config ``hosts[].tags``), not to VMs, so ``parse_filter`` takes each
host's tags (``host_tags``, e.g. ``tags_of(config.hosts)``) and a VM carries those of its host:
``tag:gpu`` and the free word ``gpu`` both find the VMs of a host tagged ``gpu``.

Grammar (terms separated by spaces, every term must match; ``!`` before a term negates it)::

    word              name, host, host tag, note, owner, IP or MAC contains it (any case)
    "two words"       quotes keep spaces inside one term
    host:NAME         on that host (exact, or a glob with * ? [..]; a,b for either)
    tag:NAME          on a host with that tag (config hosts[].tags; glob, a,b as host:)
    state:STATE       running, paused, shutoff (or shut, off), crashed, ... ; active, inactive
    owner:NAME        reserved by NAME (owner:me is the current user)
    reserved:yes      reserved and not expired; reserved:no has none; reserved:expired
    reserved:stale    reserved, and unused for stale.stale_after (the evidence: backend/stale.py;
                      only where the caller has it, see parse_filter's ``stale``)
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from catkeeper.model import VM, VmState

KEYS = ("host", "tag", "state", "owner", "reserved")

# Words people type for states, beyond the names libvirt itself uses.
_STATE_ALIASES: dict[str, frozenset[VmState]] = {
    "shut": frozenset({VmState.SHUTOFF}),
    "off": frozenset({VmState.SHUTOFF}),
    "stopped": frozenset({VmState.SHUTOFF}),
    "on": frozenset(s for s in VmState if s.is_active),
    "up": frozenset({VmState.RUNNING}),
    "pause": frozenset({VmState.PAUSED}),
    "suspended": frozenset({VmState.PAUSED, VmState.PMSUSPENDED}),
    "active": frozenset(s for s in VmState if s.is_active),
    "inactive": frozenset(s for s in VmState if not s.is_active),
}
_RESERVED = ("yes", "no", "expired", "stale")
StaleJudge = Callable[[VM, float], bool]


class FilterError(ValueError):
    """A filter that cannot be understood; ``str()`` is one line for a person."""


class Tagged(Protocol):
    """A host as the config (``HostConfig``) or the model (``Host``) describes it."""

    @property
    def name(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...


def tags_of(hosts: Iterable[Tagged]) -> dict[str, tuple[str, ...]]:
    """Host name → its tags, as ``parse_filter(host_tags=…)`` takes them."""
    return {h.name: tuple(h.tags) for h in hosts}


def haystack(vm: VM) -> str:
    """Everything a free word may match, lower-cased and joined (cache it per VM version)."""
    parts = [vm.name, vm.host]
    if vm.title:
        parts.append(vm.title)
    res = vm.reservation
    if res is not None:
        parts.append(res.owner)
        if res.note:
            parts.append(res.note)
    parts.extend(nic.mac for nic in vm.nics)
    parts.extend(ip.ip for ip in vm.ips)
    # A separator no one types, so a word never matches across two fields.
    return "\x00".join(parts).lower()


Predicate = Callable[[VM, float, str], bool]
K = TypeVar("K")


@dataclass(frozen=True)
class Term:
    text: str  # as typed, for messages and help
    negated: bool
    test: Predicate
    word: str | None = None  # set for free words: lets select() test them without calls

    def matches(self, vm: VM, now: float, hay: str) -> bool:
        return self.test(vm, now, hay) != self.negated


@dataclass(frozen=True)
class Filter:
    text: str
    terms: tuple[Term, ...] = ()
    # Host name → its tags joined like the haystack: free words match them too. Kept apart
    # from ``haystack(vm)`` so a table's cached haystacks need not know about hosts.
    host_hay: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_empty(self) -> bool:
        return not self.terms

    def matches(self, vm: VM, now: float, *, hay: str | None = None) -> bool:
        """Whether ``vm`` passes; ``hay`` is ``haystack(vm)`` when the caller has it cached."""
        if not self.terms:
            return True
        text = haystack(vm) if hay is None else hay
        extra = self.host_hay.get(vm.host)
        if extra:
            text = f"{text}\x00{extra}"
        return all(term.matches(vm, now, text) for term in self.terms)

    def select(self, rows: Sequence[tuple[K, VM, str]], now: float) -> list[K]:
        """The keys of the rows that match, in order; each row is (key, vm, haystack(vm)).

        Same answer as ``matches`` per row, but a term at a time over the shrinking set, with
        free words as plain substring tests: fast enough for a keystroke at 10,000 rows.
        """
        alive = list(rows)
        tags = self.host_hay
        for term in self.terms:
            word, neg = term.word, term.negated
            if word is not None and tags:
                alive = [
                    r for r in alive if (word in r[2] or word in tags.get(r[1].host, "")) != neg
                ]
            elif word is not None:
                alive = [r for r in alive if (word in r[2]) != neg]
            else:
                test = term.test
                alive = [r for r in alive if test(r[1], now, r[2]) != neg]
            if not alive:
                break
        return [r[0] for r in alive]


MATCH_ALL = Filter("")


def _word(word: str) -> Predicate:
    needle = word.lower()
    return lambda _vm, _now, hay: needle in hay


def _host(value: str) -> Predicate:
    names = [v.lower() for v in value.split(",") if v]
    if not names:
        raise FilterError("host: needs a name, e.g. host:lab1")
    globs = any(ch in value for ch in "*?[")

    def test(vm: VM, _now: float, _hay: str) -> bool:
        host = vm.host.lower()
        if globs:
            return any(fnmatch.fnmatchcase(host, n) for n in names)
        return host in names

    return test


def _tag(value: str, host_tags: Mapping[str, Sequence[str]]) -> Predicate:
    wanted = [v.lower() for v in value.split(",") if v]
    if not wanted:
        raise FilterError("tag: needs a tag, e.g. tag:gpu")
    globs = any(ch in value for ch in "*?[")

    def tagged(tags: Sequence[str]) -> bool:
        lowered = [t.lower() for t in tags]
        if globs:
            return any(fnmatch.fnmatchcase(t, w) for t in lowered for w in wanted)
        return any(t in wanted for t in lowered)

    # Decided once per host, here: the test per VM is one set lookup.
    hosts = frozenset(name for name, tags in host_tags.items() if tagged(tags))
    return lambda vm, _now, _hay: vm.host in hosts


def _states(value: str) -> frozenset[VmState]:
    chosen: set[VmState] = set()
    for word in (v.lower() for v in value.split(",")):
        if not word:
            continue
        if word in _STATE_ALIASES:
            chosen |= _STATE_ALIASES[word]
            continue
        exact = [s for s in VmState if s.value == word]
        prefixed = exact or [s for s in VmState if s.value.startswith(word)]
        if len(prefixed) != 1:
            known = ", ".join([s.value for s in VmState] + list(_STATE_ALIASES))
            what = "ambiguous" if prefixed else "unknown"
            raise FilterError(f"{what} state {word!r} (known: {known})")
        chosen.add(prefixed[0])
    if not chosen:
        raise FilterError("state: needs a state, e.g. state:running")
    return frozenset(chosen)


def _state(value: str) -> Predicate:
    states = _states(value)
    return lambda vm, _now, _hay: vm.state in states


def _owner(value: str, me: str) -> Predicate:
    names = {(me if v.lower() == "me" else v).lower() for v in value.split(",") if v}
    if not names:
        raise FilterError("owner: needs a name, e.g. owner:me")

    def test(vm: VM, _now: float, _hay: str) -> bool:
        res = vm.reservation
        return res is not None and res.owner.lower() in names

    return test


def _reserved(value: str, stale: StaleJudge | None) -> Predicate:
    kind = value.lower()
    if kind == "stale":  # without the evidence no VM is known to be stale
        return lambda vm, now, _hay: stale is not None and stale(vm, now)
    if kind in ("yes", "y", "true"):
        return lambda vm, now, _hay: (
            vm.reservation is not None and not vm.reservation.is_expired(now)
        )
    if kind in ("no", "n", "false"):
        return lambda vm, _now, _hay: vm.reservation is None
    if kind == "expired":
        return lambda vm, now, _hay: vm.reservation is not None and vm.reservation.is_expired(now)
    raise FilterError(f"unknown reserved:{value} (use one of {', '.join(_RESERVED)})")


def _term(
    token: str, me: str, host_tags: Mapping[str, Sequence[str]], stale: StaleJudge | None
) -> Term:
    negated = token.startswith("!")
    body = token[1:] if negated else token
    if not body:
        raise FilterError("'!' must come right before a term, e.g. !state:running")
    key, sep, value = body.partition(":")
    lowered = key.lower()
    if sep and lowered in KEYS:
        if not value:
            raise FilterError(f"{key}: needs a value")
        builders: dict[str, Callable[[str], Predicate]] = {
            "host": _host,
            "tag": lambda v: _tag(v, host_tags),
            "state": _state,
            "owner": lambda v: _owner(v, me),
            "reserved": lambda v: _reserved(v, stale),
        }
        return Term(token, negated, builders[lowered](value))
    # Letters before a colon read as a key; MACs and IPv6 addresses (hex digits with
    # colons) stay free words.
    if sep and key.isalpha() and not all(c in "0123456789abcdefABCDEF" for c in key):
        raise FilterError(f"unknown filter key {key!r} (known: {', '.join(KEYS)})")
    return Term(token, negated, _word(body), word=body.lower())


def parse_filter(
    text: str,
    *,
    me: str,
    host_tags: Mapping[str, Sequence[str]] | None = None,
    stale: StaleJudge | None = None,
) -> Filter:
    """``text`` as a Filter; raises FilterError naming the bad term.

    ``host_tags``: host name → its tags (``tags_of(config.hosts)``), for ``tag:`` and for
    free words; without it no VM has tags. ``stale(vm, now)``: whether a reserved VM went
    unused for too long (``Staleness.stale``), for ``reserved:stale``; without it that term
    matches nothing.
    """
    try:
        tokens = shlex.split(text)
    except ValueError as exc:  # an unbalanced quote
        raise FilterError(f"bad filter: {exc}") from None
    tags = host_tags or {}
    terms = tuple(_term(tok, me, tags, stale) for tok in tokens)
    host_hay = {name: "\x00".join(t).lower() for name, t in tags.items() if t}
    return Filter(text, terms, host_hay)

"""Request header fields as they may go on the wire (RFC 9110 §5.1, §5.5), checked by both transports.

A name is a token; a value holds visible characters, spaces and tabs, all within Latin-1 (the bytes a
field value can carry). CR, LF and NUL are refused above all: a value holding ``\\r\\n`` would end the
header early and let the rest of it pose as further headers, or as a second request on the connection.
``host``, ``content-length``, ``transfer-encoding`` and ``connection`` belong to the transport.

Checks cost: ``HeaderBlock.build`` checks fixed headers once (a subscription's own headers, when its
routing table is installed), ``RequestTarget.build`` a request target (its path and query) once;
``encode_fields`` checks the few values that change per delivery.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from fanout.http.transport import InvalidHeader

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
BAD_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
TARGET = re.compile(r"[!-~]+")
TRANSPORT_OWNED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
MAX_CHECKED = 4096
_CHECKED_NAMES: set[str] = set()  # names that passed once: a set lookup from then on


def check_field(name: str, value: str) -> None:
    """Raise ``InvalidHeader`` unless ``name: value`` may be written (the message never shows the value)."""
    if not TOKEN.fullmatch(name):
        raise InvalidHeader(f"header name {name[:64]!r} is not a token")
    if name.lower() in TRANSPORT_OWNED:
        raise InvalidHeader(f"header {name!r} is set by the transport")
    if not value.isprintable() and BAD_VALUE.search(value):
        raise InvalidHeader(f"header {name!r} has a CR, LF, NUL or another control character in its value")
    if not value.isascii():
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidHeader(f"header {name!r} has a character outside Latin-1 in its value") from None


def check_fields(pairs: Iterable[tuple[str, str]]) -> None:
    """``check_field`` for each pair, cheaply: names seen before skip the token check, and a value that is
    printable ASCII (nearly every value) skips the character-by-character one."""
    for name, value in pairs:
        if name not in _CHECKED_NAMES:
            check_field(name, "")
            if len(_CHECKED_NAMES) < MAX_CHECKED:
                _CHECKED_NAMES.add(name)
        if not (value.isascii() and value.isprintable()):
            check_field(name, value)


def encode_fields(pairs: list[tuple[str, str]]) -> bytes:
    """``name: value\r\n`` lines, checked by ``check_fields``."""
    check_fields(pairs)
    return "".join([f"{name}: {value}\r\n" for name, value in pairs]).encode("latin-1")


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """A request target (origin-form path and query) checked once: ``text`` as given, ``raw`` as it goes
    on the request line. A subscription's target is built when its routing table is installed, so a
    request costs no check of it, however many subscriptions there are."""

    text: str
    raw: bytes

    @classmethod
    def build(cls, text: str) -> RequestTarget:
        """Raises ``InvalidHeader`` unless ``text`` is visible ASCII (percent-encoded), without spaces."""
        if not TARGET.fullmatch(text):
            raise InvalidHeader("the request target must be visible ASCII (percent-encoded), without spaces")
        return cls(text, text.encode("ascii"))


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """Headers checked once: ``pairs`` as given, ``raw`` as they go on the wire."""

    EMPTY: ClassVar[HeaderBlock]

    pairs: tuple[tuple[str, str], ...]
    raw: bytes

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, str]]) -> HeaderBlock:
        """Check and encode ``pairs``; raises ``InvalidHeader``."""
        checked = list(pairs)
        return cls(tuple(checked), encode_fields(checked)) if checked else cls.EMPTY


HeaderBlock.EMPTY = HeaderBlock((), b"")

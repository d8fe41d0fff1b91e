"""What the provider modules share: their errors, their protocol, delivery ids, skip markers and payload reading.
The modules by name are in `registry`, which imports them; this module imports none of them.

OutpostError
├── SignatureError       the delivery is not signed with the trigger's secret (the server answers 401)
└── UnsupportedEvent     a genuine delivery we do not build (the server answers 202 and records `reason`)
    └── PayloadError     the payload lacks a field the event needs, or has it with the wrong type
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from outpost.errors import OutpostError
from outpost.triggers.event import GitEvent, Provider

ZERO_SHA = "0" * 40  # what all three providers send as `before` of a new ref and `after` of a deleted one

# Matched case-insensitively anywhere in the commit message (pipeline format section 6).
SKIP_MARKERS: tuple[str, ...] = ("[skip ci]", "[ci skip]", "[no ci]", "[skip codefresh]", "[codefresh skip]")

DELIVERY_HEADERS: dict[Provider, str] = {
    "github": "X-GitHub-Delivery",
    "gitlab": "X-Gitlab-Event-UUID",
    "bitbucket-server": "X-Request-Id",
}


class ProviderModule(Protocol):
    """What every provider module offers (modules satisfy this protocol; see registry.PROVIDER_MODULES).

    `verify` raises SignatureError unless the raw body is signed with `secret` (an empty secret is refused).
    `parse` raises UnsupportedEvent for a delivery that starts no build; otherwise it returns one GitEvent
    with every field the payload supports. Neither does any I/O.
    """

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None: ...

    def parse(self, headers: Mapping[str, str], payload: Mapping[str, Any]) -> GitEvent: ...


class SignatureError(OutpostError):
    """The delivery does not prove it knows the trigger's secret; `reason` says what was wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UnsupportedEvent(OutpostError):
    """A delivery that starts no build (an event or action we do not handle); `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class PayloadError(UnsupportedEvent):
    """The payload misses a field the event needs or holds it with the wrong type."""


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name`, whatever the case of the mapping's keys (a plain dict is fine)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def delivery_id(provider: Provider, headers: Mapping[str, str]) -> str | None:
    """The provider's id of this delivery (used to record it and to ignore a redelivery), if sent."""
    return header(headers, DELIVERY_HEADERS[provider])


def verify_hmac_sha256(headers: Mapping[str, str], body: bytes, secret: str, name: str, hint: str = "") -> None:
    """Raise SignatureError unless header `name` is `sha256=` + the hex HMAC-SHA256 of `body` (constant time)."""
    if not secret:
        raise SignatureError("the trigger has no webhook secret")
    sent = header(headers, name)
    if sent is None:
        raise SignatureError(f"missing {name} header")
    algorithm, _, digest = sent.strip().partition("=")
    if algorithm != "sha256" or not digest:
        raise SignatureError(f"{name} header is not of the form sha256=<hex>{hint}")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), digest.lower().encode()):
        raise SignatureError("signature does not match")


Parser = Callable[[Mapping[str, Any]], GitEvent]


def dispatch(
    provider: Provider, label: str, event_header: str, parsers: Mapping[str, Parser],
    headers: Mapping[str, str], payload: Mapping[str, Any],
) -> GitEvent:  # fmt: skip
    """Picks the parser for the delivery's event header, and stamps the event with its delivery id and payload."""
    kind = header(headers, event_header)
    if not kind:
        raise UnsupportedEvent(f"missing {event_header} header")
    parser = parsers.get(kind)
    if parser is None:
        raise UnsupportedEvent(f"{label} event '{kind}' is not a trigger event")
    event = parser(payload)
    event.delivery_id = delivery_id(provider, headers)
    event.payload = dict(payload)
    return event


def find_skip_marker(message: str | None) -> str | None:
    """The first skip marker found in `message` (as listed in SKIP_MARKERS), or None."""
    if not message:
        return None
    lowered = message.lower()
    return next((marker for marker in SKIP_MARKERS if marker in lowered), None)


def has_skip_marker(message: str | None) -> bool:
    """True when the commit message asks not to build (`[skip ci]` and friends, in any case)."""
    return find_skip_marker(message) is not None


def sha_or_none(value: object) -> str | None:
    """A revision as sent, or None for a missing, empty or all-zero one."""
    if not isinstance(value, str) or not value or value == ZERO_SHA:
        return None
    return value


# Payload reading: webhook JSON comes from outside, so every access says what it expected.


def dig(payload: Mapping[str, Any], *path: str) -> Any:
    """The value at `path` (keys into nested objects), or None when any step is missing or null."""
    node: Any = payload
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def text(payload: Mapping[str, Any], *path: str) -> str | None:
    """The string at `path`, or None when it is absent or null; PayloadError when it is not a string."""
    value = dig(payload, *path)
    if value is None or isinstance(value, str):
        return value
    raise PayloadError(f"malformed payload: `{'.'.join(path)}` is not a string")


def required_text(payload: Mapping[str, Any], *path: str) -> str:
    """The string at `path`; PayloadError when it is absent, null, empty or not a string."""
    value = text(payload, *path)
    if not value:
        raise PayloadError(f"malformed payload: `{'.'.join(path)}` is missing")
    return value


def number(payload: Mapping[str, Any], *path: str) -> int:
    """The integer at `path`; PayloadError when it is absent or not an integer."""
    value = dig(payload, *path)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"malformed payload: `{'.'.join(path)}` is not an integer")
    return value


def objects(payload: Mapping[str, Any], *path: str) -> list[Mapping[str, Any]]:
    """The objects of the list at `path` (an absent list is empty); PayloadError when it is not a list."""
    value = dig(payload, *path)
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"malformed payload: `{'.'.join(path)}` is not a list")
    return [item for item in value if isinstance(item, Mapping)]


def strings(payload: Mapping[str, Any], *path: str) -> list[str] | None:
    """The list of strings at `path`, or None when it is absent or holds anything but strings."""
    value = dig(payload, *path)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return list(value)

"""Reading JSON that a client sent: the one way the control plane parses an untrusted body.

`json.loads` recurses once per level of nesting, so a small body of 50,000 `[` ends in a RecursionError. The
nesting is measured first, without recursion (a scan of the brackets outside strings), and a body nested deeper
than MAX_DEPTH is refused with a reason, as is anything else that is not JSON.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64  # levels of arrays and objects; Git providers' payloads use about ten

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class NotJson(ValueError):
    """The body cannot be read as JSON; `reason` says why, for the client."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _deepest(body: bytes) -> int:
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def too_deep(body: bytes) -> str | None:
    """The reason to refuse `body` for its nesting, or None."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return None  # cannot nest deeper than the brackets it has: no scan needed
    found = _deepest(body)
    if found > MAX_DEPTH:
        return f"the JSON nests {found} levels deep; at most {MAX_DEPTH} are allowed"
    return None


def loads(body: bytes | str) -> Any:
    """The value in `body`, or NotJson with the reason."""
    raw = body.encode() if isinstance(body, str) else body
    if reason := too_deep(raw):
        raise NotJson(reason)
    try:
        return json.loads(raw)
    except RecursionError:  # not expected after the depth check; never let it escape
        raise NotJson(f"the JSON nests too deep; at most {MAX_DEPTH} levels are allowed") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotJson(f"the body is not JSON: {exc}") from None

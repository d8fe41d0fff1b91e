"""Masking secret values in a stream of log bytes, in every form a step is likely to print them, even when one is
split across chunks.

A secret is masked as it is, line by line (for a multi-line value such as a key), inside base64 (both alphabets,
whatever the alignment of the secret in the encoded data), URL-encoded and JSON-escaped. Values and lines shorter
than MIN_SECRET are left alone: they would mask half the log and protect nothing.

Most chunks hold no secret at all, so a chunk is first searched for a few needles (a C-speed substring search
each; every form holds one). Only a chunk with a hit is masked: each form found in it is replaced, longest
first, by `bytes.replace` (measured on a chunk with a secret on every line: 173 MB/s, where one compiled regular
expression of all the forms did 21 MB/s: Python's engine tries the alternatives one by one at each position).
Only the end of a chunk that could be the start of a form is held back until the next chunk (or the end of the
step), so output is not delayed in the common case.

Pure bytes in, bytes out, so both the engine (a build's logs) and the Git room (git's own output) use it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = b"*****"
MIN_SECRET = 4  # characters; also the shortest line of a multi-line value, and the shortest derived form


def forms(value: str) -> frozenset[bytes]:
    """Every form of `value` this module masks (none if it is too short to be a secret)."""
    if len(value) < MIN_SECRET:
        return frozenset()
    texts = {value} | {line.strip() for line in value.splitlines()}
    found = {t.encode() for t in texts if len(t) >= MIN_SECRET}
    raw = value.encode()
    found |= _base64_forms(raw)
    found |= {quote(value, safe="").encode(), quote(value).encode(), quote_plus(value).encode()}
    found |= {json.dumps(value)[1:-1].encode(), json.dumps(value, ensure_ascii=False)[1:-1].encode()}
    return frozenset(f for f in found if len(f) >= MIN_SECRET)


def needles(value: str) -> frozenset[bytes]:
    """What to search a chunk for to know whether it may hold a form of `value`: every form holds one of them.
    Fewer searches than forms: a long form is searched by its beginning (a longer needle is no faster), and a
    needle that holds another is dropped (the lines of a multi-line value stand for the value and its JSON
    form)."""
    found = sorted({form[:_NEEDLE] for form in forms(value)}, key=len)
    kept: list[bytes] = []
    for needle in found:
        if not any(shorter in needle for shorter in kept):
            kept.append(needle)
    return frozenset(kept)


def _base64_forms(raw: bytes) -> set[bytes]:
    """The part of the base64 of `raw` that does not depend on the bytes around it, for each of the three places it
    can start inside a 3-byte group, in the standard and the URL-safe alphabet."""
    found = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw)
        # Character i holds bits 6i..6i+5; the secret's bits are 8*offset .. 8*(offset+len)-1.
        inner = encoded[(8 * offset + 5) // 6 : (8 * (offset + len(raw))) // 6]
        found |= {inner, inner.translate(_URLSAFE)}
    return found


_URLSAFE = bytes.maketrans(b"+/", b"-_")


class Masker:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._forms: list[bytes] = []
        self._needles: list[bytes] = []
        self._short_prefixes: set[bytes] = set()
        self._held = b""
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        found, searched = set(self._forms), set(self._needles)
        for secret in secrets:
            found |= forms(secret)
            searched |= needles(secret)
        # Longest first: a form that contains another is masked whole.
        self._forms = sorted(found, key=len, reverse=True)
        self._needles = sorted(searched, key=len, reverse=True)  # long ones first: they are the quickest
        self._short_prefixes = {f[:n] for f in self._forms for n in range(1, min(_HEAD, len(f) - 1) + 1)}

    def feed(self, data: bytes) -> bytes:
        """Returns what can be shown now; keeps back a possible beginning of a secret."""
        if not self._forms:
            return data
        text = self._held + data
        masked = self._replace(text)
        keep = self._possible_start(masked)
        self._held = masked[len(masked) - keep :] if keep else b""
        return masked[: len(masked) - keep]

    @property
    def held(self) -> int:
        """Bytes kept back by `feed`, not yet shown."""
        return len(self._held)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def mask(self, text: str) -> str:
        """A whole message (not part of a stream), masked."""
        if not self._forms:
            return text
        return self._replace(text.encode()).decode(errors="replace")

    def _replace(self, text: bytes) -> bytes:
        if not any(needle in text for needle in self._needles):
            return text
        for form in self._forms:  # longest first: a form that holds another is masked whole
            if form in text:
                text = text.replace(form, MASK)
        return text

    def _possible_start(self, text: bytes) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a form."""
        end, best = len(text), 0
        # Suffixes of at least _HEAD bytes begin with a form's head: one search per form, in the last bytes only.
        for form in self._forms:  # longest first
            if len(form) - 1 <= best or len(form) <= _HEAD:
                break  # no shorter form can beat it
            head = form[:_HEAD]
            at = text.find(head, max(0, end - len(form) + 1))
            while at != -1 and end - at > best and end - at >= _HEAD:
                if text.startswith(form[: end - at], at):
                    best = end - at  # the earliest match is this form's longest
                    break
                at = text.find(head, at + 1)
        # Shorter suffixes: look each one up among every form's short prefixes.
        for n in range(min(_HEAD, end), best, -1):
            if text[end - n :] in self._short_prefixes:
                return n
        return best


_HEAD = 8  # bytes of a form searched for at once when looking for its beginning at the end of a chunk
_NEEDLE = 64  # bytes of a form enough to tell whether a chunk may hold it

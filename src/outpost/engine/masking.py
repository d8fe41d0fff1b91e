"""Masking secret values in a stream of log bytes, even when a secret is split across chunks.

Only the end of a chunk that could be the start of a secret is held back until the next chunk (or
the end of the step), so output is not delayed in the common case.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = b"*****"
MIN_SECRET = 3  # shorter values would mask half the log and protect nothing


class Masker:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[bytes] = []
        self._held = b""
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        found = {s.encode() for s in secrets if len(s) >= MIN_SECRET} | set(self._secrets)
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(found, key=len, reverse=True)

    def feed(self, data: bytes) -> bytes:
        """Returns what can be shown now; keeps back a possible beginning of a secret."""
        if not self._secrets:
            return data
        text = self._held + data
        masked = self._replace(text)
        keep = self._possible_start(masked)
        self._held = masked[len(masked) - keep :] if keep else b""
        return masked[: len(masked) - keep]

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def _replace(self, text: bytes) -> bytes:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def _possible_start(self, text: bytes) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a secret."""
        longest = 0
        for secret in self._secrets:
            for size in range(min(len(secret) - 1, len(text)), longest, -1):
                if text.endswith(secret[:size]):
                    longest = size
                    break
        return longest

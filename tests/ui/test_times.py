"""Times on pages: how long ago in words a person skims, with the exact time kept next to it."""

from __future__ import annotations

import pytest

from outpost.server.ui.rendering import ago, when

NOW = 1_765_000_000.0


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0, "just now"),
        (44, "just now"),
        (45, "1 min ago"),
        (150, "2 min ago"),
        (3599, "60 min ago"),
        (3600, "1 h ago"),
        (86399, "23 h ago"),
        (86400, "1 day ago"),
        (3 * 86400 + 5, "3 days ago"),
        (-30, "just now"),  # a clock a little ahead of the server's
    ],
)
def test_how_long_ago_reads_as_words(seconds: float, said: str) -> None:
    assert ago(NOW - seconds, now=NOW) == said


def test_no_time_is_no_text() -> None:
    assert ago(None) == ""
    assert when(None) == ""

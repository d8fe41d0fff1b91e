"""Reports of each build that this process is handling now, in the order they arrived.

A runner may have several reports of one build in flight (docs/protocol.md, "Several reports in flight"): the
second one's log bytes start where the first one's end, so if the second is handled first its offset leaves a
gap. Rather than refuse it at once, its handler waits until the reports of that build that arrived before it are
done (stored or refused), then tries again; a gap that nothing earlier was going to fill is refused (416) as
before. Only this process's reports are known: one that went to another replica is not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator


class Arrivals:
    def __init__(self) -> None:
        self._numbers = itertools.count()
        self._open: dict[str, dict[int, asyncio.Event]] = {}  # build id -> arrival number -> set when done

    @contextlib.contextmanager
    def arrived(self, build_id: str) -> Iterator[int]:
        """Counts a report of the build as in hand, from before its body is read until it is answered."""
        number = next(self._numbers)
        done = asyncio.Event()
        in_hand = self._open.setdefault(build_id, {})
        in_hand[number] = done
        try:
            yield number
        finally:
            del in_hand[number]
            if not in_hand:
                self._open.pop(build_id, None)
            done.set()

    async def earlier_done(self, build_id: str, number: int, seconds: float) -> bool:
        """Waits until every report of the build that arrived before `number` is done. False at once if there is
        none (nothing could fill a gap), and False if they are not all done within `seconds`."""
        earlier = [done for n, done in self._open.get(build_id, {}).items() if n < number]
        if not earlier:
            return False
        with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
            async with asyncio.timeout(seconds):
                for done in earlier:
                    await done.wait()
                return True
        return False

    def in_hand(self, build_id: str) -> int:
        """Reports of the build this process holds now (for tests and metrics)."""
        return len(self._open.get(build_id, {}))

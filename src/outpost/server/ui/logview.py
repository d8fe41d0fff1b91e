"""A step's log as numbered HTML lines, in windows: a page shows the tail (or the window a link asks
for) and fetches earlier pages on demand, so a 50,000-line log never travels whole.

Only complete lines are shown while a step runs; its unfinished last line appears once it ends with a
newline or the step finishes. `offset` is the number of bytes of the log that the lines shown cover:
live updates continue from there, by byte offset, so a piece sent twice is never shown twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.models import Build, LogChunk, Step
from outpost.server.store import logs
from outpost.server.ui.ansi import plain, to_html

TAIL = 500  # lines a build page opens with
PAGE = 1000  # lines one "earlier lines" fetch brings
SEARCH_LIMIT = 200


@dataclass
class Window:
    first: int  # number of the first line shown (1-based)
    html: Markup
    shown: int  # lines in the window
    total: int  # lines the step has so far
    offset: int  # bytes the shown lines cover, when the window reaches the end
    at_end: bool


def split(data: bytes, final: bool) -> tuple[list[bytes], int]:
    """The lines of a log and how many bytes they cover: the unfinished last line only if `final`."""
    lines = data.split(b"\n")
    partial = lines.pop()
    if final and partial:
        lines.append(partial)
        return lines, len(data)
    return lines, len(data) - len(partial)


def line_html(number: int, raw: bytes) -> str:
    text = to_html(raw.decode("utf-8", errors="replace"))
    number_link = f'<a class="n" href="#L{number}" tabindex="-1">{number}</a>'
    return f'<div class="l" id="L{number}">{number_link}<span>{text}</span></div>'


def lines_html(first: int, raw: list[bytes]) -> Markup:
    return Markup("\n".join(line_html(first + i, line) for i, line in enumerate(raw)))


def _line_start(data: bytes, number: int, newlines: int) -> int:
    """Where line `number` (1-based) begins: after the (number-1)th newline, found from the nearer end, so a
    window at the tail of a big log does not split all of it."""
    before = number - 1
    if before <= 0:
        return 0
    if before <= newlines // 2:
        at = -1
        for _ in range(before):
            at = data.find(b"\n", at + 1)
        return at + 1
    at = len(data)
    for _ in range(newlines - before + 1):
        at = data.rfind(b"\n", 0, at)
    return at + 1


def window(data: bytes, final: bool, start: int | None = None, count: int = TAIL) -> Window:
    """Lines [start, start+count) — or the last `count` lines when start is None."""
    newlines = data.count(b"\n")
    partial = len(data) - (data.rfind(b"\n") + 1)
    covered = len(data) if final else len(data) - partial
    total = newlines + (1 if final and partial else 0)
    first = max(1, total - count + 1) if start is None else min(max(1, start), max(1, total))
    shown = max(0, min(count, total - first + 1))
    begin = _line_start(data, first, newlines)
    end = covered if first + shown > newlines else _line_start(data, first + shown, newlines)
    chosen = data[begin:end].split(b"\n")[:shown] if shown else []
    at_end = first - 1 + shown >= total
    return Window(first, lines_html(first, chosen), shown, total, covered if at_end else 0, at_end)


@dataclass
class Hit:
    number: int
    html: Markup


def search(data: bytes, query: str, limit: int = SEARCH_LIMIT) -> tuple[list[Hit], bool]:
    """Lines containing the query (case-insensitive, escape codes ignored); True if there were more."""
    needle = query.casefold()
    hits: list[Hit] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        text = plain(raw.decode("utf-8", errors="replace"))
        at = text.casefold().find(needle)
        if at < 0:
            continue
        if len(hits) == limit:
            return hits, True
        end = at + len(needle)
        marked = escape(text[:at]) + Markup("<mark>") + escape(text[at:end]) + Markup("</mark>") + escape(text[end:])
        hits.append(Hit(number, Markup(marked)))
    return hits, False


async def read(session: AsyncSession, step: Step) -> bytes:
    return await logs.read_step_log(session, step)


async def cursor_now(session: AsyncSession, build: Build) -> int:
    """The follow cursor (`logs.read_after`) as of now: live updates start after it."""
    latest = await session.scalar(select(func.max(LogChunk.id)).where(LogChunk.build_id == build.id))
    return int(latest or 0)


class Tail:
    """The live end of one step's log for one viewer: pieces in, complete numbered lines out."""

    def __init__(self, offset: int, next_line: int) -> None:
        self.offset = offset  # bytes already shown
        self.next_line = next_line
        self.pending = b""  # bytes after `offset` that do not make a whole line yet

    def feed(self, offset: int, data: bytes) -> None:
        have = self.offset + len(self.pending)
        if offset + len(data) <= have:
            return  # already shown (a piece the page itself read)
        self.pending += data[max(0, have - offset) :]

    def lines(self, final: bool) -> tuple[int, Markup] | None:
        """The complete lines gathered (all of them if the step is final): first number and HTML."""
        raw, covered = split(self.pending, final)
        if not raw:
            return None
        first = self.next_line
        self.pending = self.pending[covered:]
        self.offset += covered
        self.next_line += len(raw)
        return first, lines_html(first, raw)

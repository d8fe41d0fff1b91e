"""Log windows, the live tail and ANSI colours: pure functions, checked against the obvious slow versions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from outpost.server.ui import logview
from outpost.server.ui.ansi import plain, to_html

pieces = st.lists(st.sampled_from([b"a", b"bb", b"", b"\x1b[1mc\x1b[0m", "é".encode(), b"\r"]), max_size=4)
logs = st.builds(
    lambda lines, tail: b"".join(b"".join(p) + b"\n" for p in lines) + tail,
    st.lists(pieces, max_size=15),
    st.sampled_from([b"", b"unfinished"]),
)


@given(logs, st.booleans(), st.one_of(st.none(), st.integers(-2, 20)), st.integers(1, 7))
def test_a_window_is_the_slice_of_all_lines_it_names(data: bytes, final: bool, start: int | None, count: int) -> None:
    lines, covered = logview.split(data, final)
    total = len(lines)
    first = max(1, total - count + 1) if start is None else min(max(1, start), max(1, total))
    chosen = lines[first - 1 : first - 1 + count]
    at_end = first - 1 + len(chosen) >= total

    window = logview.window(data, final, start, count)

    assert (window.first, window.shown, window.total, window.at_end) == (first, len(chosen), total, at_end)
    assert window.offset == (covered if at_end else 0)
    assert str(window.html) == str(logview.lines_html(first, chosen))


@given(logs, st.lists(st.integers(1, 9), max_size=8), st.integers(0, 30))
def test_the_live_tail_shows_each_line_once_however_the_pieces_fall(data: bytes, cuts: list[int], already: int) -> None:
    """Pieces arrive cut anywhere, some again (a resend, or what the page already read), yet every
    complete line comes out once, numbered in order; the unfinished one only when the step ends."""
    lines, covered = logview.split(data, False)
    shown = min(already, len(lines))
    offset = sum(len(line) + 1 for line in lines[:shown])
    tail = logview.Tail(offset, shown + 1)
    out: list[tuple[int, str]] = []
    position = 0
    for cut in [*cuts, len(data)]:
        end = min(len(data), position + cut)
        tail.feed(max(0, position - 3), data[max(0, position - 3) : end])  # overlaps the previous piece
        position = end
        got = tail.lines(final=False)
        if got:
            out.append((got[0], str(got[1])))
    last = tail.lines(final=True)
    if last:
        out.append((last[0], str(last[1])))
    final_lines, _ = logview.split(data, True)
    expected = str(logview.lines_html(shown + 1, final_lines[shown:]))
    assert "\n".join(html for _, html in out) == expected
    assert tail.offset == len(data)
    assert covered <= len(data)


def test_ansi_colours_become_classes_and_text_is_escaped() -> None:
    assert to_html("\x1b[1;31mred & bold\x1b[0m <tag>") == '<span class="ab f1">red &amp; bold</span> &lt;tag&gt;'
    assert to_html("\x1b[92mbright\x1b[39m plain") == '<span class="f10">bright</span> plain'
    assert to_html("\x1b[38;5;208mx\x1b[48;2;1;2;3my") == (
        '<span style="color:#ff8700">x</span><span style="color:#ff8700;background-color:#010203">y</span>'
    )
    assert to_html("10%\r50%\r100%") == "100%"
    assert to_html("a\x1b[2Kb\x1b]0;title\x07c\x07") == "abc"
    assert to_html("x" * 20, limit=5).startswith('xxxxx<span class="cut"> … 15 more characters')
    assert plain("\x1b[32mok\x1b[0m done") == "ok done"


def test_search_finds_lines_by_their_visible_text_and_stops_at_its_limit() -> None:
    data = b"".join(b"\x1b[32mline\x1b[0m %d\n" % i for i in range(1, 31))
    hits, more = logview.search(data, "LINE 2", limit=5)
    assert [h.number for h in hits] == [2, 20, 21, 22, 23]
    assert more
    assert str(hits[0].html) == "<mark>line 2</mark>"
    assert logview.search(data, "<script>") == ([], False)

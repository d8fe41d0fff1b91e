"""Log lines with ANSI escape codes → HTML: text escaped, SGR colours and styles as spans.

The 16 basic colours become classes (the stylesheet picks shades with enough contrast on the log's
background); 256-colour and true-colour codes become an inline colour. Every other escape sequence
(cursor moves, titles) is dropped, and a carriage return keeps what was written after it, as a
terminal would show it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape

SEQUENCE = re.compile(r"\x1b\[([0-9;:]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?")
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
LEVELS = (0, 95, 135, 175, 215, 255)


def _xterm(n: int) -> str | int:
    """A 256-colour index: 0-15 as the basic class number, the rest as #rrggbb."""
    if n < 16:
        return n
    if n < 232:
        n -= 16
        return f"#{LEVELS[n // 36]:02x}{LEVELS[n // 6 % 6]:02x}{LEVELS[n % 6]:02x}"
    gray = 8 + (n - 232) * 10
    return f"#{gray:02x}{gray:02x}{gray:02x}"


@dataclass
class Style:
    fg: str | int | None = None
    bg: str | int | None = None
    flags: set[str] = field(default_factory=set)

    def apply(self, params: str) -> None:
        codes = [int(c) if c.isdigit() else 0 for c in re.split("[;:]", params)] if params else [0]
        i = 0
        while i < len(codes):
            code = codes[i]
            i += 1
            if code == 0:
                self.fg, self.bg, self.flags = None, None, set()
            elif code in (1, 2, 3, 4):
                self.flags.add({1: "b", 2: "d", 3: "i", 4: "u"}[code])
            elif code in (22, 23, 24):
                self.flags -= {22: {"b", "d"}, 23: {"i"}, 24: {"u"}}[code]
            elif 30 <= code <= 37 or 90 <= code <= 97:
                self.fg = code - 30 if code < 90 else code - 82
            elif 40 <= code <= 47 or 100 <= code <= 107:
                self.bg = code - 40 if code < 100 else code - 92
            elif code == 39:
                self.fg = None
            elif code == 49:
                self.bg = None
            elif code in (38, 48) and i < len(codes):
                colour: str | int | None = None
                if codes[i] == 5 and i + 1 < len(codes):
                    colour, i = _xterm(codes[i + 1] % 256), i + 2
                elif codes[i] == 2 and i + 3 < len(codes):
                    r, g, b = (min(255, c) for c in codes[i + 1 : i + 4])
                    colour, i = f"#{r:02x}{g:02x}{b:02x}", i + 4
                else:
                    i = len(codes)
                if code == 38:
                    self.fg = colour
                else:
                    self.bg = colour

    def opening(self) -> str:
        classes = [f"a{f}" for f in sorted(self.flags)]
        styles = []
        for prefix, prop, value in (("f", "color", self.fg), ("g", "background-color", self.bg)):
            if isinstance(value, int):
                classes.append(f"{prefix}{value}")
            elif value is not None:
                styles.append(f"{prop}:{value}")
        if not classes and not styles:
            return ""
        style = f' style="{";".join(styles)}"' if styles else ""
        return f'<span class="{" ".join(classes)}"{style}>' if classes else f"<span{style}>"


def to_html(line: str, limit: int = 10_000) -> str:
    """One line of log text (no newline) as HTML."""
    if "\r" in line:
        line = line.rstrip("\r").rsplit("\r", 1)[-1]
    extra = len(line) - limit
    if extra > 0:
        line = line[:limit]
    if "\x1b" not in line:
        out = escape(CONTROLS.sub("", line), quote=False)
    else:
        style, parts, pos, open_ = Style(), [], 0, ""
        for match in SEQUENCE.finditer(line):
            text = CONTROLS.sub("", line[pos : match.start()])
            if text:
                parts.append(f"{open_}{escape(text, quote=False)}{'</span>' if open_ else ''}")
            pos = match.end()
            if match.group(2) == "m":
                style.apply(match.group(1))
                open_ = style.opening()
        text = CONTROLS.sub("", line[pos:])
        if text:
            parts.append(f"{open_}{escape(text, quote=False)}{'</span>' if open_ else ''}")
        out = "".join(parts)
    if extra > 0:
        out += f'<span class="cut"> … {extra} more characters (download the raw log)</span>'
    return out


def plain(line: str) -> str:
    """The text a reader sees, without escape codes (for search)."""
    if "\r" in line:
        line = line.rstrip("\r").rsplit("\r", 1)[-1]
    return CONTROLS.sub("", SEQUENCE.sub("", line))

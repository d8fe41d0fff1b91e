"""Following a build's log live, step by step, until the build ends."""

from __future__ import annotations

import base64
import threading
from typing import Any, BinaryIO

import click

from outpost.cli.api import Api
from outpost.wire import SYSTEM_STREAM

FINAL = {"success", "failure", "error", "terminated"}


def follow(api: Api, build_id: str, out: BinaryIO, *, stop: threading.Event | None = None) -> dict[str, Any]:
    """Writes every log byte of the build to `out` as it arrives; returns the finished build."""
    color = out.isatty()
    cursor = 0
    current: str | None = None
    at_line_start = True
    while stop is None or not stop.is_set():
        page = api.get(f"/builds/{build_id}/log", params={"after": cursor, "wait": 20})
        for piece in page["pieces"]:
            if piece["step"] != current:
                current = piece["step"]
                prefix = b"" if at_line_start else b"\n"
                out.write(prefix + _header(current, color).encode())
            data = base64.b64decode(piece["data"])
            out.write(data)
            at_line_start = data.endswith(b"\n")
        out.flush()
        cursor = page["cursor"]
        if page["finished"]:
            break
    if not at_line_start:
        out.write(b"\n")
        out.flush()
    build: dict[str, Any] = api.get(f"/builds/{build_id}")
    return build


def _header(stream: str, color: bool) -> str:
    title = "outpost" if stream == SYSTEM_STREAM else f"step: {stream}"
    line = f"── {title} ──"
    return (click.style(line, fg="cyan", bold=True) if color else line) + "\n"


def describe(build: dict[str, Any]) -> str:
    status = build["status"]
    colour = {"success": "green", "failure": "red", "error": "red", "terminated": "yellow"}.get(status)
    text = f"build {build['id']} {click.style(status, fg=colour, bold=True)}"
    if build.get("duration") is not None:
        text += f" in {build['duration']:.2f}s"
    if build.get("message"):
        text += f": {build['message']}"
    return text

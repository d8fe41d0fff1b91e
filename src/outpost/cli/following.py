"""Following a build's log live, step by step, until the build ends."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, BinaryIO

import click

from outpost.cli.api import Api, ApiError, Unreachable

FINAL = {"success", "failure", "error", "terminated"}
RECONNECT_FOR = 600.0  # seconds without reaching the control plane before following gives up
PAUSES = (0.5, 1.0, 2.0, 5.0)  # between attempts to reconnect, the last repeated
PASSING = {502, 503, 504}  # a proxy or load balancer in front of a restarting control plane


def follow(
    api: Api, build_id: str, out: BinaryIO, *, stop: threading.Event | None = None, reconnect_for: float = RECONNECT_FOR
) -> dict[str, Any]:
    """Writes every log byte of the build to `out` as it arrives; returns the finished build.

    A network cut or a restarting control plane does not end it: it says so on stderr and asks again (the
    cursor makes the log resume exactly where it stopped) until `reconnect_for` seconds have gone by."""
    color = out.isatty()
    cursor = 0
    current: str | None = None
    at_line_start = True
    while stop is None or not stop.is_set():
        asked = {"after": cursor, "wait": 20}
        page = _again(partial(api.get, f"/builds/{build_id}/log", params=asked), reconnect_for)
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
    build: dict[str, Any] = _again(partial(api.get, f"/builds/{build_id}"), reconnect_for)
    return build


def _again(call: Callable[[], Any], reconnect_for: float) -> Any:
    """`call()`, asked again while the control plane cannot be reached, for at most `reconnect_for` seconds."""
    lost_at: float | None = None
    attempt = 0
    while True:
        try:
            result = call()
        except (Unreachable, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status not in PASSING:
                raise
            now = time.monotonic()
            if lost_at is None:
                lost_at = now
                click.echo(f"connection lost ({exc}); reconnecting…", err=True)
            elif now - lost_at > reconnect_for:
                raise
            time.sleep(PAUSES[min(attempt, len(PAUSES) - 1)])
            attempt += 1
            continue
        if lost_at is not None:
            click.echo("reconnected; the log goes on where it stopped", err=True)
        return result


def _header(stream: str, color: bool) -> str:
    from outpost.wire import SYSTEM_STREAM  # wire loads pydantic: only when a log is printed

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

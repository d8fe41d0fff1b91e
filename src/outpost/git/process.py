"""Running git as a child process: its failures recognised by their text (git's messages are in English, see
`credentials.environment`), and ending git with every helper it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal

TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when git is stopped
AUTH_FAILED = re.compile(
    r"authentication failed|could not read (username|password)|returned error: 40[13]|permission denied \(publickey",
    re.IGNORECASE,
)
NOT_THERE = re.compile(
    r"couldn't find remote ref|not our ref|unadvertised object|repository '.*' not found|repository not found",
    re.IGNORECASE,
)


def last_line(output: bytes) -> str:
    lines = [line.strip() for line in re.split(r"[\r\n]+", output.decode(errors="replace")) if line.strip()]
    return lines[-1] if lines else ""


async def end(process: asyncio.subprocess.Process) -> None:
    """Ends git and every helper it started (git-remote-http, index-pack, ssh): it runs as its own process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TERM_GRACE):
                await process.wait()
            return

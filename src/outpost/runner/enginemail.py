"""What a runner tells the engine pod of a build it supervises, through files in the build folder on the work claim:
a cancel request, approvals. Both reach the engine through its own heartbeats too; these carry the runner's poll's
news at once instead of up to a heartbeat later. Files, not the API: the engine already reads that folder, and the
runner needs no permission to patch pods.

Layout (in the build folder):
    mail/cancel           the reason, once a cancel was asked
    mail/approvals.jsonl  one ApprovalDecision a line
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Protocol

from outpost.wire import ApprovalDecision

POLL = 0.25  # seconds between the engine's looks at its mail


class Recipient(Protocol):
    cancelling: bool

    def cancel(self, reason: str) -> None: ...

    def approve(self, approval: ApprovalDecision) -> None: ...


def post_cancel(build_folder: Path, reason: str) -> None:
    box = build_folder / "mail"
    box.mkdir(exist_ok=True)
    partial = box / "cancel.partial"
    partial.write_text(reason)
    partial.replace(box / "cancel")


def post_approval(build_folder: Path, approval: ApprovalDecision) -> None:
    box = build_folder / "mail"
    box.mkdir(exist_ok=True)
    with open(box / "approvals.jsonl", "a") as f:
        f.write(approval.model_dump_json() + "\n")


async def deliver(build_folder: Path, to: Recipient) -> None:
    """In the engine pod, until cancelled: hands what the runner posted to the build job (repeats are harmless:
    the job ignores an approval it had, and a second cancel)."""
    box = build_folder / "mail"
    read = 0  # bytes of approvals.jsonl handed over
    while True:
        with contextlib.suppress(OSError):
            if not to.cancelling and (box / "cancel").exists():
                to.cancel((box / "cancel").read_text() or "cancel requested")
        with contextlib.suppress(OSError, ValueError):
            chunk = _read_from(box / "approvals.jsonl", read)
            complete = chunk[: chunk.rfind(b"\n") + 1]
            read += len(complete)
            for line in complete.splitlines():
                if line.strip():
                    to.approve(ApprovalDecision.model_validate(json.loads(line)))
        await asyncio.sleep(POLL)


def _read_from(path: Path, offset: int) -> bytes:
    # A local file of a few lines: read in place, as the outbox reads its logs.
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()

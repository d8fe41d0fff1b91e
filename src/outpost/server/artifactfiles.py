"""Artifact files on the control plane's disk, per account and build: `<data dir>/artifacts/<account>/<build>/<id>`.
They are kept here, not in the database: an artifact may be 100 MiB, which neither a SQLite page cache nor a
PostgreSQL row should carry, and a download streams straight from the file. The rows are in store/artifacts.py.

An upload is written to a temporary file beside its final place, counted and hashed on the way; only a complete
upload is moved into place, so a cut leaves nothing half-written that a download could serve."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import FileResponse

from outpost.errors import NotFound, TooLarge
from outpost.server.models import Artifact
from outpost.settings import ServerSettings


@dataclass
class Received:
    temporary: Path
    size: int
    sha256: str

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.temporary.unlink()


class ArtifactFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, account_id: str, build_id: str, artifact_id: str) -> Path:
        return self.root / account_id / build_id / artifact_id

    async def receive(self, stream: AsyncIterator[bytes], account_id: str, limit: int) -> Received:
        """The request's body, into a temporary file of the account's folder; 413 past `limit` bytes."""
        folder = self.root / account_id
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor, name = tempfile.mkstemp(dir=folder, prefix=".upload-")
        received = Received(Path(name), 0, "")
        digest = hashlib.sha256()
        try:
            with os.fdopen(descriptor, "wb") as out:
                async for chunk in stream:
                    received.size += len(chunk)
                    if received.size > limit:
                        raise TooLarge(f"an artifact may hold at most {limit} bytes", max_bytes=limit)
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            received.discard()
            raise
        received.sha256 = digest.hexdigest()
        return received

    def keep(self, received: Received, account_id: str, build_id: str, artifact_id: str) -> None:
        target = self.path(account_id, build_id, artifact_id)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(received.temporary, target)

    def remove(self, account_id: str, build_id: str, artifact_id: str) -> None:
        target = self.path(account_id, build_id, artifact_id)
        with contextlib.suppress(OSError):
            target.unlink()
        with contextlib.suppress(OSError):
            target.parent.rmdir()  # the build's folder, once empty

    def response(self, row: Artifact) -> FileResponse:
        """The artifact's bytes, streamed from its file as an attachment named after it (never shown inline: an
        artifact could be HTML that would run as the control plane's page)."""
        on_disk = self.path(row.account_id, row.build_id, row.id)
        if not on_disk.is_file():
            raise NotFound(f"artifact {row.path!r} is gone from the control plane's disk")
        return FileResponse(
            on_disk,
            media_type="application/octet-stream",
            filename=row.path.rsplit("/", 1)[-1],
            headers={"X-Content-Type-Options": "nosniff", "Outpost-Sha256": row.sha256},
        )


def files_of(settings: ServerSettings) -> ArtifactFiles:
    return ArtifactFiles(settings.data_dir / "artifacts")

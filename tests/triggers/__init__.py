"""Tests of the webhook triggers.

The real payloads are read where they lie in the shared fixtures folder (never copied into the project);
without it these tests skip, and fail when CI=true.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

WEBHOOKS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "webhooks"


def webhook_fixture(name: str) -> bytes:
    """The exact bytes of the shared payload `name` (`github/ping.json`), or a skip (a failure in CI)."""
    path = WEBHOOKS / name
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing; CI must run with the shared fixtures")
        pytest.skip(f"shared fixtures absent: {path}")
    return path.read_bytes()

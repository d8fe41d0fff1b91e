"""The real `outpost` command against real control-plane and runner processes (the e2e fixtures)."""

from __future__ import annotations

from tests.e2e.conftest import control_plane, processes, pytest_runtest_makereport, start_runner

__all__ = ["control_plane", "processes", "pytest_runtest_makereport", "start_runner"]

"""The real control plane process for `outpost runtime create --kubernetes` (the e2e fixtures)."""

from __future__ import annotations

from tests.e2e.conftest import control_plane, processes, pytest_runtest_makereport

__all__ = ["control_plane", "processes", "pytest_runtest_makereport"]

"""The engine pods' test image (`fixtures.engine_image`): Outpost runs in it."""

from __future__ import annotations

from typing import Any

import pytest

from tests import containers
from tests.kube import fixtures

dockerd, engine_image = containers.dockerd, fixtures.engine_image

pytestmark = pytest.mark.timeout(300)


def test_outpost_runs_in_the_engine_image(dockerd: Any, engine_image: str) -> None:
    helped = dockerd.cli("run", "--rm", "--network", "none", engine_image, "outpost", "--help")
    assert "The runner: install it inside your network" in helped
    entry = dockerd.cli("run", "--rm", "--network", "none", engine_image,
                        "python3", "-m", "outpost.runner.enginepod", "--help")  # fmt: skip
    assert "--settings" in entry

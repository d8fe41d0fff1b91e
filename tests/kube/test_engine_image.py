"""The engine pods' test image (`fixtures.engine_image`): Outpost runs in it."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests import containers
from tests.gitserver import git_root, http_git_auth, upstream, upstream_template
from tests.kube import fixtures

dockerd, engine_image = containers.dockerd, fixtures.engine_image
__all__ = ["git_root", "http_git_auth", "upstream", "upstream_template"]

pytestmark = pytest.mark.timeout(300)


def test_outpost_runs_in_the_engine_image(dockerd: Any, engine_image: str) -> None:
    helped = dockerd.cli("run", "--rm", "--network", "none", engine_image, "outpost", "--help")
    assert "The runner: install it inside your network" in helped
    entry = dockerd.cli("run", "--rm", "--network", "none", engine_image,
                        "python3", "-m", "outpost.runner.enginepod", "--help")  # fmt: skip
    assert "--settings" in entry


# Outpost's own clone code in the image: git, its HTTP helper, its builtins (fetch-pack, index-pack) and the GIT_ASKPASS
# script (a /bin/sh script) that hands it the credentials; and the blob-filtered fetch that reads codefresh.yml.
CLONE = """
import asyncio, sys
from pathlib import Path
from outpost.git import clone, remote
async def main():
    async def out(chunk): sys.stdout.write(chunk.decode())
    url, user, password = sys.argv[1:4]
    result = await clone.clone(clone.CloneRequest(repo=url, target=Path("/tmp/app"), revision="main",
                                                  username=user, password=password), out)
    print("clone:", result.status, result.message, result.variables.get("CF_REVISION"))
    found = await remote.read_file(remote.Remote(url=url, username=user, password=password), "main", "README.md",
                                   seconds=60)
    print("read:", found.content.decode())
asyncio.run(main())
"""


def test_the_engine_image_clones_from_a_git_server_with_basic_auth(
    dockerd: Any, engine_image: str, upstream: Any, http_git_auth: Any
) -> None:
    url = http_git_auth.repo_url("acme/app.git")
    ran = dockerd.cli("run", "--rm", "--network", "host", "--user", f"{os.getuid()}:{os.getgid()}", engine_image,
                      "python3", "-c", CLONE, url, "robot", "s3cr3t-Pa55word")  # fmt: skip
    assert "clone: success checked out main" in ran, ran
    assert any(line.startswith("clone: ") and line.endswith(upstream.sha("main")) for line in ran.splitlines()), ran
    assert "read: # App" in ran, ran
    assert "warning" not in ran.lower(), ran  # no missing templates or helpers
    assert "s3cr3t-Pa55word" not in ran

"""Build volumes kept per pipeline (executors/kubernetes/claims.py) on the test cluster's API, as the runner's
service account: builds of a pipeline in a row share its claim, two at once get different ones, and only the
holder gives a claim back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.kube import fixtures

kube_api = fixtures.kube_api

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client(kube_api: Any) -> AsyncIterator[Any]:
    from lightkube import AsyncClient, KubeConfig

    async with AsyncClient(KubeConfig.from_file(kube_api.runner_kubeconfig), namespace="builds") as api:
        yield api


async def test_builds_of_a_pipeline_in_a_row_share_its_volume(client: Any) -> None:
    from outpost.executors.kubernetes import claims

    first = await claims.claim(client, "builds", "acme/app", "build-1", size="1Gi")
    assert await claims.release(client, "builds", first.name, "build-1")
    second = await claims.claim(client, "builds", "acme/app", "build-2", size="1Gi")
    assert second == claims.Claimed(first.name, kept=True)


async def test_two_builds_at_once_get_different_volumes_and_only_the_holder_releases(client: Any) -> None:
    from outpost.executors.kubernetes import claims

    await claims.claim(client, "builds", "acme/app", "build-0", size="1Gi")  # the pipeline's volume exists, held
    assert await claims.release(client, "builds", "vol-acme-app", "build-0")
    taken = await asyncio.gather(
        *(claims.claim(client, "builds", "acme/app", f"build-{i}", size="1Gi") for i in (1, 2, 3))
    )
    assert len({c.name for c in taken}) == 3
    assert [c.kept for c in taken].count(True) == 1  # exactly one got the pipeline's own volume
    assert not await claims.release(client, "builds", "vol-acme-app", "someone-else")

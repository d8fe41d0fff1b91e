"""A pod watch's wait for a change gives way to a cancel, even one that arrives as the pod changes.

On Python 3.11 `asyncio.wait_for` returns normally when the awaited event is set in the same turn of the loop as the
cancel, so the cancel is lost: a cancelled step went on following its pod until the step's own sleep ended (seen in
a clean-clone run). No API is needed: the watch is never entered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.kube.fixtures import need_kubernetes_packages


def pod_watch() -> Any:
    """A watch of a pod that is never entered (no API is called); lightkube missing skips (fails under CI=true)."""
    need_kubernetes_packages()
    from outpost.executors.kubernetes.api import PodWatch

    client: Any = None
    return PodWatch(client, "op-1-step")


async def test_a_cancel_arriving_as_the_pod_changes_ends_the_wait() -> None:
    watch = pod_watch()
    waiting = asyncio.create_task(watch.changed(30.0))
    await asyncio.sleep(0)  # it waits for a change now
    watch._see(None)  # the pod changed (here: it went) ...
    waiting.cancel()  # ... in the same turn as the cancel
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_change_ends_the_wait_and_no_change_ends_it_at_the_timeout() -> None:
    watch = pod_watch()
    waiting = asyncio.create_task(watch.changed(30.0))
    await asyncio.sleep(0)
    watch._see(None)
    await asyncio.wait_for(waiting, 5.0)
    assert watch.gone
    await watch.changed(0.05)  # nothing changes: it returns after its time

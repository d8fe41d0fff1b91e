"""Build volumes kept between builds of a pipeline (--volume-reuse pipeline), and fresh ones (none)."""

from __future__ import annotations

from pathlib import Path

import httpx

from outpost.runner import volumes
from outpost.runner.agent import Runner, RunnerIdentity, RunnerOptions
from outpost.runner.client import ProtocolClient
from tests.stack import BASE, Stack

LEAVE_AND_LOOK = """version: '1.0'
steps:
  look:
    image: alpine
    commands:
      - 'if [ -e left-by-last ]; then echo "found: $(cat left-by-last)"; else echo "empty volume"; fi'
      - "echo 'exported before? ${{FROM_LAST}}'"
      - echo "${{CF_BUILD_ID}}" > left-by-last
      - cf_export FROM_LAST=yes
"""


async def run_twice(stack: Stack, tmp_path: Path, reuse: str) -> tuple[bytes, bytes]:
    await stack.pipeline("cache", LEAVE_AND_LOOK)
    identity = RunnerIdentity.registered(BASE, await stack.register())
    options = RunnerOptions(url=BASE, data_dir=tmp_path / "runner", volume_reuse=reuse)
    runner = Runner(ProtocolClient(BASE, transport=httpx.ASGITransport(app=stack.app)), identity, options)
    logs = []
    for _ in range(2):
        build_id = (await stack.run("cache"))["id"]
        await runner.run(burst=True)
        log = (await stack.api("GET", f"/builds/{build_id}/steps/look/log")).content
        assert (await stack.build(build_id))["status"] == "success", log
        logs.append(log)
    return logs[0], logs[1]


async def test_a_pipeline_finds_what_its_last_build_left_in_the_volume_but_not_its_exports(
    stack: Stack, tmp_path: Path
) -> None:
    first, second = await run_twice(stack, tmp_path, "pipeline")
    assert b"empty volume" in first
    assert b"found: " in second
    # cf_export reaches the later steps of its own build only.
    assert b"exported before? ${{FROM_LAST}}" in second
    assert not list((tmp_path / "runner" / "builds").glob("*"))  # the build's own folder is gone all the same


async def test_with_reuse_none_every_build_starts_empty(stack: Stack, tmp_path: Path) -> None:
    first, second = await run_twice(stack, tmp_path, "none")
    assert b"empty volume" in first
    assert b"empty volume" in second
    assert not (tmp_path / "runner" / "volumes").exists()


def test_a_branch_key_differs_from_the_pipelines_and_names_stay_short(tmp_path: Path) -> None:
    root = tmp_path / "volumes"
    whole = volumes.claim(root, "acme", "web", tmp_path / "own-1")
    branch = volumes.claim(root, "acme", "web", tmp_path / "own-2", branch="feature/" + "x" * 300)
    try:
        assert (whole.kept, branch.kept) == (True, True)  # two keys: neither waits for the other
        assert whole.path != branch.path
        assert len(branch.path.name) < 80
    finally:
        whole.release()
        branch.release()


async def test_with_reuse_branch_each_branch_finds_only_what_its_own_last_build_left(
    stack: Stack, tmp_path: Path
) -> None:
    await stack.pipeline("cache", LEAVE_AND_LOOK)
    identity = RunnerIdentity.registered(BASE, await stack.register())
    options = RunnerOptions(url=BASE, data_dir=tmp_path / "runner", volume_reuse="branch")
    runner = Runner(ProtocolClient(BASE, transport=httpx.ASGITransport(app=stack.app)), identity, options)
    logs = {}
    for number, branch in enumerate(["main", "feature/x", "main"]):
        build_id = (await stack.run("cache", branch=branch))["id"]
        await runner.run(burst=True)
        logs[number] = (await stack.api("GET", f"/builds/{build_id}/steps/look/log")).content
        assert (await stack.build(build_id))["status"] == "success", logs[number]
    assert b"empty volume" in logs[0]
    assert b"empty volume" in logs[1]  # another branch: a volume of its own
    assert b"found: " in logs[2]  # main's, as its last build left it
    assert len([v for v in (tmp_path / "runner" / "volumes").iterdir() if v.is_dir()]) == 2


def test_a_volume_held_by_one_build_is_not_given_to_another(tmp_path: Path) -> None:
    root = tmp_path / "volumes"
    held = volumes.claim(root, "acme", "web", tmp_path / "own-1")
    assert held.kept
    busy = volumes.claim(root, "acme", "web", tmp_path / "own-2")
    assert not busy.kept
    assert busy.path == tmp_path / "own-2"
    held.release()
    again = volumes.claim(root, "acme", "web", tmp_path / "own-3")
    assert again.kept
    assert again.path == held.path
    again.release()


def test_pipelines_and_accounts_get_volumes_of_their_own(tmp_path: Path) -> None:
    root = tmp_path / "volumes"
    claims = [
        volumes.claim(root, a, p, tmp_path / "own") for a, p in [("acme", "a/b"), ("acme", "a-b"), ("other", "a/b")]
    ]
    try:
        assert all(c.kept for c in claims)
        assert len({c.path for c in claims}) == 3
    finally:
        for c in claims:
            c.release()


def test_a_restarted_runner_sees_which_kept_volumes_a_build_elsewhere_holds(tmp_path: Path) -> None:
    """An engine pod's build holds its volume's lock from another process: the runner's start-up leaves it alone."""
    held = volumes.claim(tmp_path / "volumes", "acme", "web", tmp_path / "own")
    free = volumes.claim(tmp_path / "volumes", "acme", "api", tmp_path / "own2")
    free.release()

    assert volumes.held(held.path)
    assert not volumes.held(free.path)
    held.release()
    assert not volumes.held(held.path)


def test_a_claims_last_build_mark_is_kept_in_the_claim_itself(tmp_path: Path) -> None:
    """With engine pods the kept volume is a claim mounted in the build folder: its mark must travel with the claim
    (a file beside it would go with the folder), so a restart from the failed step on it can skip steps."""
    mounted = tmp_path / "builds" / "b-2" / "volume"
    mounted.mkdir(parents=True)
    volume = volumes.of_claim(mounted, kept=True)
    volumes.mark_last_build(volume, volumes.LastBuild("b-1", True, False, {"main_clone": "abc123"}))

    assert (mounted / volumes.MARK_IN_CLAIM).is_file()
    assert volumes.last_build(volumes.of_claim(mounted, kept=True)) == volumes.LastBuild(
        "b-1", True, False, {"main_clone": "abc123"}
    )
    assert volumes.last_build(volumes.of_claim(mounted, kept=False)) is None  # a fresh claim has no past
    volumes.forget_last_build(volume)
    assert volumes.last_build(volume) is None

"""Build folders made ahead (runner/spares.py): builds take them, a runner keeps some ready, and a spare never holds
anything of a build."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from outpost.runner import spares
from outpost.runner.outbox import Outbox
from tests.runner.test_runner import TWO_STEPS, files_holding, runner_for, step_log
from tests.stack import Stack

SECRET = "s3cr3t-v4lue-of-the-build-91c2"


async def test_builds_run_in_spare_folders_and_the_runner_keeps_one_ready(stack: Stack, tmp_path: Path) -> None:
    await stack.pipeline("two", TWO_STEPS, secrets={"TOKEN": SECRET})
    builds = [(await stack.run("two"))["id"] for _ in range(3)]
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))

    await runner.run(burst=True)

    for build_id in builds:
        assert (await stack.build(build_id))["status"] == "success"
        assert await step_log(stack, build_id, "second") == b"second\n"
    data = runner.options.data_dir
    assert not list((data / "builds").glob("*"))
    (ready,) = (data / "spare").iterdir()  # the concurrency (1) of them, made after the last build
    assert sorted(str(p.relative_to(ready)) for p in ready.rglob("*") if p.is_file()) == [
        "outbox/events.jsonl",
        "outbox/lease.json",
        "outbox/logs/2473797374656d.log",
        "scratch/bin/cf_export",
    ]
    assert [p.stat().st_size for p in (ready / "outbox").rglob("*") if p.is_file()] == [0, 0, 0]
    assert files_holding(data / "spare", [SECRET.encode(), *(b.encode() for b in builds)]) == []


async def test_a_restarted_runner_throws_away_the_spares_an_earlier_one_left(stack: Stack, tmp_path: Path) -> None:
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))
    stale = runner.options.data_dir / "spare" / "1234-0"
    (stale / "scratch" / "bin").mkdir(parents=True)
    (stale / "scratch" / "bin" / "cf_export").write_text("#!/bin/sh\necho an older version\n")
    (runner.options.data_dir / "spare" / "1234-1.partial").mkdir()

    await runner.run(burst=True)

    (ready,) = (runner.options.data_dir / "spare").iterdir()
    assert ready.name != stale.name
    assert "older version" not in (ready / "scratch" / "bin" / "cf_export").read_text()


def test_a_spare_is_taken_once_and_none_is_no_error(tmp_path: Path) -> None:
    root = tmp_path / "spare"
    assert not spares.take(root, tmp_path / "a")  # no spare folder at all
    spares.fill(root, 1)
    spares.fill(root, 1)  # there is one already
    assert spares.take(root, tmp_path / "a")
    assert not spares.take(root, tmp_path / "b")
    assert (tmp_path / "a" / "scratch" / "bin" / "cf_export").stat().st_mode & 0o111
    assert (tmp_path / "a" / "outbox" / "lease.json").stat().st_mode & 0o777 == 0o600


def test_a_spare_taken_by_a_build_the_runner_crashed_in_is_not_delivered(tmp_path: Path) -> None:
    """A crash between the rename and the lease's write leaves an empty lease: nothing to deliver with (the
    restarted runner removes the folder), and nothing ran yet."""
    spares.fill(tmp_path / "spare", 1)
    assert spares.take(tmp_path / "spare", tmp_path / "build")
    with pytest.raises(ValueError, match="no job token"):
        Outbox.reopen(tmp_path / "build" / "outbox", httpx.AsyncClient(), 1024, runner_token="t")  # type: ignore[arg-type]

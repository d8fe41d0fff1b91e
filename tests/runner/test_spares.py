"""Build folders made ahead (runner/spares.py): builds take them, a runner keeps some ready, and a spare never holds
anything of a build."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from outpost.runner import spares
from outpost.runner.client import ProtocolClient
from outpost.runner.outbox import Outbox
from outpost.wire import SYSTEM_STREAM, RunBuildTask
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
    (ready,) = (data / "spare").iterdir()  # the concurrency (1) of them: the last build's folder, emptied
    # Its two steps' logs became blank files again, for the next build's steps to take: as many as it was made with.
    assert sorted(p.name for p in (ready / "outbox" / "blank").iterdir()) == ["0", "1", "2", "3"]
    assert sorted(str(p.relative_to(ready)) for p in ready.rglob("*") if p.is_file() and p.parent.name != "blank") == [
        "outbox/acked.json",
        "outbox/events.acked",
        "outbox/events.jsonl",
        "outbox/lease.json",
        "outbox/logs/2473797374656d.log",
        "scratch/bin/cf_export",
        "scratch/running/steps",  # the local executor's record of its steps' process groups
    ]
    assert [p.stat().st_size for p in ready.rglob("*") if p.is_file() and p.name != "cf_export"] == [0] * 10
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


def _finished_build_folder(root: Path, outside: Path) -> Path:
    """A build folder as a build leaves it: every file written, and things its steps left behind."""
    spares.fill(root / "spare", 1)
    folder = root / "builds" / "b-1"
    folder.parent.mkdir()
    assert spares.take(root / "spare", folder)
    box = folder / "outbox"
    for name in ("lease.json", "events.jsonl", "acked.json", "events.acked", "logs/2473797374656d.log"):
        (box / name).write_text(f"of b-1: {SECRET}\n")
    (box / "lease.json").chmod(0o644)
    (box / "logs" / "7374657031.log").write_text(f"step one said {SECRET}\n")
    for n in range(2, 7):  # four blanks at first; two taken, and five steps' logs (a step named `6` made its own)
        (box / "logs" / f"73{n:08x}.log").write_text(f"step {n} said {SECRET}\n")
    (box / "blank" / "0").unlink()
    (box / "blank" / "2").unlink()
    (folder / "volume" / "repo" / ".git").mkdir(parents=True)
    (folder / "volume" / "repo" / "README").write_text(SECRET)
    (folder / "volume" / "elsewhere").symlink_to(outside)
    (folder / "scratch" / "running").mkdir()
    (folder / "scratch" / "running" / "steps").write_text("4242\n")
    (folder / "scratch" / "bin" / "cf_export").write_text("#!/bin/sh\necho planted by b-1\n")
    (folder / "scratch" / "bin" / "helper").write_text("#!/bin/sh\n")
    (folder / "scratch" / "tmp-of-b-1").mkdir()
    return folder


def test_a_finished_build_folder_becomes_a_spare_that_holds_nothing_of_the_build(tmp_path: Path) -> None:
    """What the build wrote is emptied, what it left is removed, links are removed without being followed, and
    cf_export is the runner's own again: the next build starts as in a folder made new."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the build's")
    folder = _finished_build_folder(tmp_path, outside)
    made = tmp_path / "made"
    spares.make(made)

    assert spares.recycle(folder, tmp_path / "spare", 1)

    assert not folder.exists()
    (ready,) = (tmp_path / "spare").iterdir()
    assert files_holding(ready, [SECRET.encode(), b"b-1", b"4242"]) == []
    assert sorted(str(p.relative_to(ready)) for p in ready.rglob("*")) == sorted(
        [str(p.relative_to(made)) for p in made.rglob("*")]
        + ["scratch/running", "scratch/running/steps"]
        + [f"outbox/blank/{n}" for n in (4, 5, 6, 7)]  # the six streams' logs, emptied, beside the two left
    )
    assert [p.stat().st_size for p in (ready / "outbox").rglob("*") if p.is_file()] == [0] * 13
    assert (ready / "scratch" / "bin" / "cf_export").read_bytes() == (
        made / "scratch" / "bin" / "cf_export"
    ).read_bytes()
    assert (ready / "scratch" / "bin" / "cf_export").stat().st_mode & 0o777 == 0o755
    assert (ready / "outbox" / "lease.json").stat().st_mode & 0o777 == 0o600
    assert (outside / "keep.txt").read_text() == "not the build's"
    assert spares.take(tmp_path / "spare", tmp_path / "builds" / "b-2")  # and a build takes it like any other


def test_a_finished_build_folder_is_removed_when_enough_spares_are_ready_or_it_is_not_whole(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = _finished_build_folder(tmp_path, outside)
    spares.fill(tmp_path / "spare", 1)
    assert not spares.recycle(folder, tmp_path / "spare", 1)  # one is ready: this one goes
    assert not folder.exists()
    assert len(list((tmp_path / "spare").iterdir())) == 1

    folder = _finished_build_folder(tmp_path / "second", outside)
    shutil.rmtree(folder / "outbox")
    (folder / "outbox").symlink_to(outside)  # a link where the outbox was: removed, and the folder with it
    assert not spares.recycle(folder, tmp_path / "second" / "spare", 1)
    assert not folder.exists()
    assert list((tmp_path / "second" / "spare").iterdir()) == []
    assert outside.is_dir()


TASK = RunBuildTask(build_id="b-1", lease_id="l-1", lease_ttl=30.0, job_token="opj_x", account="", pipeline="", yaml="")


def _outbox_in_a_spare(root: Path, client: ProtocolClient) -> Outbox:
    """Build b-1's outbox, in the spare it took, as a runner makes it."""
    spares.fill(root / "spare", 1)
    assert spares.take(root / "spare", root / "b-1")
    return Outbox.create(root / "b-1" / "outbox", TASK, client, 1024, runner_token="rt")


async def test_a_new_stream_s_log_is_a_blank_file_renamed_and_a_folder_without_blanks_still_logs(
    tmp_path: Path,
) -> None:
    """A spare's blank files become the logs of the build's first streams (no new file on a step's path); past
    them, or in an outbox made without a spare, the log file is made as before."""
    client = ProtocolClient("http://127.0.0.1:9")  # never used: nothing is sent
    box = _outbox_in_a_spare(tmp_path, client)
    blanks = {p.stat().st_ino for p in (tmp_path / "b-1" / "outbox" / "blank").iterdir()}
    for n in range(6):
        await box.log(f"step-{n}", f"line of step {n}\n".encode())
    logs = sorted((tmp_path / "b-1" / "outbox" / "logs").iterdir())
    assert [p.read_bytes() for p in logs if p.stem != SYSTEM_STREAM.encode().hex()] == [
        f"line of step {n}\n".encode() for n in range(6)
    ]
    assert len({p.stat().st_ino for p in logs} & blanks) == 4  # the four blanks, then two files made
    assert list((tmp_path / "b-1" / "outbox" / "blank").iterdir()) == []

    plain = Outbox.create(tmp_path / "b-2" / "outbox", TASK, client, 1024, runner_token="rt")  # no spare: no blank/
    await plain.log("step-0", b"made the usual way\n")
    assert (tmp_path / "b-2" / "outbox" / "logs" / f"{b'step-0'.hex()}.log").read_bytes() == b"made the usual way\n"
    await client.aclose()


async def test_an_outbox_let_go_writes_nothing_more_so_a_recycled_log_file_stays_blank(tmp_path: Path) -> None:
    """The outbox keeps its last stream's file open; once the build lets its folder go, that file may be a later
    build's blank log: a write after that is refused, not appended to it."""
    client = ProtocolClient("http://127.0.0.1:9")  # never used: nothing is sent
    box = _outbox_in_a_spare(tmp_path, client)
    await box.log("step", b"of b-1\n")

    box.let_go()
    assert spares.recycle(tmp_path / "b-1", tmp_path / "spare", 1)
    with pytest.raises(RuntimeError, match="after its outbox was let go"):
        await box.log("step", f"late, with {SECRET}\n".encode())

    (ready,) = (tmp_path / "spare").iterdir()
    assert files_holding(ready, [SECRET.encode(), b"b-1"]) == []
    await client.aclose()

"""The local executor: output as it comes, exit codes, and no process left behind."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from pathlib import Path

import pytest

from outpost.engine import BuildEngine
from outpost.errors import ExecutorError
from outpost.executors import executor_class
from outpost.executors.base import Executor, StepJob
from outpost.executors.local import LocalExecutor
from tests.engine.recorder import Recorder
from tests.engine.test_engine import context


def job(tmp_path: Path, script: str, shell: str = "sh") -> StepJob:
    return StepJob(step="s", script=script, env={"PATH": os.defpath}, workdir=tmp_path, shell=shell)


async def collect(executor: LocalExecutor, j: StepJob) -> tuple[int, bytes]:
    out = bytearray()

    async def sink(chunk: bytes) -> None:
        out.extend(chunk)

    code = await executor.run(j, sink)
    return code, bytes(out)


async def test_stdout_and_stderr_arrive_merged_and_complete(tmp_path: Path) -> None:
    script = "for i in $(seq 1 2000); do echo out $i; echo err $i >&2; done; printf '\\000\\377 binary'"
    code, out = await collect(LocalExecutor(tmp_path, tmp_path / "scratch"), job(tmp_path, script))
    assert code == 0
    lines = out.split(b"\n")
    assert lines.count(b"out 2000") == 1
    assert lines.count(b"err 2000") == 1
    assert out.endswith(b"\x00\xff binary")


async def test_the_exit_code_is_returned(tmp_path: Path) -> None:
    code, _ = await collect(LocalExecutor(tmp_path, tmp_path / "scratch"), job(tmp_path, "exit 42"))
    assert code == 42


async def test_background_processes_do_not_outlive_their_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code, _ = await collect(
        LocalExecutor(tmp_path, tmp_path / "scratch"), job(tmp_path, f"sleep 300 & echo $! > {pidfile}")
    )
    assert code == 0
    assert not Path(f"/proc/{pidfile.read_text().strip()}").exists() or _zombie(int(pidfile.read_text()))


async def test_cancelling_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    script = f"sleep 300 & echo $! >> {pidfile}; sh -c 'sleep 301' & echo $! >> {pidfile}; wait"
    running = asyncio.create_task(collect(LocalExecutor(tmp_path, tmp_path / "scratch"), job(tmp_path, script)))
    while not pidfile.exists() or len(pidfile.read_text().split()) < 2:
        await asyncio.sleep(0.05)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for pid in map(int, pidfile.read_text().split()):
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


async def test_a_cancelled_step_is_over_only_when_every_process_of_it_is_gone(tmp_path: Path) -> None:
    # kill() returns when the signal is sent, not when the process has died; with many children
    # some are still running for a moment after it, and a cancel must not report the step over then.
    pidfile = tmp_path / "pids"
    script = f"for i in $(seq 40); do sh -c 'trap \"\" TERM; while :; do :; done' & echo $! >> {pidfile}; done; wait"
    for _ in range(3):
        pidfile.unlink(missing_ok=True)
        running = asyncio.create_task(collect(LocalExecutor(tmp_path, tmp_path / "scratch"), job(tmp_path, script)))
        while not pidfile.exists() or len(pidfile.read_text().split()) < 40:
            await asyncio.sleep(0.05)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 20)
        pids = map(int, pidfile.read_text().split())
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        assert alive == []


async def test_a_missing_shell_is_an_executor_error(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="not installed"):
        await collect(LocalExecutor(tmp_path, tmp_path / "scratch"), job(tmp_path, "true", shell="no-such-shell"))


def test_executors_are_found_by_name_and_unknown_names_are_explained() -> None:
    assert executor_class("local") is LocalExecutor
    with pytest.raises(ExecutorError, match="unknown executor 'podman'"):
        executor_class("podman")


def _zombie(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


async def test_a_step_that_ignores_sigterm_is_killed_anyway(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"trap '' TERM; sleep 300 & echo $! > {pidfile}; wait"
    running = asyncio.create_task(collect(LocalExecutor(tmp_path, tmp_path / "scratch"), job(tmp_path, script)))
    while not pidfile.exists() or not pidfile.read_text().strip():
        await asyncio.sleep(0.05)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 20)
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


# --- pause and resume (a runner whose lease deadline passed) -------------------------------------------------------


def _state(pid: int) -> str:
    """The process's state letter from /proc (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


async def _lines(path: Path, at_least: int) -> list[str]:
    async with asyncio.timeout(30):
        while not path.exists() or len(lines := path.read_text().splitlines()) < at_least:
            await asyncio.sleep(0.05)
    return lines


async def test_a_paused_step_runs_nothing_until_resumed_and_then_ends_with_its_whole_output(tmp_path: Path) -> None:
    printed = tmp_path / "printed"
    script = f'for i in $(seq 1 30); do l="line $i $(date +%s.%N)"; echo "$l"; echo "$l" >> {printed}; sleep 0.05; done'
    executor = LocalExecutor(tmp_path, tmp_path / "scratch")
    running = asyncio.create_task(collect(executor, job(tmp_path, script)))
    await _lines(printed, 5)

    assert await executor.pause()
    paused_at = len(printed.read_text().splitlines())
    await asyncio.sleep(1.5)
    assert len(printed.read_text().splitlines()) <= paused_at + 1  # (a line being printed as the signal came)
    assert not running.done()
    await executor.resume()

    code, out = await asyncio.wait_for(running, 30)
    assert code == 0
    lines = printed.read_text().splitlines()
    assert out.decode().splitlines() == lines
    assert [int(line.split()[1]) for line in lines] == list(range(1, 31))
    stamps = [float(line.split()[2]) for line in lines]
    assert max(b - a for a, b in itertools.pairwise(stamps)) >= 1.4  # the pause, and nothing in it


async def test_a_step_started_while_paused_starts_only_once_resumed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    executor = LocalExecutor(tmp_path, tmp_path / "scratch")
    assert await executor.pause()
    running = asyncio.create_task(collect(executor, job(tmp_path, f"touch {marker}")))
    await asyncio.sleep(1.0)
    assert not marker.exists()
    assert not running.done()
    await executor.resume()
    assert (await asyncio.wait_for(running, 30))[0] == 0
    assert marker.exists()


async def test_cancelling_a_paused_step_lets_it_clean_up_and_ends_every_process_of_it(tmp_path: Path) -> None:
    pidfile, cleaned = tmp_path / "pids", tmp_path / "cleaned"
    script = (
        f"trap 'echo cleaned > {cleaned}; exit 143' TERM; "
        f"sleep 300 & echo $! >> {pidfile}; sh -c 'trap \"\" TERM; sleep 301' & echo $! >> {pidfile}; wait"
    )
    executor = LocalExecutor(tmp_path, tmp_path / "scratch")
    running = asyncio.create_task(collect(executor, job(tmp_path, script)))
    pids = [int(p) for p in await _lines(pidfile, 2)]
    assert await executor.pause()
    async with asyncio.timeout(10):
        while any(_state(pid) != "T" for pid in pids):
            await asyncio.sleep(0.05)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 20)
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)] == []
    assert cleaned.read_text() == "cleaned\n"  # SIGTERM reached it as on any cancel, not only SIGKILL


async def test_an_executor_that_cannot_pause_says_so() -> None:
    assert await Executor(Path("/nonexistent"), Path("/nonexistent")).pause() is False


async def test_a_steps_timeout_does_not_count_the_time_it_was_paused(tmp_path: Path) -> None:
    started = tmp_path / "started"
    yaml = "version: '1.0'\nsteps:\n  main:\n    image: x\n    timeout: 3s\n"
    yaml += f"    commands: ['touch {started}; for i in $(seq 20); do sleep 0.1; done']\n"
    recorder = Recorder()
    ctx = context(tmp_path, yaml)
    engine = BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder)
    running = asyncio.create_task(engine.run())
    async with asyncio.timeout(30):
        while not started.exists():
            await asyncio.sleep(0.05)

    assert await engine.executor.pause()
    await asyncio.sleep(2.5)  # with the 2 s the step runs (in steps of 0.1 s), past its timeout
    await engine.executor.resume()

    outcome = await asyncio.wait_for(running, 30)
    assert outcome.status == "success", recorder.final("main").message


async def test_what_a_crashed_runner_left_running_of_a_build_is_ended_after_the_crash_and_only_that(
    tmp_path: Path,
) -> None:
    """Each step's process group is written down as it starts; `after_crash` (a restarted runner) ends the groups of
    that build still running, past steps' and other builds' untouched."""
    scratch = tmp_path / "scratch"
    executor = LocalExecutor(tmp_path, scratch)

    def step(script: str, build: str) -> StepJob:
        env = {"PATH": os.defpath, "CF_BUILD_ID": build}
        return StepJob(step="s", script=script, env=env, workdir=tmp_path)

    async def sink(_chunk: bytes) -> None:
        pass

    assert await executor.run(step("true", "b1"), sink) == 0  # a finished step stays written down: harmless
    pids = tmp_path / "pids"
    mine = asyncio.create_task(executor.run(step(f"sleep 300 & echo $! >> {pids}; wait", "b1"), sink))
    other = asyncio.create_task(LocalExecutor(tmp_path, scratch).run(step("sleep 300", "b2"), sink))
    try:
        async with asyncio.timeout(20):
            while not pids.exists() or not pids.read_text().strip():
                await asyncio.sleep(0.05)
            LocalExecutor.after_crash(tmp_path, scratch, "b1")
            assert await mine == -9  # the step's shell, killed with its group
        child = int(pids.read_text())
        assert not Path(f"/proc/{child}").exists() or _zombie(child)
        assert not other.done()  # another build's step runs on
    finally:
        other.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await other


STEPS_AT_ONCE_RACE = 600


def test_steps_never_close_a_descriptor_another_thread_opened_meanwhile(tmp_path: Path) -> None:
    """On the runner's own loop (uvloop), while a thread opens and uses files (the runner removes build folders in
    one): each step's pipe is closed once, so the thread never has a descriptor closed under it (EBADF)."""
    import threading

    import uvloop

    stop, broken, opened = threading.Event(), [], [0]

    def files() -> None:
        while not stop.is_set():
            fd = os.open(os.devnull, os.O_RDONLY)
            try:
                for _ in range(20):
                    os.fstat(fd)
                opened[0] += 1
            except OSError as exc:
                broken.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def steps() -> tuple[int, int]:
        executor = LocalExecutor(tmp_path, tmp_path / "scratch")
        before = len(os.listdir("/proc/self/fd"))
        for t in threads:
            t.start()
        limit = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with limit:
                code, out = await collect(executor, job(tmp_path, f"echo {i}"))
                assert (code, out) == (0, f"{i}\n".encode())

        await asyncio.gather(*(one(i) for i in range(STEPS_AT_ONCE_RACE)))
        stop.set()
        await asyncio.to_thread(lambda: [t.join(10) for t in threads])
        return before, len(os.listdir("/proc/self/fd"))

    threads = [threading.Thread(target=files, daemon=True) for _ in range(4)]
    try:
        before, after = uvloop.run(steps())
    finally:
        stop.set()
    assert opened[0] > 0
    assert broken == []
    assert after == before  # and no pipe was left open

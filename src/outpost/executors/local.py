"""The local executor: steps run as process groups on the runner's own host.

It ignores `image` (the engine says so once per build) and runs the step script with /bin/sh or bash
inside the build volume. Cancellation kills the step's whole process group; a pause stops every running step's
group (SIGSTOP) and holds back steps not started yet, a resume continues them (SIGCONT). A step starts through
`Popen` (a vfork) and its exit is watched through a pidfd in the event loop, not through the loop's own
subprocess support: uvloop's forks the whole runner process, which made every step 2-7 ms slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from outpost.errors import ExecutorError
from outpost.executors.base import Executor, Output, StepJob

TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when a step is cancelled
DRAIN_AFTER_EXIT = 2.0  # seconds to collect output left in the pipe after the shell exited
GONE_WAIT = 5.0  # seconds to wait, after SIGKILL, for the last process of a step to be gone
PGID_DIR = "running"  # the process group id of each step started, one a line in `running/steps`
MARKS = "steps"
_SHELLS: dict[tuple[str, str | None], str] = {}  # where each shell was found, by (shell, PATH)


class LocalExecutor(Executor):
    name: ClassVar[str] = "local"
    takes_kubeconfig: ClassVar[bool] = True

    def __init__(
        self, volume: Path, scratch: Path, *, build_id: str = "", options: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(volume, scratch, build_id=build_id, options=options)
        self._groups: set[int] = set()  # the process group of each running step
        self._thawed = asyncio.Event()  # cleared while paused: no step starts
        self._thawed.set()
        self._marked = False  # the marks' folder exists

    async def pause(self) -> bool:
        self._thawed.clear()
        self.paused.pause()
        for pgid in self._groups:
            _signal_group(pgid, signal.SIGSTOP)
        return True

    async def resume(self) -> None:
        self._thawed.set()
        self.paused.resume()
        for pgid in self._groups:
            _signal_group(pgid, signal.SIGCONT)

    def _mark(self, pgid: int) -> None:
        marks = self.scratch / PGID_DIR / MARKS
        if not self._marked:
            marks.parent.mkdir(parents=True, exist_ok=True)
            self._marked = True
        with open(marks, "a") as f:
            f.write(f"{pgid}\n")

    @classmethod
    def after_crash(cls, volume: Path, scratch: Path, build_id: str, options: Mapping[str, str] | None = None) -> None:
        kill_leftovers(scratch, build_id)

    def notice(self, job: StepJob) -> str | None:
        if job.image:
            return f"the local executor runs steps on the runner's host and ignores image: {job.image}"
        return None

    async def run(self, job: StepJob, output: Output) -> int:
        shell = _shell_path(job.shell)
        job.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(job.env)
        if job.extra_path:
            env["PATH"] = os.pathsep.join([*map(str, job.extra_path), env.get("PATH", os.defpath)])
        if job.kubeconfig is not None:
            env["KUBECONFIG"] = str(job.kubeconfig)
        await self._thawed.wait()  # paused: a step starts only once the build may run again
        loop = asyncio.get_running_loop()
        try:
            # Popen (vfork) rather than loop.subprocess_exec: uvloop's spawn forks the whole runner, 3-6 ms a
            # step against ~1 ms (docs/benchmarks.md, "Per-step overhead"). It blocks for that millisecond, as
            # asyncio's own subprocess_exec does.
            proc = subprocess.Popen(  # noqa: ASYNC220 - a vfork: shorter than a trip through the loop
                [shell, "-c", job.script],
                cwd=job.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutorError(f"cannot start {shell}: {exc}") from exc
        pgid = proc.pid
        self._groups.add(pgid)
        if not self._thawed.is_set():  # paused while the process was being started
            _signal_group(pgid, signal.SIGSTOP)
        try:
            step = _StepWatch(loop, proc)
        except OSError as exc:  # no pidfd (Linux before 5.3): nothing would tell us when the step ends
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            self._groups.discard(pgid)
            raise ExecutorError(f"cannot watch the step's process: {exc}") from exc
        try:
            assert proc.stdout is not None
            step.read(proc.stdout.fileno())
            # Lets a restarted runner end what a crashed one left running. Appended, never removed step by step:
            # creating and unlinking a file a step cost more than the spawn on a busy disk; a finished step's
            # line is harmless (kill_leftovers trusts a group only if it carries the build's id).
            self._mark(pgid)
            pump = asyncio.create_task(step.forward(output))
            try:
                # Shielded: cancelling a task cancels the bare future it awaits, and we still need this one.
                await asyncio.shield(step.exited)
                # Children left running in the background would hold the pipe open: end them too.
                _signal_group(pgid, signal.SIGKILL)
                await _wait_group_gone(pgid, GONE_WAIT)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DRAIN_AFTER_EXIT):
                        await asyncio.shield(pump)
            finally:
                pump.cancel()
        except asyncio.CancelledError:
            await _kill_group(pgid, step)
            raise
        finally:
            step.close()
            if proc.stdout is not None:
                proc.stdout.close()  # its one close: nothing else owns the descriptor
            self._groups.discard(pgid)
        return proc.returncode if proc.returncode is not None else -1


class _StepWatch:
    """Collects the step's output from its pipe and tells when the shell itself exits (a pidfd in the loop).

    Waiting for the pipe to close is not enough: a background child of the step can hold it open forever.

    The pipe is read with `add_reader` and `os.read`, not through `connect_read_pipe`: uvloop's pipe transport
    closes the descriptor in libuv and then closes the file object it was given as well, so for a moment the
    same number is closed twice. A thread opening a file in that moment (the runner removes build folders in
    one) had its descriptor closed under it, and what it closed in turn could be another build's pidfd or
    socket: seen as `OSError: [Errno 9] Bad file descriptor` in `rmtree` and a build whose end was never seen
    (its lease ran out: "runner lost"). Here the Popen's own file object owns the pipe and is closed once.
    """

    HIGH, LOW = 64, 16  # queued chunks at which reading pauses and resumes
    READ = 1 << 16

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> None:
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.exited: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._proc = proc
        self._paused = False
        self._pipe: int | None = None  # the pipe's descriptor while it is watched
        # Readable once the process has ended; waitpid on our own pid only, so no other child is reaped here.
        self._pidfd: int | None = os.pidfd_open(proc.pid)
        loop.add_reader(self._pidfd, self._reap)

    def read(self, pipe: int) -> None:
        """Starts forwarding what the step writes to `pipe` (which the caller keeps open, then closes)."""
        os.set_blocking(pipe, False)
        self._pipe = pipe
        self._loop.add_reader(pipe, self._readable)

    def _readable(self) -> None:
        if self._pipe is None:
            return
        try:
            data = os.read(self._pipe, self.READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the end of the pipe: every writer has gone
            self._unwatch_pipe()
            self.chunks.put_nowait(None)
            return
        self.chunks.put_nowait(data)
        if self.chunks.qsize() >= self.HIGH and not self._paused:
            self._loop.remove_reader(self._pipe)
            self._paused = True

    def _unwatch_pipe(self) -> None:
        if self._pipe is not None:
            if not self._paused:
                self._loop.remove_reader(self._pipe)
            self._pipe = None

    def _reap(self) -> None:
        if self._proc.poll() is not None:
            self._unwatch_pidfd()
            if not self.exited.done():
                self.exited.set_result(None)

    def _unwatch_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def close(self) -> None:
        """Stops watching the pipe and the process (the pipe's descriptor is its owner's to close)."""
        self._unwatch_pipe()
        self._unwatch_pidfd()

    async def forward(self, output: Output) -> None:
        while (chunk := await self.chunks.get()) is not None:
            await output(chunk)
            if self._paused and self._pipe is not None and self.chunks.qsize() <= self.LOW:
                self._loop.add_reader(self._pipe, self._readable)
                self._paused = False


def _shell_path(shell: str) -> str:
    path = "/bin/sh" if shell == "sh" else _which(shell, os.environ.get("PATH"))
    if not path:
        raise ExecutorError(f"shell {shell!r} is not installed on this runner")
    return path


def _which(shell: str, search: str | None) -> str | None:
    """`shutil.which`, found once per shell and PATH: it stats the PATH's folders (~0.1 ms a step). A shell not
    found is looked for again next time; one found and removed since fails to start with a clear error all the same."""
    key = (shell, search)
    if (path := _SHELLS.get(key)) is None and (path := shutil.which(shell, path=search)) is not None:
        if len(_SHELLS) >= 64:
            _SHELLS.clear()
        _SHELLS[key] = path
    return path


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _kill_group(pgid: int, step: _StepWatch) -> None:
    _signal_group(pgid, signal.SIGTERM)
    # A stopped process (a paused build) takes SIGTERM only once continued; after it, so it runs nothing else first.
    _signal_group(pgid, signal.SIGCONT)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(TERM_GRACE):
            await asyncio.shield(step.exited)
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(TERM_GRACE):
            await asyncio.shield(step.exited)
    # A signal is delivered, not obeyed, when kill() returns: a background child may still be
    # running for a moment. A step is only reported ended once nothing of it runs any more.
    await _wait_group_gone(pgid, GONE_WAIT)


def _group_running(pgid: int) -> bool:
    """Whether a live (not zombie) process of the group remains, read from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


async def _wait_group_gone(pgid: int, limit: float) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return  # no process in the group at all, not even a zombie
        if not _group_running(pgid) or asyncio.get_running_loop().time() >= deadline:
            return
        await asyncio.sleep(0.01)


def kill_leftovers(scratch: Path, build_id: str) -> bool:
    """Ends the steps a crashed runner left running, if they are still there. True if one was found.

    A process group id is only trusted if that process still carries the build's id in its
    environment: after a reboot the number may belong to somebody else.
    """
    found = False
    markers = sorted((scratch / PGID_DIR).glob("*")) if (scratch / PGID_DIR).is_dir() else []
    for marker in markers:
        try:
            pgids = {int(line) for line in marker.read_text().split()}  # older runners: one file a step, one id
        except (OSError, ValueError):
            continue
        for pgid in pgids:
            try:
                environ = Path(f"/proc/{pgid}/environ").read_bytes()
            except OSError:
                continue
            if f"CF_BUILD_ID={build_id}".encode() in environ.split(b"\0"):
                _signal_group(pgid, signal.SIGKILL)
                found = True
    return found

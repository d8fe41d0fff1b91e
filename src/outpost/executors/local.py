"""The local executor: steps run as process groups on the runner's own host.

It ignores `image` (the engine says so once per build) and runs the step script with /bin/sh or bash
inside the build volume. Cancellation kills the step's whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from typing import ClassVar

from outpost.errors import ExecutorError
from outpost.executors.base import Executor, Output, StepJob

READ_SIZE = 64 * 1024
TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when a step is cancelled
DRAIN_AFTER_EXIT = 2.0  # seconds to collect output left in the pipe after the shell exited


class LocalExecutor(Executor):
    name: ClassVar[str] = "local"

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
        try:
            proc = await asyncio.create_subprocess_exec(
                shell,
                "-c",
                job.script,
                cwd=job.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutorError(f"cannot start {shell}: {exc}") from exc
        assert proc.stdout is not None
        reader = asyncio.create_task(_pump(proc.stdout, output))
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            await _kill_group(proc)
            reader.cancel()
            raise
        # Children left running in the background would keep the pipe open: end them too.
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, DRAIN_AFTER_EXIT)
        return code


def _shell_path(shell: str) -> str:
    path = "/bin/sh" if shell == "sh" else shutil.which(shell)
    if not path:
        raise ExecutorError(f"shell {shell!r} is not installed on this runner")
    return path


async def _pump(stream: asyncio.StreamReader, output: Output) -> None:
    while chunk := await stream.read(READ_SIZE):
        await output(chunk)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), TERM_GRACE)
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), TERM_GRACE)

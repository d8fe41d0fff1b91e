"""One build on the runner: the engine, its lease heartbeats and its outbox, together.

No step runs without a lease: the job keeps its own lease deadline (when it sent the poll that claimed the build,
then the last accepted renewal it sent — a heartbeat, a report —, plus the TTL, on the monotonic clock: always
earlier than the control plane's expiry), so the steps need not wait for the control plane to hear that the
build started (that rides the first report); when the deadline passes the
build's steps are frozen (the executor's pause) while the job keeps asking for a renewal. The runner cannot
tell a stalled control plane from a cut network: a renewal resumes the steps as if nothing had happened; a
lost lease (409) stops them, and what the build printed is handed in as late log before the build is let go.
An executor that cannot pause, or a freeze longer than `max_freeze`, stops the build at the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from outpost.engine import BuildContext, BuildEngine, BuildOutcome, cfexport
from outpost.engine.restart import Restart
from outpost.engine.results import duration
from outpost.errors import ExecutorError, LeaseLost, ProtocolError
from outpost.executors import executor_class
from outpost.pipelines.variables import EXPORT_FILE
from outpost.runner import pipelinefile
from outpost.runner import volumes as volumes_
from outpost.runner.artifacts import StepOutputs
from outpost.runner.client import ProtocolClient, Revoked, Unreachable, retrying
from outpost.runner.outbox import Outbox
from outpost.wire import SYSTEM_STREAM, ApprovalDecision, BuildFinished, RunBuildTask

log = logging.getLogger("outpost.runner.job")
STOP_GRACE = 15.0  # seconds an abandoned build gets to stop its processes
LATE_GRACE = 60.0  # seconds a build whose lease is gone gets to hand in the rest of its log
MAX_FREEZE = 3600.0  # seconds a build stays frozen waiting for a renewal before it is stopped (--max-freeze)
FROZEN_BEAT = 1.0  # seconds between heartbeats while frozen: the first renewal resumes the steps
LEFTOVERS = (EXPORT_FILE, cfexport.MASK_FILE, "event.json")  # written into the volume by Outpost, for one build


class BuildJob:
    def __init__(
        self,
        task: RunBuildTask,
        client: ProtocolClient,
        *,
        folder: Path,
        executor: str,
        heartbeat_interval: float,
        max_chunk: int,
        runner: str = "",
        runner_token: str = "",
        runner_secrets: Mapping[str, str] | None = None,
        executor_options: Mapping[str, str] | None = None,
        volumes: Path | None = None,
        by_branch: bool = False,
        volume: volumes_.Volume | None = None,
        max_freeze: float = MAX_FREEZE,
        lease_written: bool = False,
        leased_since: float | None = None,
        recycle: Callable[[Path], object] | None = None,
    ) -> None:
        """`leased_since`: when the poll that claimed the build was sent (monotonic), the earliest the control plane
        could have created the lease. None where it is not known (an engine pod: another process, maybe another
        node): then a heartbeat goes first, and no step runs before it was accepted."""
        self.task = task
        self._recycle = recycle  # makes the folder a spare when the build is over (runner/spares.py), else removed
        self.max_freeze = max_freeze
        self.client = client
        self.folder = folder
        self.heartbeat_interval = min(heartbeat_interval, task.lease_ttl / 3)
        # `lease_written`: in an engine pod, whose runner wrote the outbox's lease (sealed with its own token).
        self.outbox = Outbox.create(
            folder / "outbox", task, client, max_chunk, runner_token=runner_token, lease=not lease_written
        )
        # `volumes`: where pipelines' cached volumes live (--volume-reuse pipeline, or per branch with `by_branch`);
        # None: each build its own. `volume`: one already taken for the build (an engine pod's claim).
        own = folder / "volume"
        branch = (task.branch or "") if by_branch else None
        if volume is not None:
            self.volume = volume
        elif volumes:
            self.volume = volumes_.claim(volumes, task.account, task.pipeline, own, branch)
        else:
            self.volume = volumes_.Volume(own, False)
        ctx = BuildContext.from_task(
            task, volume=self.volume.path, scratch=folder / "scratch", runner=runner, runner_secrets=runner_secrets
        )
        ctx.restart = restart_plan(task, self.volume)
        volumes_.forget_last_build(self.volume)  # until this build has finished, none may resume on the volume
        if self.volume.mounted and self.volume.kept:  # an engine that died left them in the claim
            remove_leftovers(self.volume.path)
        runs = executor_class(executor)(ctx.volume, ctx.scratch, build_id=task.build_id, options=executor_options)
        self.engine = BuildEngine(ctx, runs, self.outbox)
        self.engine.collect = StepOutputs(client, task, self.volume.path)
        self.completed = False  # the engine ran the build to its end here (a restart may resume on its volume)
        self.delivered = asyncio.Event()  # the build's end was reported and taken (before its volume is let go)
        self.cancelling = False
        self._renewed = leased_since  # the claim's poll; then each accepted heartbeat's send time
        self._renewal = asyncio.Event()  # set by each accepted heartbeat
        self._leased = asyncio.Event()  # the lease deadline is known: steps may run
        if leased_since is not None:
            self._leased.set()
        self.frozen_since: float | None = None  # monotonic; while the steps are frozen past the lease deadline
        self.lease_ran_out = False
        self.revoked: Revoked | None = None  # set when the control plane refused our job token: the runner stops

    @property
    def build_id(self) -> str:
        return self.task.build_id

    def cancel(self, reason: str) -> None:
        self.cancelling = True
        self.engine.cancel(reason)

    async def run(self) -> None:
        """Runs the build to the end and delivers every report; abandons it if the lease is lost."""
        log.info("build %s of %s: started", self.build_id, self.task.pipeline)
        # The engine first: its first step then starts before the pump, the heartbeats and the watch take a turn.
        body = asyncio.create_task(self._run_engine())
        pump = asyncio.create_task(self.outbox.pump())
        beats = asyncio.create_task(self._heartbeats())
        watch = asyncio.create_task(self._lease_watch())
        lost: LeaseLost | None = None
        try:
            await _first_failure({pump, beats, body}, until=body)
            watch.cancel()  # the build is over: reporting it needs no deadline
            self.outbox.close()
            await _first_failure({pump, beats}, until=pump)
            log.info("build %s: finished and delivered", self.build_id)
            self.delivered.set()
        except (LeaseLost, ProtocolError) as exc:
            log.warning("build %s: abandoned: %s", self.build_id, exc)
            lost = exc if isinstance(exc, LeaseLost) else None
            if isinstance(exc, Revoked):
                self.revoked = exc
            if lost is not None:  # said in the log handed in late
                await self.outbox.log(
                    SYSTEM_STREAM, f"[outpost] the lease is lost ({exc}): the build stops here\n".encode()
                )
            self.engine.cancel(f"abandoned: {exc}")  # frozen steps too: the executor ends them without resuming
        finally:
            watch.cancel()
            if not body.done():
                self.engine.cancel("the runner gave the build up")
                with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                    async with asyncio.timeout(STOP_GRACE):
                        await asyncio.shield(body)
            for task in (beats, pump, body):
                task.cancel()
            for task in (body, beats, pump):
                with contextlib.suppress(asyncio.CancelledError, ProtocolError):
                    await task
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await watch
            if lost is not None:  # the build has stopped: all it printed is in the outbox
                await self._hand_in_late()
            await self._let_go()

    async def _let_go(self) -> None:
        """Whatever ended the build, nothing of it stays: its folder goes, and a kept volume loses what Outpost
        wrote there for this build (cf_export's values, masked ones included; the webhook's event)."""
        if self.volume.kept:
            volumes_.mark_last_build(self.volume, self._last_build())
            remove_leftovers(self.volume.path)
        self.volume.release()
        self.outbox.let_go()  # its open log file may become a later build's blank one
        # In a thread: the unlinks take milliseconds of kernel time that the other builds' steps and reports
        # would otherwise wait for (py-spy: a fifth of a busy runner's samples). Shielded: a cancel of the
        # build's task does not leave the folder half there.
        await asyncio.shield(asyncio.to_thread(_remove_folder, self.folder, self.volume, self._recycle))

    def _last_build(self) -> volumes_.LastBuild:
        members = self.engine.state.members
        clones = {
            key[len("steps.") : -len(".revision")]: value
            for key, value in members.items()
            if key.startswith("steps.") and key.endswith(".revision")
        }
        exported = (self.volume.path / EXPORT_FILE).exists()
        return volumes_.LastBuild(self.build_id, self.completed and not self.lease_ran_out, exported, clones)

    async def _run_engine(self) -> None:
        try:
            await self._first_renewal()
            outcome = await pipelinefile.read_into(self.engine, self.task, self.outbox) or await self.engine.run()
        except (LeaseLost, ProtocolError):
            raise
        except Exception as exc:  # a bug must not leave the build running forever
            log.exception("build %s: engine failed", self.build_id)
            # The message is shown like the log: a secret in an exception's text is masked there too.
            outcome = BuildOutcome("error", self.engine.reporter.mask(f"runner error: {type(exc).__name__}: {exc}"))
        else:
            self.completed = True
        if self.lease_ran_out:
            outcome = BuildOutcome("error", self._ran_out_message())
        self.outbox.finish(BuildFinished(status=outcome.status, message=outcome.message, finished_at=time.time()))

    async def _first_renewal(self) -> None:
        """Where the claim's time is not known (an engine pod), a heartbeat before anything runs: its send time starts
        the lease deadline. Retried until the TTL has passed (then the control plane would give the build back)."""
        if self._leased.is_set():
            return
        deadline = asyncio.get_running_loop().time() + self.task.lease_ttl

        async def beat() -> None:
            sent = time.monotonic()
            answer = await self.client.heartbeat(self.task)
            self._renewed = max(self._renewed or sent, sent)
            if answer.cancel_requested and not self.engine.cancelled:
                self.cancel("cancel requested")

        await retrying(beat, deadline=deadline)
        self._leased.set()

    def lease_deadline(self) -> float:
        """When our lease may end (monotonic): the send time of the last renewal the control plane
        accepted (the claim's poll, a report, a heartbeat) plus the TTL. The control plane counts from when it
        received that call, later."""
        renewals = [t for t in (self._renewed, self.outbox.renewed_at) if t is not None]
        return max(renewals) + self.task.lease_ttl if renewals else time.monotonic() + self.task.lease_ttl

    async def _lease_watch(self) -> None:
        """When the lease deadline passes without a renewal, freezes the build's steps until a renewal comes (no
        step runs without a lease); stops the build if they cannot be frozen or no renewal came in `max_freeze`."""
        await self._leased.wait()  # nothing runs before
        while True:
            while (left := self.lease_deadline() - time.monotonic()) > 0:  # noqa: ASYNC110 - a deadline that moves
                await asyncio.sleep(left)
            if not await self._freeze() or not await self._thaw_on_renewal():
                break
        self.lease_ran_out = True
        log.warning("build %s: %s; stopping it", self.build_id, self._ran_out_message())
        await self.outbox.log(SYSTEM_STREAM, f"[outpost] {self._ran_out_message()}: the build stops here\n".encode())
        self.engine.cancel(self._ran_out_message())

    async def _freeze(self) -> bool:
        """Pauses the build's steps; False if the executor cannot (then the build is stopped instead)."""
        try:
            paused = await self.engine.executor.pause()
        except ExecutorError as exc:
            log.warning("build %s: cannot freeze its steps: %s", self.build_id, exc)
            return False
        if not paused:
            return False
        self.frozen_since = time.monotonic()
        self._renewal.clear()
        log.warning(
            "build %s: no renewal of its lease for %gs; its steps are frozen", self.build_id, self.task.lease_ttl
        )
        line = (
            f"[outpost] no renewal of the lease from the control plane for {self.task.lease_ttl:g}s: the steps are "
            f"frozen until it answers (at most {duration(self.max_freeze)})\n"
        )
        await self.outbox.log(SYSTEM_STREAM, line.encode())
        return True

    async def _thaw_on_renewal(self) -> bool:
        """Waits, frozen, for a renewal that moves the deadline past now; then resumes the steps. False when
        `max_freeze` passes first (the steps stay frozen until the build is stopped)."""
        assert self.frozen_since is not None
        silent_since = self.lease_deadline() - self.task.lease_ttl  # the last renewal the control plane answered
        limit = self.frozen_since + self.max_freeze
        while (now := time.monotonic()) < limit:
            if self.lease_deadline() > now:
                try:
                    await self.engine.executor.resume()
                except ExecutorError as exc:
                    log.warning("build %s: cannot resume its steps: %s", self.build_id, exc)
                    return False
                self.frozen_since = None
                log.info("build %s: the control plane renewed its lease; its steps resume", self.build_id)
                line = f"[outpost] the control plane answered again after {now - silent_since:.0f}s; the steps resume\n"
                await self.outbox.log(SYSTEM_STREAM, line.encode())
                return True
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                async with asyncio.timeout(limit - now):
                    await self._renewal.wait()
            self._renewal.clear()
        return False

    def _ran_out_message(self) -> str:
        message = f"the lease ran out: no renewal from the control plane for {self.task.lease_ttl:g}s"
        if self.frozen_since is not None:
            message += f", nor in the {duration(self.max_freeze)} its steps were frozen"
        return message

    async def _hand_in_late(self) -> None:
        try:
            async with asyncio.timeout(LATE_GRACE):
                taken = await self.outbox.deliver_late()
        except (ProtocolError, TimeoutError) as exc:
            log.warning("build %s: the rest of its log was not taken: %s", self.build_id, exc)
            return
        if taken:
            log.info("build %s: handed in %d log bytes after its lease expired", self.build_id, taken)

    async def _heartbeats(self) -> None:
        while True:
            await self._between_beats()
            sent = time.monotonic()
            try:
                answer = await self.client.heartbeat(self.task)
            except Unreachable as exc:
                log.warning("build %s: heartbeat failed (%s); the build goes on", self.build_id, exc)
                continue
            except LeaseLost:
                if self.outbox.has_finish:  # it may have crossed the accepted final report: the pump's answer decides
                    return
                raise
            self._renewed = max(self._renewed or sent, sent)
            self._renewal.set()
            if answer.cancel_requested and not self.engine.cancelled:
                self.cancel("cancel requested")
            for approval in answer.approvals:
                self.approve(approval)

    async def _between_beats(self) -> None:
        """`heartbeat_interval`, cut short to FROZEN_BEAT while the steps are frozen: a renewal resumes them."""
        began = time.monotonic()
        while (left := began + self._beat_interval() - time.monotonic()) > 0:  # noqa: ASYNC110 - it may shorten
            await asyncio.sleep(min(left, FROZEN_BEAT))

    def _beat_interval(self) -> float:
        return FROZEN_BEAT if self.frozen_since is not None else self.heartbeat_interval

    def approve(self, approval: ApprovalDecision) -> None:
        """An answer to a pending-approval step, from the poll or a heartbeat (repeats are ignored)."""
        if self.engine.decide(approval.step, approval.decision, approval.by):
            log.info("build %s: step %s %s by %s", self.build_id, approval.step, approval.decision, approval.by)


def restart_plan(task: RunBuildTask, volume: volumes_.Volume) -> Restart | None:
    """What a restart from the failed step may skip here: the steps that succeeded in the original, only on the
    volume that build left, as it left it; otherwise nothing, and the log says why every step runs."""
    if task.resume is None:
        return None
    original = f"#{task.resume.number}" if task.resume.number else f"build {task.resume.build_id}"
    last = volumes_.last_build(volume)
    why = ""
    if not volume.kept:
        why = "this runner keeps no volume for the pipeline (--volume-reuse none), or another build holds it now"
    elif last is None or last.build_id != task.resume.build_id:
        why = f"this runner's volume of the pipeline is not the one {original} left (another runner ran it, or a "
        why += "build ran since)"
    elif not last.complete:
        why = f"{original} did not run to its end on this runner"
    elif last.exported:
        why = f"{original} exported variables (cf_export), which no runner keeps after a build"
    if why or last is None:
        return Restart(original, note=f"restarted from the failed step of {original}, but every step runs: {why}")
    note = f"restarted from the failed step of {original}: the steps that succeeded there are skipped (its volume)"
    return Restart(original, frozenset(task.resume.steps), dict(last.clones), note=note)


def _remove_folder(folder: Path, volume: volumes_.Volume, recycle: Callable[[Path], object] | None = None) -> None:
    """The build folder, or with `recycle` what makes it a spare; not when a claim is mounted in it (an engine
    pod's): removing the folder would empty the pipeline's kept volume, and the runner removes the folder itself
    once the engine pod is gone."""
    if volume.mounted:
        return
    if recycle is not None:
        recycle(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def remove_leftovers(volume: Path) -> None:
    """What Outpost wrote into a kept volume for one build; the checkouts and the steps' own files stay."""
    for leftover in LEFTOVERS:
        with contextlib.suppress(OSError):
            (volume / leftover).unlink(missing_ok=True)


async def _first_failure(tasks: set[asyncio.Task[None]], *, until: asyncio.Task[None]) -> None:
    """Waits for `until`; re-raises at once the error of any task that fails before it."""
    pending = set(tasks)
    while not until.done():
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    until.result()

"""The runner agent: registration, the poll loop, concurrency, recovery and a graceful stop.

A single long-poll is always open, even when every slot is busy (then it asks for no builds), so
cancel requests arrive at once instead of waiting for the next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import random
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from outpost import __version__, logformat
from outpost.errors import LeaseLost, OutpostError
from outpost.executors import executor_class
from outpost.runner import clusterchecks, gitqueries, spares
from outpost.runner.client import Backoff, ProtocolClient, Revoked, Unreachable
from outpost.runner.job import MAX_FREEZE, STOP_GRACE, BuildJob, remove_leftovers
from outpost.runner.outbox import Outbox
from outpost.runner.supervisor import EngineSupervisor, adoptable_folders, needed_secrets, outbound_settings
from outpost.runner.volumes import held
from outpost.wire import (
    ApprovalTask,
    BuildFinished,
    CancelBuildTask,
    ClusterCheckTask,
    GitQueryTask,
    PollRequest,
    RegisterRequest,
    RegisterResponse,
    RunBuildTask,
)

log = logging.getLogger("outpost.runner")
RECOVERY_DEADLINE = 60.0  # seconds to deliver what a crashed runner left behind
MAX_TASKS = 32  # tasks one poll may bring (builds among them: at most the free slots)
SPARES = 8  # build folders kept ready at most (runner/spares.py): as many as the concurrency, up to this
START_TURNS = 3  # turns of the loop the builds a poll brought get before the next poll is sent


@dataclass
class RunnerIdentity:
    """What registration gave us; kept in <data dir>/runner.json (mode 0600)."""

    url: str
    runner_id: str
    token: str
    account: str
    runtime: str
    heartbeat_interval: float = 10.0
    max_log_chunk: int = 1024 * 1024

    @classmethod
    def registered(cls, url: str, answer: RegisterResponse) -> RunnerIdentity:
        return cls(
            url=url,
            runner_id=answer.runner_id,
            token=answer.runner_token,
            account=answer.account,
            runtime=answer.runtime,
            heartbeat_interval=answer.heartbeat_interval,
            max_log_chunk=answer.max_log_chunk,
        )

    @classmethod
    def load(cls, data_dir: Path) -> RunnerIdentity | None:
        path = data_dir / "runner.json"
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise OutpostError(f"{path} is damaged ({exc}); remove it and register again") from None

    def save(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / "runner.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)


@dataclass
class RunnerOptions:
    url: str
    data_dir: Path
    name: str = ""
    executor: str = "local"
    concurrency: int = 1
    drain_timeout: float = 600.0  # seconds running builds get after SIGTERM
    poll_wait: float = 30.0
    runner_secrets: dict[str, str] = field(default_factory=dict)  # from --secrets-file: never sent anywhere
    executor_options: dict[str, str] = field(default_factory=dict)  # e.g. docker_host, builder
    volume_reuse: str = "pipeline"  # keep a pipeline's volume between its builds (`branch`: per branch; `none`: not)
    max_freeze: float = MAX_FREEZE  # seconds a build's steps stay frozen past its lease deadline, awaiting a renewal


async def identify(client: ProtocolClient, options: RunnerOptions, token: str) -> RunnerIdentity:
    """Registers with an install token, or reuses the identity saved by an earlier registration."""
    saved = RunnerIdentity.load(options.data_dir)
    url = options.url.rstrip("/")
    if saved is not None and saved.url == url and (not token or token.startswith("opi_") or token == saved.token):
        return saved
    if not token.startswith("opi_"):
        # A runner token given directly: nothing to register, defaults for the rest.
        return RunnerIdentity(url=url, runner_id="", token=token, account="", runtime="")
    request = RegisterRequest(
        install_token=token,
        name=options.name or socket.gethostname(),
        version=__version__,
        executor=options.executor,
        concurrency=options.concurrency,
        hostname=socket.gethostname(),
    )
    identity = RunnerIdentity.registered(url, await _register(client, request))
    identity.save(options.data_dir)
    return identity


async def _register(client: ProtocolClient, request: RegisterRequest) -> RegisterResponse:
    """Registration waits for an unreachable control plane (it may be starting too), saying so."""
    backoff = Backoff(cap=30.0)
    while True:
        try:
            return await client.register(request)
        except Unreachable as exc:
            delay = backoff.next_delay()
            log.warning("cannot register yet (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)


class Runner:
    def __init__(self, client: ProtocolClient, identity: RunnerIdentity, options: RunnerOptions) -> None:
        self.client = client
        self.identity = identity
        self.options = options
        options.data_dir = options.data_dir.resolve()  # steps run elsewhere: every path must be absolute
        self.jobs: dict[str, tuple[BuildJob | EngineSupervisor, asyncio.Task[None]]] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._builds_dir = options.data_dir / "builds"
        self._spares_dir = options.data_dir / "spare"
        self._filling: asyncio.Task[None] | None = None  # making spare build folders, in a thread
        self._queries: set[asyncio.Task[None]] = set()
        self._revoked: Revoked | None = None

    def stop(self) -> None:
        """Stop taking builds; running ones get `drain_timeout` to finish."""
        self._stopping.set()

    @property
    def free_slots(self) -> int:
        """Builds this runner would take now (none once it is stopping)."""
        return 0 if self._stopping.is_set() else max(self.options.concurrency - len(self.jobs), 0)

    async def run(self, *, burst: bool = False) -> None:
        """Polls and runs builds until `stop()`; with `burst`, until the queue is empty."""
        recoveries = self._recover()
        janitor = self._start_janitor()
        if not self.engine_pods:
            spares.clear(self._spares_dir)
            self._refill()
        backoff = Backoff(cap=30.0)
        try:
            while not self._stopping.is_set():
                try:
                    queue_empty = await self._poll_once(wait=0.0 if burst else self.options.poll_wait)
                    backoff.reset()
                except Unreachable as exc:
                    delay = backoff.next_delay()
                    if exc.retry_after is not None:  # overloaded: as asked, spread out so runners do not return at once
                        delay = max(delay, random.uniform(exc.retry_after, 2 * exc.retry_after))
                    log.warning("control plane unreachable (%s); retrying in %.1fs", exc, delay)
                    await self._sleep_unless_stopping(delay)
                    continue
                if burst and queue_empty and not self.jobs:
                    break
            if self._revoked is not None:
                await self._give_up_all()
                raise OutpostError(f"the control plane refused this runner's token: {self._revoked}")
            await self._drain()
        finally:
            if self._queries:  # answers being looked up: they take seconds at most
                await asyncio.wait(set(self._queries), timeout=30.0)
            if not burst:
                for task in recoveries:
                    task.cancel()
            if janitor is not None:
                janitor.cancel()
                recoveries.append(janitor)
            if self._filling is not None:  # a thread: it cannot be cancelled, and takes milliseconds
                recoveries.append(self._filling)
            await asyncio.gather(*recoveries, return_exceptions=True)

    def _start_janitor(self) -> asyncio.Task[None] | None:
        """With engine pods and kept volumes, the janitor of build volume claims (after `_recover`: the builds
        this runner adopts hold theirs)."""
        if not self.engine_pods or self.options.volume_reuse == "none":
            return None
        from outpost.executors.kubernetes.janitor import Janitor

        janitor = Janitor(self.options.executor_options, lambda: set(self.jobs))
        return asyncio.create_task(janitor.run(), name="volume-janitor")

    async def _poll_once(self, wait: float) -> bool:
        """One poll and what it brought. True if it could have claimed a build and there was none."""
        self._slot_freed.clear()
        free = 0 if self._stopping.is_set() else self.options.concurrency - len(self.jobs)
        request = PollRequest(
            free_slots=max(free, 0),
            running=[bid for bid, (job, _) in self.jobs.items() if not job.cancelling],
            wait=wait,
            max_tasks=MAX_TASKS,
        )
        sent = time.monotonic()  # a build it claims is leased from no earlier than this (job.py: the lease deadline)
        poll = asyncio.create_task(self.client.poll(self.identity.token, request))
        interrupt = asyncio.create_task(self._interrupted(can_interrupt=free <= 0))
        try:
            await asyncio.wait({poll, interrupt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupt.cancel()
        if not poll.done():
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError, OutpostError):
                await poll
            return False  # interrupted: says nothing about the queue
        try:
            answer = poll.result()
        except Revoked as exc:
            self._revoke(exc)
            return False
        tasks = answer.all()
        for task in tasks:
            if isinstance(task, RunBuildTask):
                self._start(task, leased_since=sent)
            elif isinstance(task, CancelBuildTask) and task.build_id in self.jobs:
                log.info("build %s: cancel requested", task.build_id)
                self.jobs[task.build_id][0].cancel(task.reason)
            elif isinstance(task, ApprovalTask) and task.build_id in self.jobs:
                self.jobs[task.build_id][0].approve(task.approval)
            elif isinstance(task, GitQueryTask | ClusterCheckTask):
                query = asyncio.create_task(self._answer(task), name=f"{task.kind}-{task.query_id}")
                self._queries.add(query)
                query.add_done_callback(self._queries.discard)
        # The next poll goes at once: the new builds need nothing from the control plane before their first step
        # (their `started` rides their first report), and an open poll is how a cancel reaches them soonest. Only
        # after a few turns of the loop, though: the builds just started reach their first step's spawn in three
        # (the job, the engine, the executor) if nothing holds them up, and the poll's request (~0.4 ms) goes after.
        started = any(isinstance(t, RunBuildTask) for t in tasks)
        if started:
            for _ in range(START_TURNS):
                await asyncio.sleep(0)
        return not started and free > 0

    async def _interrupted(self, *, can_interrupt: bool) -> None:
        """Ends on a stop request, or when a slot frees up if the current poll asked for no builds.

        Dropping a poll that asked for builds may lose a claim made just then; that build was never
        started, so the control plane gives it back to the queue when its lease expires.
        """
        waits = [asyncio.create_task(self._stopping.wait())]
        if can_interrupt:
            waits.append(asyncio.create_task(self._slot_freed.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    @property
    def engine_pods(self) -> bool:
        """Builds run in engine pods (the Kubernetes executor with --engine-image)."""
        return self.options.executor == "kubernetes" and bool(self.options.executor_options.get("engine_image"))

    def _describe(self) -> str:
        return (
            f"runner {self.options.name or socket.gethostname()} ({self.identity.runner_id or 'by token'}) "
            f"on {socket.gethostname()}, outpost {__version__}, executor {self.options.executor}"
        )

    def _supervise(self, task: RunBuildTask) -> None:
        """The build's engine runs in an engine pod."""
        settings = {
            "url": self.identity.url,
            "heartbeat_interval": self.identity.heartbeat_interval,
            "max_chunk": self.identity.max_log_chunk,
            "runner": self._describe() + ", engine pod",
            "runner_secrets": needed_secrets(task, self.options.runner_secrets),
            "volumes": None,  # a kept volume is a claim of its own (the supervisor takes it), or there is none
            "max_freeze": self.options.max_freeze,
            **outbound_settings(),
        }
        supervisor = EngineSupervisor(
            self._builds_dir / task.build_id,
            self.client,
            runner_token=self.identity.token,
            max_chunk=self.identity.max_log_chunk,
            executor_options=self.options.executor_options,
            task=task,
            settings=settings,
            heartbeat_interval=self.identity.heartbeat_interval,
            volume_reuse=self.options.volume_reuse,
        )
        self._track(task.build_id, supervisor)

    def _track(self, build_id: str, job: BuildJob | EngineSupervisor) -> asyncio.Task[None]:
        # The build's own context: every line it logs names it (--log-format json).
        running = asyncio.create_task(job.run(), name=f"build-{build_id}", context=logformat.context(build_id=build_id))
        self.jobs[build_id] = (job, running)
        running.add_done_callback(lambda _t: self._finished(build_id))
        return running

    def _start(self, task: RunBuildTask, *, leased_since: float) -> None:
        """Starts the build claimed by a poll sent at `leased_since` (monotonic)."""
        if self.engine_pods:
            self._supervise(task)
            return
        folder = self._builds_dir / task.build_id
        try:
            spares.take(self._spares_dir, folder)
            job = BuildJob(
                task,
                self.client,
                folder=folder,
                executor=self.options.executor,
                heartbeat_interval=self.identity.heartbeat_interval,
                max_chunk=self.identity.max_log_chunk,
                runner_token=self.identity.token,
                runner_secrets=self.options.runner_secrets,
                executor_options=self.options.executor_options,
                volumes=self.options.data_dir / "volumes" if self.options.volume_reuse != "none" else None,
                by_branch=self.options.volume_reuse == "branch",
                max_freeze=self.options.max_freeze,
                runner=self._describe(),
                leased_since=leased_since,
                # Up to twice as many as are made: builds ending together would otherwise find the spares made
                # again already (`_refill` after each build), and their folders would be removed, not recycled.
                recycle=functools.partial(spares.recycle, spares=self._spares_dir, count=2 * self._spares_wanted),
            )
        except (OSError, OutpostError) as exc:
            # Never started: the control plane gives the build back to the queue when the lease expires.
            log.error("build %s: cannot be set up on this runner: %s", task.build_id, exc)
            return
        self._track(task.build_id, job)

    async def _answer(self, task: GitQueryTask | ClusterCheckTask) -> None:
        """Answers a git query or a cluster check beside the builds (it takes no build slot); a lost answer only
        times out the asker."""
        if isinstance(task, ClusterCheckTask):
            name = self.options.name or socket.gethostname()
            checked = await clusterchecks.answer(task, self.options.runner_secrets, name)
            log.info("cluster check %s (%s): %s", task.query_id, task.access.name, checked.error or checked.git_version)
            try:
                await self.client.answer_cluster_check(self.identity.token, task.query_id, checked)
            except OutpostError as exc:
                log.warning("cluster check %s: the answer was not accepted: %s", task.query_id, exc)
            return
        answer = await gitqueries.answer(task, self.options.runner_secrets)
        log.info("git query %s (%s of %s): %s", task.query_id, task.query, task.repo, answer.error or "answered")
        try:
            await self.client.answer_git_query(self.identity.token, task.query_id, answer)
        except OutpostError as exc:
            log.warning("git query %s: the answer was not accepted: %s", task.query_id, exc)

    def _finished(self, build_id: str) -> None:
        job, _ = self.jobs.pop(build_id, (None, None))
        if job is not None and job.revoked is not None:
            self._revoke(job.revoked)
        self._slot_freed.set()
        self._refill()
        if not self.jobs:
            # The build's objects hold one another (tasks, the engine, HTTP exchanges): the garbage collector frees
            # them, ~1-4 ms, and left alone it did so in the middle of the next build's hand-over (the parse's
            # allocations set it off). Freed now, while the runner has nothing else to do.
            asyncio.get_running_loop().call_soon(gc.collect, 1)

    def _refill(self) -> None:
        """Makes spare build folders in a thread, up to the concurrency (none with engine pods: they make their own)."""
        if self.engine_pods or (self._filling is not None and not self._filling.done()):
            return
        self._filling = asyncio.create_task(asyncio.to_thread(_fill_spares, self._spares_dir, self._spares_wanted))

    @property
    def _spares_wanted(self) -> int:
        return min(self.options.concurrency, SPARES)

    def _revoke(self, refusal: Revoked) -> None:
        """A refused runner or job token: this runner was revoked. It takes nothing more and stops everything."""
        if self._revoked is None:
            log.error("the control plane refused this runner (%s): stopping every build and exiting", refusal)
            self._revoked = refusal
        self._stopping.set()

    async def _give_up_all(self) -> None:
        """Stops every build now (no drain: nothing it reports would be accepted); each removes its folder."""
        tasks = [t for _, t in self.jobs.values()]
        for task in tasks:
            task.cancel()  # BuildJob.run stops the steps through the executor, then removes the folder
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE + 5.0)

    async def _drain(self) -> None:
        # Engine pods carry their builds on without us: the next start of this runner adopts them.
        supervised = [t for job, t in self.jobs.values() if isinstance(job, EngineSupervisor)]
        if supervised:
            log.info("leaving %d build(s) to their engine pods; the next start of this runner adopts them",
                     len(supervised))  # fmt: skip
            for task in supervised:
                task.cancel()
            await asyncio.wait(supervised, timeout=30.0)
        if not self.jobs:
            return
        log.info("waiting up to %.0fs for %d running build(s)", self.options.drain_timeout, len(self.jobs))
        tasks = [t for _, t in self.jobs.values()]
        _done, late = await asyncio.wait(tasks, timeout=self.options.drain_timeout)
        for job, _ in list(self.jobs.values()):
            if not isinstance(job, EngineSupervisor):
                job.cancel("the runner is shutting down")
        if late:
            await asyncio.wait(late, timeout=30.0)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    def _recover(self) -> list[asyncio.Task[None]]:
        """Adopts the builds an earlier run left to engine pods (followed again, they go on); delivers what a
        crashed runner left in its other outboxes (those builds end as `error`); a new process holds no other
        build, so every other folder under builds/ goes at once."""
        adopted = adoptable_folders(self._builds_dir) if self.options.executor == "kubernetes" else []
        for folder in adopted:  # an engine pod may still carry the build: followed again
            self._adopt(folder)
        for volume in (self.options.data_dir / "volumes").glob("*"):  # a crashed build's cf_export values
            if volume.is_dir() and not held(volume):  # not one an engine pod's build holds
                remove_leftovers(volume)
        if buildah := self.options.executor_options.get("buildah_root"):  # a killed buildah call's auth.json
            shutil.rmtree(Path(buildah) / "calls", ignore_errors=True)
        tasks = []
        for folder in sorted(self._builds_dir.glob("*")):
            if folder in adopted:
                continue
            if (folder / "outbox").is_dir():
                tasks.append(asyncio.create_task(self._recover_one(folder / "outbox")))
            else:
                self._clean_up_after_crash(folder)
                _remove_build_dir(folder)
        return tasks

    def _adopt(self, folder: Path) -> None:
        supervisor = EngineSupervisor(
            folder,
            self.client,
            runner_token=self.identity.token,
            max_chunk=self.identity.max_log_chunk,
            executor_options=self.options.executor_options,
            heartbeat_interval=self.identity.heartbeat_interval,
            volume_reuse=self.options.volume_reuse,
        )
        self._track(folder.name, supervisor)

    async def _recover_one(self, folder: Path) -> None:
        try:
            box = Outbox.reopen(folder, self.client, self.identity.max_log_chunk, runner_token=self.identity.token)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot deliver the outbox in %s (%s); removing it", folder, exc)
            self._clean_up_after_crash(folder.parent)
            _remove_build_dir(folder.parent)
            return
        self._clean_up_after_crash(folder.parent)
        if not box.has_finish:
            box.finish(BuildFinished(status="error", message="the runner restarted while running this build"))
        box.close()
        try:
            async with asyncio.timeout(RECOVERY_DEADLINE):  # not wait_for: on 3.11 it can swallow a cancel
                await box.pump()
            log.info("build %s: delivered what the previous runner process left", box.task.build_id)
        except LeaseLost:  # the lease expired meanwhile: the rest goes in late, as a running build's would
            await self._hand_in_late(box)
        except (OutpostError, TimeoutError) as exc:
            log.info("build %s: left over from a previous run, given up (%s)", box.task.build_id, exc)
        _remove_build_dir(folder.parent)

    async def _hand_in_late(self, box: Outbox) -> None:
        try:
            async with asyncio.timeout(RECOVERY_DEADLINE):
                taken = await box.deliver_late()
        except (OutpostError, TimeoutError) as exc:
            log.info(
                "build %s: left over from a previous run; the rest of its log was not taken (%s)",
                box.task.build_id,
                exc,
            )
            return
        log.info("build %s: handed in %d log bytes the previous runner process left, late", box.task.build_id, taken)

    def _clean_up_after_crash(self, build_dir: Path) -> None:
        """Ends what a crashed runner process left running for that build (its steps' processes, containers)."""
        if build_dir.is_dir():
            with contextlib.suppress(OutpostError, OSError):
                executor_class(self.options.executor).after_crash(
                    build_dir / "volume", build_dir / "scratch", build_dir.name, self.options.executor_options
                )


def _fill_spares(folder: Path, count: int) -> None:
    try:
        spares.fill(folder, count)
    except OSError as exc:  # a full disk, say: builds then make their own folders, as they always could
        log.warning("cannot make spare build folders in %s: %s", folder, exc)


def _remove_build_dir(folder: Path) -> None:
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
    else:
        folder.unlink(missing_ok=True)

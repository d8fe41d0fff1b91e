"""Dispatch: the runners' waiting polls, the wake-ups that end them, and the lease reaper.

One dispatcher per control-plane process (`Wakeups`) holds the waiting polls in memory, by runtime,
in the order they began to wait. An idle poll runs no database query: it sleeps until the dispatcher
wakes it, its wait ends, or its runner hangs up. When work appears (a build queued or requeued, a
trigger's concurrency slot freed, a git query) the dispatcher wakes exactly one waiter of that
runtime — O(1) whatever the number of idle runners — and that poll runs one claim. Work addressed to
one runner (a cancel, an approval's answer, a revocation) wakes that runner's poll only. A signal
that finds no idle waiter is remembered for the runtime, so the next poll to go idle looks again
first: work committed while every poll was busy looking is not missed. A poll that claims all it
asked for and sees more claimable work passes the wake-up on.

A look that found nothing claimable in a runtime (no build, no git query) makes the runtime quiet: the
look a renewed poll begins with then skips those queries, as nothing can have appeared without a signal
(which ends the quiet). The quiet is trusted only if no signal came while that look ran, and for at most
QUIET_TRUST seconds (a safety net for work that appears without a signal); `catch_up` ends every quiet. Git
queries have a quiet of their own: a look that found none skips the git-query query in the looks after it until
a git query is signalled for the runtime, so the claim a queued build wakes a poll for runs without it.

Every source of work signals the dispatcher after its commit, so no poll needs to re-check the store
on a timer. Several processes (replicas) on one PostgreSQL hear each other's signals: what a caller
signals is also handed to `share`, which `server/replicas.py` sends to the other replicas with NOTIFY,
and what they send arrives through `deliver` and wakes this process's polls as a local signal would.

Log followers and git-query askers wait on keys ("build:ID", "gitquery:ID") with tickets taken
*before* they look at the store, so a notification between the look and the wait is not missed.

The reaper is the only one that ends a lease for lack of heartbeats, and it judges that on the
control plane's own liveness (`Availability`): a stall of this process or of its database is never
read as the runners' fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outpost.errors import Unavailable
from outpost.server.models import Build
from outpost.server.passes import Passes
from outpost.server.store import builds as store
from outpost.wire import FINAL_BUILD_STATUSES

log = logging.getLogger("outpost.dispatch")


@dataclass(eq=False)
class Waiter:
    """One runner's poll while it is held: woken through its event."""

    runner_id: str
    runtime_id: str
    builds: bool  # it may claim builds (the runner has a free slot)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    woken_for: str = ""  # "build" or "query" when the dispatcher picked it for the runtime's work
    superseded: bool = False  # its runner opened newer polls: answer 204 now
    expired: bool = False  # its wait is over (`Wakeups.sleep`): answer 204 now
    gone: asyncio.Future[None] | None = None  # its runner's hang-up, while it sleeps
    # Set by `Wakeups.take`: a build request claims a build for this poll in its own transaction, and gives the
    # task here once that committed (None if it claimed none). The poll awaits it before anything else.
    handed: asyncio.Future[Any] | None = None

    def expire(self) -> None:
        self.expired = True
        self.event.set()


class Wakeups:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self.closing = False
        self.polls = 0  # held right now
        self.observers: list[Callable[[Build], None]] = []  # told of every committed build change (metrics)
        # Idle waiters by runtime, oldest first: those that may claim builds, and those that may not.
        self._idle: dict[str, OrderedDict[Waiter, None]] = {}
        self._idle_busy: dict[str, OrderedDict[Waiter, None]] = {}
        self._runners: dict[str, dict[Waiter, None]] = {}  # each runner's held polls, oldest first
        # Runtimes whose work was signalled while none of their polls was idle.
        self._missed_builds: set[str] = set()
        self._missed_queries: set[str] = set()
        self._missed_runners: set[str] = set()  # runners told something while none of their polls was held
        # Signals of work (builds, git queries) are numbered; each runtime's last one, and since when (monotonic)
        # a runtime has been quiet (a look found nothing claimable).
        self._signals = 0
        self._last_signal: dict[str, int] = {}
        self._quiet: dict[str, float] = {}
        # The same for git queries alone: each runtime's last git-query signal, and since when a look found none.
        self._last_query: dict[str, int] = {}
        self._no_queries: dict[str, float] = {}
        # The other replicas' ear (server/replicas.py, on PostgreSQL): each signal a caller gives, as one line.
        self.share: Callable[[str], None] | None = None
        # What looks proved of runner tokens (server/passes.py): a signal for a runner ends its pass.
        self.passes = Passes()

    def close(self) -> None:
        """The server is stopping: every waiter returns now, and long polls stop waiting."""
        self.closing = True
        for event in self._events.values():
            event.set()
        self._events.clear()
        for waiters in self._runners.values():
            for waiter in waiters:
                waiter.event.set()
        self._idle.clear()
        self._idle_busy.clear()

    # --- runners' polls ---

    @property
    def idle_polls(self) -> int:
        """Polls waiting for a wake-up right now (not looking at the store)."""
        return sum(len(q) for q in self._idle.values()) + sum(len(q) for q in self._idle_busy.values())

    def waiting_for_builds(self, runtime_id: str) -> bool:
        """Whether a poll of the runtime that may claim builds (a free slot, its runner not drained) waits in this
        process right now: its runner is online without asking the store."""
        return bool(self._idle.get(runtime_id))

    def admit(self, max_polls: int) -> None:
        """503 with Retry-After once this process holds `max_polls` polls: overload degrades, runners back off."""
        if self.polls >= max_polls:
            raise Unavailable(
                f"this control plane holds {self.polls} polls, its maximum; try again later",
                retry_after=RETRY_AFTER,
                error="too_many_polls",
            )

    def enter(self, runner_id: str, runtime_id: str, *, builds: bool, max_polls: int) -> Waiter:
        self.admit(max_polls)
        # A runner needs only its newest poll (an older one is one it gave up, whose hang-up may not have
        # reached us yet); past a few, the oldest is answered at once, so one runner token can never fill the
        # process and lock every other runner out of new work.
        # Those already told to go may not have left yet (polls that need no look arrive back to back): they
        # neither count nor are told again.
        live = [w for w in self._runners.get(runner_id, {}) if not w.superseded]
        if len(live) >= POLLS_PER_RUNNER:
            oldest = live[0]
            oldest.superseded = True
            oldest.event.set()
        waiter = Waiter(runner_id, runtime_id, builds)
        if runner_id in self._missed_runners:  # the poll's look may have come before it: look again
            self._missed_runners.discard(runner_id)
            waiter.event.set()
        self._runners.setdefault(runner_id, {})[waiter] = None
        self.polls += 1
        return waiter

    def leave(self, waiter: Waiter) -> None:
        """The poll is answered. A wake-up it got and did not use (it was woken as it answered something else,
        its wait ended, its runner hung up) goes to the next waiter; a build request that took it (`take`) finds it
        gone when it hands its task over, and gives the build back."""
        self._unidle(waiter)
        if waiter.handed is not None:
            waiter.handed.cancel()
        # Local: the other replicas had this signal too, each for its own polls.
        if waiter.woken_for == "build":
            self._work_here(waiter.runtime_id, 1)
        elif waiter.woken_for == "query":
            self._query_here(waiter.runtime_id)
        waiter.woken_for = ""
        mine = self._runners.get(waiter.runner_id)
        if mine is not None:
            mine.pop(waiter, None)
            if not mine:
                del self._runners[waiter.runner_id]
        self.polls -= 1

    def idle(self, waiter: Waiter) -> bool:
        """Queues the waiter for the runtime's next work. False when it should look at the store again at
        once instead: it was woken while it looked, or work was signalled while no poll was idle."""
        rt = waiter.runtime_id
        if waiter.event.is_set() or self.closing:
            return False
        if waiter.builds and rt in self._missed_builds:
            self._missed_builds.discard(rt)
            waiter.woken_for = "build"
            return False
        if rt in self._missed_queries:
            self._missed_queries.discard(rt)
            waiter.woken_for = "query"
            return False
        waiter.woken_for = ""
        (self._idle if waiter.builds else self._idle_busy).setdefault(rt, OrderedDict())[waiter] = None
        return True

    async def sleep(self, waiter: Waiter, seconds: float, *, unless: asyncio.Future[None] | None = None) -> None:
        """Until the waiter is woken, the seconds run out (then `waiter.expired`), or `unless` (its runner hanging
        up) is done. The poll's own task awaits its own event, which each of the three sets: a wake-up resumes it
        in the loop's next turn (`wait` would pass it through a task of its own and `asyncio.wait`, two turns more,
        in which other work runs first), and the end of a wait is a timer's callback, not a cancellation (most
        held polls end that way; `asyncio.timeout` cost ~35 µs each, a quarter of an idle poll's CPU)."""
        if unless is not None and unless.done():
            self._unidle(waiter)
            return
        timer = asyncio.get_running_loop().call_later(seconds, waiter.expire)
        hung_up = _setter(waiter.event)  # the event is the poll's own: its loop tells a hang-up from a wake-up
        if unless is not None:
            unless.add_done_callback(hung_up)
        waiter.gone = unless
        try:
            await waiter.event.wait()
        finally:
            waiter.gone = None
            timer.cancel()
            if unless is not None:
                unless.remove_done_callback(hung_up)
            self._unidle(waiter)

    def _unidle(self, waiter: Waiter) -> None:
        for queues in (self._idle, self._idle_busy):
            queue = queues.get(waiter.runtime_id)
            if queue is not None and waiter in queue:
                del queue[waiter]
                if not queue:
                    del queues[waiter.runtime_id]

    def take(self, runtime_id: str) -> Waiter | None:
        """The oldest idle poll of the runtime that may claim builds, out of the queue for a build request to claim a
        build for in the request's own transaction (one commit instead of the request's, a wake-up and the poll's
        own claim): no other wake-up reaches it meanwhile, and it waits for `hand` or `put_back` whatever else
        happens. A poll already woken (its runner hung up, its wait ended, a signal for its runner) is left to
        itself. Only in this process: another replica's polls are woken by the request's signal, as ever."""
        queue = self._idle.get(runtime_id)
        if queue is None:
            return None
        for waiter in queue:
            if waiter.event.is_set() or (waiter.gone is not None and waiter.gone.done()):
                continue  # about to leave the queue by itself
            del queue[waiter]  # the loop ends here
            if not queue:
                del self._idle[runtime_id]
            waiter.handed = asyncio.get_running_loop().create_future()
            return waiter
        return None

    def hand(self, waiter: Waiter, task: Any) -> bool:
        """After the request's commit: the task claimed for the waiter `take` gave. False if the poll can no longer
        answer it (its task was cancelled): the caller gives the build back."""
        handed = waiter.handed
        if handed is None or handed.done():
            return False
        handed.set_result(task)
        waiter.event.set()
        return True

    def put_back(self, waiter: Waiter) -> None:
        """The request claimed nothing for the waiter (or failed): it waits again, first in its runtime's queue as it
        was, unless it was woken meanwhile (then it looks for itself once it has this answer)."""
        handed = waiter.handed
        if handed is None or handed.done():
            return
        handed.set_result(None)
        if not waiter.event.is_set() and not self.closing and waiter.builds:
            queue = self._idle.setdefault(waiter.runtime_id, OrderedDict())
            queue[waiter] = None
            queue.move_to_end(waiter, last=False)

    def _wake_first(self, runtime_id: str, queues: list[dict[str, OrderedDict[Waiter, None]]], why: str) -> bool:
        for idle in queues:
            queue = idle.get(runtime_id)
            if queue:
                waiter, _ = queue.popitem(last=False)
                if not queue:
                    del idle[runtime_id]
                waiter.woken_for = why
                waiter.event.set()
                return True
        return False

    def work(self, runtime_id: str, count: int = 1) -> None:
        """`count` builds of the runtime became claimable: one idle poll that may claim is woken for each
        (here, and in every other replica)."""
        self._work_here(runtime_id, count)
        self._share(f"{WORK} {runtime_id} {count}")

    def git_query(self, runtime_id: str) -> None:
        """A git query for the runtime: any one idle poll takes it (it needs no build slot)."""
        self._query_here(runtime_id)
        self._share(f"{QUERY} {runtime_id}")

    def runner(self, runner_id: str) -> None:
        """Something for one runner (a cancel, an approval's answer, its revocation): its polls look again,
        in whichever replica holds them."""
        self._runner_here(runner_id)
        self._share(f"{RUNNER} {runner_id}")

    def _share(self, line: str) -> None:
        if self.share is not None:
            self.share(line)

    def deliver(self, line: str) -> None:
        """A signal another replica gave (one line of `share`): acted on as if it were given here."""
        kind, _, rest = line.partition(" ")
        if kind == WORK:
            runtime_id, _, count = rest.partition(" ")
            self._work_here(runtime_id, int(count) if count.isdigit() else 1)
        elif kind == QUERY:
            self._query_here(rest)
        elif kind == RUNNER:
            self._runner_here(rest)
        elif kind == KEY:
            self._key_here(rest)

    def catch_up(self) -> None:
        """Signals from other replicas may have been lost (the link to the database was down): every held
        poll and every follower looks at the store once more, and every runner's next call is checked there."""
        self._quiet.clear()
        self._no_queries.clear()
        self.passes.clear()
        for idle in (self._idle, self._idle_busy):
            for queue in idle.values():
                for waiter in queue:
                    waiter.woken_for = "build" if waiter.builds else "query"
                    waiter.event.set()
            idle.clear()
        self._missed_runners.clear()
        for waiters in self._runners.values():
            for waiter in waiters:
                waiter.event.set()
        for event in self._events.values():
            event.set()
        self._events.clear()

    # --- what a look may skip ---

    def mark(self) -> int:
        """Taken before a look's transaction begins: what `quiet` compares with once the look found nothing."""
        return self._signals

    def quiet(self, runtime_id: str, mark: int) -> None:
        """A look begun at `mark` found nothing claimable in the runtime: unless work was signalled for it since
        (the look's snapshot may predate that work), the next looks skip the claim and git-query queries."""
        if self._last_signal.get(runtime_id, 0) <= mark:
            self._quiet[runtime_id] = time.monotonic()

    def is_quiet(self, runtime_id: str) -> bool:
        """Whether the runtime has nothing claimable, as far as the signals since its last empty look tell."""
        return _still_trusted(self._quiet, runtime_id)

    def no_queries(self, runtime_id: str, mark: int) -> None:
        """A look begun at `mark` found no git query for the runtime: unless one was signalled for it since, the
        next looks skip the git-query query (a build's claim then runs without it)."""
        if self._last_query.get(runtime_id, 0) <= mark:
            self._no_queries[runtime_id] = time.monotonic()

    def queries_quiet(self, runtime_id: str) -> bool:
        """Whether no git query waits in the runtime, as far as the signals since the last look that found none
        tell (for at most QUIET_TRUST seconds, as `is_quiet`)."""
        return self.is_quiet(runtime_id) or _still_trusted(self._no_queries, runtime_id)

    def _signalled(self, runtime_id: str) -> None:
        self._signals += 1
        self._last_signal[runtime_id] = self._signals
        self._quiet.pop(runtime_id, None)

    def _work_here(self, runtime_id: str, count: int) -> None:
        self._signalled(runtime_id)
        for _ in range(count):
            if not self._wake_first(runtime_id, [self._idle], "build"):
                self._missed_builds.add(runtime_id)
                return

    def _query_here(self, runtime_id: str) -> None:
        self._signalled(runtime_id)
        self._last_query[runtime_id] = self._signals
        self._no_queries.pop(runtime_id, None)
        if not self._wake_first(runtime_id, [self._idle_busy, self._idle], "query"):
            self._missed_queries.add(runtime_id)

    def _runner_here(self, runner_id: str) -> None:
        self.passes.forget(runner_id)  # first: whatever changed for the runner, its next poll reads it from the store
        waiters = self._runners.get(runner_id)
        if not waiters:
            self._missed_runners.add(runner_id)
            return
        for waiter in waiters:
            self._unidle(waiter)
            waiter.event.set()

    def build_changed(self, build: Build) -> None:
        """After a commit that changed a build: wake its followers, and the poll the change concerns."""
        for observe in self.observers:
            observe(build)
        self.notify(build_key(build.id))
        if build.status == "queued":
            self.work(build.runtime_id)
        elif build.status in FINAL_BUILD_STATUSES:
            if build.trigger_id is not None:  # a concurrency slot of its trigger may have freed up
                self.work(build.runtime_id)
        elif build.runner_id is not None:  # claimed or running: a cancel or an approval for its runner
            self.runner(build.runner_id)

    # --- keys: log followers, git-query askers ---

    def ticket(self, key: str) -> asyncio.Event:
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event

    def notify(self, key: str) -> None:
        if key.startswith(RUNTIME_PREFIX):  # "work in this runtime": one build queued
            self.work(key.removeprefix(RUNTIME_PREFIX))
            return
        self._key_here(key)
        self._share(f"{KEY} {key}")

    def _key_here(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    @staticmethod
    async def wait(ticket: asyncio.Event, seconds: float, *, unless: asyncio.Future[None] | None = None) -> None:
        """Until the ticket is woken, the seconds run out, or `unless` (the client hanging up) is done."""
        if ticket.is_set():
            return
        woken = asyncio.ensure_future(ticket.wait())
        waits: set[asyncio.Future[Any]] = {woken} if unless is None else {woken, unless}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()


def _setter(event: asyncio.Event) -> Callable[[asyncio.Future[None]], None]:
    return lambda _future: event.set()


@contextlib.asynccontextmanager
async def hang_up(receive: Any) -> AsyncIterator[asyncio.Future[None]]:
    """A future done when the client of the current request disconnects (for long polls).

    `receive` is the request's ASGI receive; call this only once the body has been read.
    """

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher: asyncio.Future[None] = asyncio.ensure_future(watch())
    try:
        yield watcher
    finally:
        watcher.cancel()


RUNTIME_PREFIX = "runtime:"
# The kinds of line `share` gives and `deliver` takes: "w RUNTIME COUNT", "q RUNTIME", "r RUNNER", "k KEY".
WORK, QUERY, RUNNER, KEY = "w", "q", "r", "k"
RETRY_AFTER = 5  # seconds a refused poll is told to wait (runners add jitter)
POLLS_PER_RUNNER = 4  # polls one runner may hold at once in this process; a newer one ends the oldest
QUIET_TRUST = 5.0  # seconds an empty look vouches for its runtime (renewed polls skip their claim meanwhile)


def _still_trusted(looks: dict[str, float], runtime_id: str) -> bool:
    """Whether the runtime's last empty look (when, monotonic) is at most QUIET_TRUST seconds old; an older one
    is forgotten."""
    since = looks.get(runtime_id)
    if since is None:
        return False
    if time.monotonic() - since > QUIET_TRUST:
        del looks[runtime_id]
        return False
    return True


def runtime_key(runtime_id: str) -> str:
    """`notify(runtime_key(id))`: one build of the runtime became claimable (see `Wakeups.work`)."""
    return f"{RUNTIME_PREFIX}{runtime_id}"


def build_key(build_id: str) -> str:
    return f"build:{build_id}"


@dataclass(frozen=True)
class Tick:
    """When the reaper started a round, on both clocks."""

    monotonic: float
    wall: float


class Availability:
    """Since when this control-plane process has been able to hear its runners without a break.

    A break is anything that kept a heartbeat from being heard or answered: the process stopped
    (SIGSTOP, a VM paused) or starved, its wall clock jumping, the database holding up a transaction
    (a lock, a slow disk). Each break starts a new stretch; the reaper ends a lease only once the
    current stretch is a whole lease TTL long, so every runner had a full TTL of a responsive control
    plane to renew its lease. A restart is a break too: the stretch starts with the process.
    """

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance  # seconds of delay that count as a break
        self.since = time.monotonic()
        self._calls: dict[int, float] = {}  # runners' lease calls in progress, by when they began
        self._ids = itertools.count()

    def served_for(self) -> float:
        return time.monotonic() - self.since

    def broken(self, why: str) -> None:
        self.since = time.monotonic()
        log.warning("the control plane was not serving (%s): every lease gets a full TTL from now", why)

    def inherit(self, began: float) -> None:
        """Continues a stretch another replica served without a break since `began` (wall clock) if it began
        earlier: it handed the jobs over cleanly, so the installation was served all along."""
        self.since = min(self.since, time.monotonic() - max(0.0, time.time() - began))

    def restart(self, why: str) -> None:
        """A new stretch that is no fault of this process (it took over the lease reaper from a replica
        that died, whose runners may not have been heard)."""
        self.since = time.monotonic()
        log.info("%s: every lease gets a full TTL from now", why)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Around a runner's call that renews a lease: one that takes longer than the tolerance
        (waiting for the database, say) is a break."""
        key = next(self._ids)
        began = self._calls[key] = time.monotonic()
        try:
            yield
        finally:
            del self._calls[key]
            took = time.monotonic() - began
            if took > self.tolerance:
                self.broken(f"a runner's call took {took:.1f}s")

    def tick(self) -> Tick:
        return Tick(time.monotonic(), time.time())

    def steady(self, tick: Tick, expected: float) -> bool:
        """Whether the round begun at `tick`, expected to take `expected` seconds so far, ran without
        a break; if not, a new stretch starts now."""
        took = time.monotonic() - tick.monotonic
        if took > expected + self.tolerance:
            self.broken(f"the reaper's round took {took:.1f}s instead of {expected:.1f}s")
            return False
        if abs((time.time() - tick.wall) - took) > self.tolerance:
            self.broken("the wall clock jumped")
            return False
        now = time.monotonic()
        stuck = [began for began in self._calls.values() if now - began > self.tolerance]
        if stuck:
            self.broken(f"{len(stuck)} runner call(s) waiting for more than {self.tolerance:.1f}s")
            return False
        return True


class _Stalled(Exception):
    """The reaper's transaction was held up: what it saw may be stale, so it is rolled back."""


async def reap_leases(
    sessions: async_sessionmaker[AsyncSession],
    wakeups: Wakeups,
    availability: Availability,
    *,
    interval: float,
    lease_ttl: float,
    max_requeues: int,
    leads: Callable[[], bool] = lambda: True,
) -> None:
    """Forever: end leases past their expiry, requeue or fail their builds, wake whoever waits on them
    — but only after a whole lease TTL of uninterrupted service (`Availability`), and only in the replica
    that `leads` the background jobs (every replica keeps its own count of availability, so the one that
    takes over judges by its own)."""
    while True:
        tick = availability.tick()
        await asyncio.sleep(interval)
        if not availability.steady(tick, interval) or availability.served_for() < lease_ttl or not leads():
            continue
        changed: list[Build] = []
        try:
            async with sessions.begin() as session:
                changed = await store.expire_leases(session, max_requeues)
                if changed and not availability.steady(tick, interval):
                    raise _Stalled
        except _Stalled:
            continue
        except Exception:  # a database hiccup must not end the reaper
            log.exception("lease reaper failed; retrying")
            changed = []
        availability.steady(tick, interval)  # a round held up by the database is a break, whatever it did
        for build in changed:
            log.info("lease of build %s expired: %s", build.id, build.status)
            wakeups.build_changed(build)

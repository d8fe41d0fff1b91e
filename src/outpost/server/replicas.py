"""Several control-plane processes (replicas) on one PostgreSQL: their wake-ups and who runs the jobs.

Each replica keeps one connection of its own to PostgreSQL (`ReplicaLink`), outside the pool, and uses it
for two things:

- Wake-ups: what this replica's dispatcher signals (`Wakeups.share`) is sent, after the commit that
  caused it, as `NOTIFY outpost_wakeups` with one line per signal; the other replicas LISTEN and hand
  each line to their own dispatcher (`Wakeups.deliver`), so a build queued through replica A is
  claimed at once by a runner whose poll replica B holds. Signals given while the link is down are
  kept and sent once it is back; after a reconnect every poll held here looks at the store once,
  since what others sent meanwhile is lost.
- The background jobs (the lease reaper, cron): the replica that holds a session advisory lock on
  its link leads them. PostgreSQL drops the lock with the connection, so when the leader dies (or its
  link does) another replica takes the lock within `LEAD_RETRY` seconds. A leader that stops cleanly
  says so first (`HANDOVER`, with since when it served without a break): the next one continues the
  longer of that stretch and its own (`Availability.inherit`), so a rolling restart refreshes no lease;
  after a leader died, the next one starts its count afresh (`Availability.restart`), as the runners
  that talked to the dead one may not have been able to renew their leases.

SQLite has one process and no link: it leads, and its signals stay in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

from outpost.server.dispatch import Availability, Wakeups

log = logging.getLogger("outpost.replicas")

CHANNEL = "outpost_wakeups"
JOBS_LOCK = 0x6F75_7470_0001  # the advisory lock whose holder runs the background jobs
HANDOVER = "h"  # "h SINCE": the leader stops cleanly, and served without a break since SINCE (wall clock)
MAX_PAYLOAD = 7000  # bytes of one NOTIFY (PostgreSQL's limit is 8000)
LEAD_RETRY = 1.0  # seconds between a follower's tries at the jobs' lock (and the leader's check of its link)
RECONNECT = (0.2, 5.0)  # seconds before reconnecting: the first wait, the longest
CALL_TIMEOUT = 10.0  # seconds any call on the link may take before the link counts as broken
MAX_OUTBOX = 10_000  # signals kept unsent before they are merged
HANDOVER_FRESH = 10.0  # seconds a handover announcement stays good for the replica that takes over


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (`postgresql+asyncpg://…`) as a DSN that asyncpg itself takes."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class ReplicaLink:
    """This replica's own connection: NOTIFY what its dispatcher signals, LISTEN for the others', and hold
    the background jobs' lock while it leads. `run()` keeps it up until cancelled."""

    def __init__(self, dsn: str, wakeups: Wakeups, availability: Availability) -> None:
        self.dsn = dsn
        self.wakeups = wakeups
        self.availability = availability
        self.leader = False
        self.on_lead: list[Callable[[], None]] = []  # called each time this replica starts to lead
        self.connected = asyncio.Event()
        self._outbox: list[str] = []
        self._kick = asyncio.Event()
        self._conn: Any = None
        self._pid = 0
        self._handover: tuple[float, float] | None = None  # a leader's last clean stop: when (monotonic), since
        wakeups.share = self.share

    def share(self, line: str) -> None:
        self._outbox.append(line)
        if len(self._outbox) > MAX_OUTBOX:  # the link is down for long: keep one line per distinct signal
            self._outbox = _coalesce(self._outbox)
        self._kick.set()

    async def run(self) -> None:
        import asyncpg

        wait, first = RECONNECT[0], True
        while True:
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    self._conn = await asyncpg.connect(self.dsn)
                self._pid = self._conn.get_server_pid()
                lost = asyncio.Event()
                self._conn.add_termination_listener(_setter(lost))
                await self._conn.add_listener(CHANNEL, self._heard)
                if not first:
                    log.info("the link to the other replicas is back: every held poll looks again")
                    self.wakeups.catch_up()
                first, wait = False, RECONNECT[0]
                self.connected.set()
                await self._serve(lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away or refused: try again, a little later each time
                log.warning("the link to the other replicas is down (%s); reconnecting in %.1fs", exc, wait)
            self._drop()
            await asyncio.sleep(wait)
            wait = min(wait * 2, RECONNECT[1])

    async def _serve(self, lost: asyncio.Event) -> None:
        """Until the connection is lost: send what was signalled, and try for (or check) the lead."""
        next_lead = 0.0
        while not lost.is_set():
            if self._outbox:
                await self._send()
            now = time.monotonic()
            if now >= next_lead:
                await self._lead()
                next_lead = now + LEAD_RETRY
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_lead - time.monotonic())):
                    waits = [asyncio.ensure_future(self._kick.wait()), asyncio.ensure_future(lost.wait())]
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waits:
                            w.cancel()
        raise ConnectionError("the connection was closed")

    async def _send(self) -> None:
        lines, self._outbox = _coalesce(self._outbox), []
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await self._conn.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL, _payloads(lines)
                )
        except BaseException:
            self._outbox[:0] = lines  # sent again once the link is back
            raise

    async def _lead(self) -> None:
        async with asyncio.timeout(CALL_TIMEOUT):
            if self.leader:
                await self._conn.fetchval("SELECT 1")  # a leader whose link is dead must stop leading soon
                return
            if not await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", JOBS_LOCK):
                return
        if self._handover is not None and time.monotonic() - self._handover[0] < HANDOVER_FRESH:
            self.availability.inherit(self._handover[1])  # a clean handover: the installation was served all along
        else:
            self.availability.restart("this replica took over the background jobs")
        self._handover = None
        log.info("this replica now runs the background jobs (lease reaper, cron)")
        self.leader = True
        for callback in self.on_lead:
            callback()

    def _heard(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        if pid == self._pid:
            return  # our own NOTIFY: this replica's dispatcher acted on it already
        for line in payload.split("\n"):
            kind, _, since = line.partition(" ")
            if kind == HANDOVER:
                with contextlib.suppress(ValueError):
                    self._handover = (time.monotonic(), float(since))
            elif line:
                self.wakeups.deliver(line)

    def _drop(self) -> None:
        if self.leader:
            log.warning("the link to the database broke: this replica no longer runs the background jobs")
        self.leader = False
        self.connected.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        """A clean stop: what is still to send goes out, a leader hands over, the connection closes."""
        conn = self._conn
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    if self.leader:
                        self._outbox.append(f"{HANDOVER} {time.time() - self.availability.served_for():.3f}")
                    if self._outbox:
                        await self._send()
                    if self.leader:
                        await conn.execute("SELECT pg_advisory_unlock_all()")
        self.leader = False
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await conn.close()
        self._conn = None


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()


def _coalesce(lines: list[str]) -> list[str]:
    """One line per distinct signal; builds queued in one runtime add up ("w RT 3")."""
    counts: dict[str, int] = {}
    out: dict[str, None] = {}
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "w":
            runtime_id, _, count = rest.partition(" ")
            counts[runtime_id] = counts.get(runtime_id, 0) + (int(count) if count.isdigit() else 1)
        else:
            out[line] = None
    return [f"w {rt} {n}" for rt, n in counts.items()] + list(out)


def _payloads(lines: list[str]) -> list[str]:
    """Lines joined into NOTIFY payloads under PostgreSQL's size limit."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > MAX_PAYLOAD:
            payloads.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        payloads.append("\n".join(current))
    return payloads

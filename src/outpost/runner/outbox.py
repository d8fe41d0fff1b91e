"""The on-disk outbox of one build: what the control plane has not yet accepted, kept until it has.

Log bytes are appended to one file per stream, state changes to a journal; both go out in reports
(runner protocol v1), logs from the last accepted offset, state changes in order and only together
with every log byte written before them, so a step's final state (and the build's) never arrives
ahead of its log. The build's `started` is the journal's first entry and rides the first report (the control
plane applies it first): no exchange of its own, and nothing waits for it. The files survive a crash of the
runner process: a restarted runner reopens them (`Outbox.reopen`) and delivers what is left.

No secret rests here in clear: the task's secrets, credentials and job token live in memory only. What a
restarted runner needs to deliver the rest is the lease and its job token, which is kept sealed under a key
derived from the runner token (docs/protocol.md says why that key, and what it protects against).

Layout of the folder:
    lease.json        build id, lease id and the job token sealed (mode 0600)
    logs/<hex>.log    each stream's bytes, <hex> = the stream name in hexadecimal
    acked.json        bytes of each stream the control plane holds (may lag: resends are no-ops)
    events.jsonl      state changes, one JSON object a line
    events.acked      how many of them the control plane has accepted

    blank/<n>         empty files a new stream's log is renamed from (a spare's: runner/spares.py), if any

`acked.json` and `events.acked` are tallies: each save appends a line, and the last whole line counts (`_Tally`).
Appending writes into a file that is there; the write-and-rename it replaces made a new file each time, and on a
disk without a journal (this project's CI machines) the kernel's search for a free inode, past the ones freed in
the last seconds, cost more CPU than anything else the runner did for a trivial build (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outpost.runner import sealing
from outpost.runner.client import Backoff, OffsetGap, ProtocolClient, Refused, TooLarge, Unreachable, retrying
from outpost.wire import SYSTEM_STREAM, BuildFinished, BuildStarted, RunBuildTask, StepUpdate

log = logging.getLogger("outpost.runner.outbox")
MAX_EVENTS = 200  # state changes in one report
# Seconds a report waits for more to carry. Each report costs both sides an HTTP exchange and a transaction
# (~2 ms of runner CPU, more on the control plane); a build of 20 `true` steps sent 11 without it, 4-5 with it.
LINGER = 0.01
# Reports of one build in flight at once, when the control plane takes as many (docs/protocol.md): two keep both
# sides busy, the runner reading and sending the next chunk while the control plane stores the last.
MAX_IN_FLIGHT = 2
LEASE_FILE = "lease.json"
# Empty files made ahead in a spare's outbox: a new stream's log is one of them renamed, not a file made on the
# step's path (a new file costs the kernel ~0.2-0.7 ms of CPU on this project's disks; a rename ~0.03 ms).
BLANK_DIR = "blank"
BLANKS = 4
ACKED_FILE = "acked.json"
EVENTS_ACKED_FILE = "events.acked"
# The files every build writes, made empty ahead (`prepare`) and emptied for the next build (runner/spares.py):
# name in the outbox folder, mode.
SKELETON = (
    (LEASE_FILE, 0o600),
    ("events.jsonl", 0o666),
    (f"logs/{SYSTEM_STREAM.encode().hex()}.log", 0o666),
    (ACKED_FILE, 0o666),
    (EVENTS_ACKED_FILE, 0o666),
)
# Bytes a tally grows to before it is written anew with its last line only (a build of hours saves ~4 lines a second).
TALLY_MAX = 64 * 1024
# Seconds between two writes of acked.json while reports keep coming: it may lag (resending what the control plane
# holds is harmless), and each write and rename cost ~1.5 ms, as much as a report's own share of the runner's CPU.
ACKED_EVERY = 0.25

# The smallest report a 413 without a `max_bytes` halves the chunk down to; below it the report is dropped.
MIN_CHUNK = 1024


class Outbox:
    def __init__(self, folder: Path, task: RunBuildTask, client: ProtocolClient, max_chunk: int) -> None:
        self.folder = folder
        self.task = task
        self.client = client
        self.max_chunk = min(max_chunk, client.max_report_bytes or max_chunk)
        self._logs = folder / "logs"
        self._sizes: dict[str, int] = {}
        self._acked: dict[str, int] = {}
        self._acked_saved = 0.0  # when acked.json was last written (monotonic)
        self._acked_text = "{}"  # what it holds
        # The stream whose file is open for appends, its fd, and what closes it (at the latest with the outbox).
        self._appending: tuple[str, int, weakref.finalize[[int], Outbox]] | None = None
        self._events: list[dict[str, Any]] = []
        self._events_acked = 0
        self._blanks: list[str] | None = None  # names left in blank/ (listed at the first new stream)
        self._acked_tally = _Tally(folder / ACKED_FILE)
        self._events_tally = _Tally(folder / EVENTS_ACKED_FILE)
        self._dirty = asyncio.Event()
        self._urgent = asyncio.Event()  # ends a linger: the build is over, or a full chunk waits
        self._grew = asyncio.Event()  # set by every log write: _flush may start another report
        self._closing = False
        self._gone = False  # let go (`let_go`): no more writes
        self.renewed_at: float | None = None  # when the last accepted report was sent (monotonic): it renewed the lease
        self.pipeline_file: tuple[str, str] | None = None  # YAML read from the repository, and its commit SHA

    # --- creating and reopening ---

    @classmethod
    def create(
        cls,
        folder: Path,
        task: RunBuildTask,
        client: ProtocolClient,
        max_chunk: int,
        *,
        runner_token: str = "",
        lease: bool = True,
    ) -> Outbox:
        """`runner_token` seals the job token for a restarted runner; without it, what a crash leaves is not
        delivered (the control plane then ends the build as "runner lost"). `lease=False`: the lease file is
        already there (an engine pod's outbox, whose runner wrote it: the engine pod never holds the runner token)."""
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        if lease:
            write_lease(folder, task, runner_token, made=True)
        return cls(folder, task, client, max_chunk)

    @staticmethod
    def prepare(folder: Path) -> None:
        """The outbox's folder and the files every build writes, empty (runner/spares.py: made ahead of a build).
        Writing into a file that is there is cheaper than creating it: on an idle runner's disk creating the lease
        file took ~0.8 ms, writing into an empty one ~0.2 ms. An empty lease file is no lease (`read_lease`)."""
        (folder / "logs").mkdir(parents=True)
        (folder / BLANK_DIR).mkdir()
        files = (*((f"{BLANK_DIR}/{n}", 0o666) for n in range(BLANKS)), *SKELETON)
        for name, mode in files:
            os.close(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))

    @classmethod
    def reopen(cls, folder: Path, client: ProtocolClient, max_chunk: int, *, runner_token: str) -> Outbox:
        """What a crashed runner process left. ValueError if it cannot be delivered (see `read_lease`)."""
        box = cls(folder, read_lease(folder, runner_token), client, max_chunk)
        for path in box._logs.glob("*.log"):
            box._sizes[bytes.fromhex(path.stem).decode()] = path.stat().st_size
        acked = _Tally(folder / ACKED_FILE).last()
        if isinstance(acked, dict):
            box._acked = {str(k): int(v) for k, v in acked.items()}
        if (folder / "events.jsonl").exists():
            lines = (folder / "events.jsonl").read_text().splitlines()
            box._events = [json.loads(line) for line in lines if line.strip().endswith("}")]
        events_acked = _Tally(folder / EVENTS_ACKED_FILE).last()
        if isinstance(events_acked, int):
            box._events_acked = events_acked
        return box  # whatever was started or not, what is left is delivered now (`started` first, if it was not)

    @property
    def has_finish(self) -> bool:
        return any(e["kind"] == "finish" for e in self._events)

    # --- the engine's Reporter ---

    async def started(self, message: BuildStarted) -> None:
        """Queued like any state change, ahead of the steps': it rides the first report. The engine does not wait
        for it: the runner's lease deadline, counted from the claim's poll, already bounds what runs (job.py)."""
        if self.pipeline_file is not None:
            yaml, revision = self.pipeline_file
            message = message.model_copy(update={"yaml": yaml, "yaml_revision": revision})
        self._append_event({"kind": "started", "body": message.model_dump(exclude_none=True)})

    async def step(self, name: str, update: StepUpdate) -> None:
        self._append_event({"kind": "step", "name": name, "body": update.model_dump(exclude_none=True)})

    async def log(self, stream: str, data: bytes) -> None:
        if not data:
            return
        self._write(stream, data)
        self._sizes[stream] = self._sizes.get(stream, 0) + len(data)
        self._dirty.set()
        self._grew.set()
        if not self._urgent.is_set() and self.unsent_bytes >= self.max_chunk:
            self._urgent.set()

    def finish(self, message: BuildFinished) -> None:
        self._append_event({"kind": "finish", "body": message.model_dump(exclude_none=True)})

    # --- sending ---

    async def pump(self) -> None:
        """Sends whatever is pending, as soon as it is; retries with backoff while unreachable.

        Returns once `close()` was called and everything is accepted; raises LeaseLost when the
        control plane refuses our lease.
        """
        backoff = Backoff()
        while True:
            await self._linger()
            self._dirty.clear()
            try:
                await self._flush()
                backoff.reset()
            except Unreachable as exc:
                log.warning("build %s: control plane unreachable (%s); retrying", self.task.build_id, exc)
                await backoff.sleep()
                continue
            if self._closing and self.pending == 0:
                return
            await self._dirty.wait()

    async def _linger(self) -> None:
        """Lets what comes within LINGER seconds ride in the same report: a short step's `running` and its end,
        the next step's start. A full chunk of log or the build's end goes at once."""
        if self._closing or self.unsent_bytes >= self.max_chunk:
            return
        self._urgent.clear()
        with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel (api.PodWatch)
            async with asyncio.timeout(LINGER):
                await self._urgent.wait()

    def close(self) -> None:
        """No more reports will come: `pump` returns once everything is accepted."""
        self._closing = True
        self._dirty.set()
        self._urgent.set()

    def let_go(self) -> None:
        """The build's folder is about to go, or to become a spare (runner/spares.py): the log file held open is
        closed, and nothing is written here any more, so no byte of this build can reach a file a later build takes."""
        self._gone = True
        if self._appending is not None:
            self._appending[2]()
            self._appending = None

    @property
    def pending(self) -> int:
        return self.unsent_bytes + self.unsent_events

    @property
    def unsent_bytes(self) -> int:
        """Log bytes written here and not yet accepted by the control plane."""
        return sum(size - self._acked.get(s, 0) for s, size in self._sizes.items())

    @property
    def unsent_events(self) -> int:
        return len(self._events) - self._events_acked

    async def _flush(self) -> None:
        """Sends reports until every log byte and every state change pending now is accepted.

        State changes ride only in a report that also carries every log byte still unsent, sent when no other
        report is in flight, so they never arrive ahead of the log written before them; `started` is the
        exception, as the control plane applies it before the report's log (it only says which steps there are).
        Log bytes alone may go
        in several reports at once (as many as the control plane takes, MAX_IN_FLIGHT at most), each further one
        only once a full chunk of the streams in flight waits beyond them (see `_next_in_flight`). Answers are
        taken in the order the reports were sent.
        """
        events = self._events[self._events_acked :]
        sent = dict(self._acked)  # bytes of each stream handed to a report: accepted, or in flight
        flying: collections.deque[_Flight] = collections.deque()
        try:
            while True:
                if not flying:
                    logs, complete = self._unsent_logs(sent)
                    first_only = events[:1] if events and events[0]["kind"] == "started" else []
                    batch = events[:MAX_EVENTS] if complete else first_only
                    if not logs and not batch:
                        self._save_acked()
                        return
                    flying.append(self._send(logs, batch, sent))
                window = min(MAX_IN_FLIGHT, self.client.reports_in_flight)
                while len(flying) < window and (more := self._next_in_flight(flying, sent)):
                    flying.append(self._send(more, [], sent))
                if len(flying) < window:  # room for one more: also wake when the log grows by a chunk
                    self._grew.clear()
                    grew = asyncio.ensure_future(self._grew.wait())
                    try:
                        await asyncio.wait((flying[0].task, grew), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        grew.cancel()
                    if not flying[0].task.done():
                        continue
                oldest = flying.popleft()
                try:
                    outcome: dict[str, int] | Refused = await oldest.task
                except TooLarge as exc:  # not dropped: sent again in smaller reports, if it can be
                    if not self._shrink(exc):
                        outcome = exc
                    else:
                        await self._settle(flying)
                        sent = dict(self._acked)
                        continue
                except Refused as exc:
                    outcome = exc
                except OffsetGap as gap:
                    await self._settle(flying)
                    self._acked[gap.stream] = gap.expected  # from there (a resend of what it holds is harmless)
                    sent = dict(self._acked)
                    continue
                except Exception:  # not a cancel: that ends the others at once (below)
                    await self._settle(flying)
                    raise
                self._accepted(oldest, outcome)
                if oldest.batch:
                    events = events[len(oldest.batch) :]
                    self._events_acked += len(oldest.batch)
                    self._events_tally.save(self._events_acked)
        finally:
            for flight in flying:
                flight.task.cancel()

    def _next_in_flight(self, flying: collections.deque[_Flight], sent: dict[str, int]) -> list[tuple[str, int, bytes]]:
        """A full chunk of log bytes to send while `flying` are in flight, or nothing. Only of streams whose bytes
        before it are in flight: the control plane then cannot store it ahead of them (its offsets would leave a
        gap), so a follower sees the build's chunks in the order they were sent, across steps too."""
        streams = {stream for flight in flying for stream, _, _ in flight.logs}
        if _beyond({s: self._sizes[s] for s in streams}, sent) < self.max_chunk:
            return []
        return self._unsent_logs(sent, streams)[0]

    def _send(self, logs: list[tuple[str, int, bytes]], batch: list[dict[str, Any]], sent: dict[str, int]) -> _Flight:
        """Starts one report; `sent` moves past its log bytes."""
        for stream, offset, data in logs:
            sent[stream] = offset + len(data)
        started, steps, finish = _split(batch)
        report = self.client.report(self.task, logs, steps, finish, started)
        return _Flight(logs, batch, time.monotonic(), asyncio.ensure_future(report))

    def _accepted(self, flight: _Flight, sizes: dict[str, int] | Refused) -> None:
        """Keeps what the control plane now holds. A report it refused (4xx) is dropped, as if accepted."""
        if isinstance(sizes, Refused):
            log.error("build %s: report refused, dropped: %s", self.task.build_id, sizes)
            sizes = {stream: offset + len(data) for stream, offset, data in flight.logs}
        else:  # it renewed the lease (answers are taken in the order the reports were sent: this one is the last)
            self.renewed_at = flight.sent_at
        new = {stream: size for stream, size in sizes.items() if size > self._acked.get(stream, -1)}
        if new:  # else nothing new to keep
            self._acked.update(new)
            if time.monotonic() - self._acked_saved >= ACKED_EVERY:
                self._save_acked()

    def _shrink(self, refused: TooLarge) -> bool:
        """After a 413: reports carry at most what the control plane says it takes (or half as much as before, if
        it does not say) from now on, here and in this runner's later builds. False if they cannot get smaller:
        the report is then dropped like any other refused one."""
        if refused.max_bytes is not None and refused.max_bytes < self.max_chunk:
            smaller = refused.max_bytes
        elif self.max_chunk // 2 >= MIN_CHUNK:
            smaller = self.max_chunk // 2
        else:
            return False
        log.warning(
            "build %s: the control plane took no report of %d log bytes (%s); sending %d at most from now on",
            self.task.build_id,
            self.max_chunk,
            refused,
            smaller,
        )
        self.max_chunk = smaller
        self.client.max_report_bytes = min(smaller, self.client.max_report_bytes or smaller)
        return True

    def _save_acked(self) -> None:
        """Writes acked.json if it holds less than the control plane has accepted."""
        text = json.dumps(self._acked)
        if text != self._acked_text:
            self._acked_tally.save(self._acked)
            self._acked_text = text
        self._acked_saved = time.monotonic()

    async def _settle(self, flying: collections.deque[_Flight]) -> None:
        """After a report failed: waits for the others in flight and keeps what they got stored (a gap or a
        failure among them only means their bytes go again); a lost lease or a revocation still raises."""
        if flying:
            await asyncio.wait([flight.task for flight in flying])
        while flying:
            flight = flying.popleft()
            try:
                self._accepted(flight, flight.task.result())
            except (OffsetGap, Unreachable, TooLarge):  # not stored: sent again
                continue
            except Refused as exc:
                self._accepted(flight, exc)

    async def deliver_late(self) -> int:
        """After the lease was lost: hands in the log bytes the control plane lacks through the late
        route (the control plane takes them only if our lease expired), retrying while it is
        unreachable. Returns the bytes it took; a refusal raises.

        The control plane marks each late piece with a line of its own in the build's stream, so that
        stream is sent at the control plane's end of it (`remote`), not at our own count of it.
        """
        remote = dict(self._acked)
        taken = 0
        while True:
            batch = self._late_batch(remote)
            if not batch:
                return taken
            appends = [(stream, at, data) for stream, at, _, data in batch]
            try:
                sizes = await retrying(functools.partial(self.client.late_logs, self.task, appends))
            except OffsetGap as gap:  # the control plane holds less than we thought: from there
                remote[gap.stream] = self._acked[gap.stream] = gap.expected
                continue
            except TooLarge as exc:
                if not self._shrink(exc):
                    raise
                continue
            progress = 0
            for stream, at, local, data in batch:
                accepted = min(len(data), max(0, sizes.get(stream, at) - at))
                self._acked[stream] = local + accepted
                progress += accepted
            remote.update(sizes)
            if not progress:  # nothing moved: do not go round for ever
                return taken
            taken += progress

    def _late_batch(self, remote: dict[str, int]) -> list[tuple[str, int, int, bytes]]:
        """(stream, offset on the control plane, our offset, bytes): at most `max_chunk` bytes in all."""
        budget = self.max_chunk
        out = []
        for stream, size in self._sizes.items():
            local = self._acked.get(stream, 0)
            take = min(budget, size - local)
            if take <= 0:
                continue
            out.append((stream, remote.get(stream, local), local, _read(self._log_path(stream), local, take)))
            budget -= take
        return out

    def _unsent_logs(
        self, sent: dict[str, int], streams: set[str] | None = None
    ) -> tuple[list[tuple[str, int, bytes]], bool]:
        """Bytes of every stream (or of `streams`) past `sent`, at most `max_chunk` in all; and whether that is
        all of them."""
        budget = self.max_chunk
        out: list[tuple[str, int, bytes]] = []
        complete = True
        for stream, size in self._sizes.items():
            if streams is not None and stream not in streams:
                continue
            start = sent.get(stream, 0)
            if start >= size:
                continue
            if budget <= 0:
                complete = False
                break
            take = min(budget, size - start)
            out.append((stream, start, _read(self._log_path(stream), start, take)))
            budget -= take
            complete = complete and take == size - start
        return out, complete

    def _append_event(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        with open(self.folder / "events.jsonl", "a") as f:
            f.write(json.dumps(event) + "\n")
        self._dirty.set()

    def _log_path(self, stream: str) -> Path:
        return self._logs / f"{stream.encode().hex()}.log"

    def _take_blank(self, path: Path) -> None:
        """Renames a blank file to `path` if there is none there yet and a blank is left (else `_write` makes it)."""
        if self._blanks is None:
            try:
                self._blanks = sorted(os.listdir(self.folder / BLANK_DIR), reverse=True)
            except OSError:
                self._blanks = []
        if not self._blanks or os.path.lexists(path):
            return
        with contextlib.suppress(OSError):  # gone meanwhile: made the usual way
            os.rename(self.folder / BLANK_DIR / self._blanks.pop(), path)

    def _write(self, stream: str, data: bytes) -> None:
        if self._gone:
            raise RuntimeError(f"build {self.task.build_id}: a log write after its outbox was let go")
        # Plain blocking writes: a local append lands in the page cache in microseconds. The file of the stream
        # written last stays open (opening it for every 64 KiB of a fast step cost as much as the write).
        if self._appending is None or self._appending[0] != stream:
            if self._appending is not None:
                self._appending[2]()  # closes it, once
            path = self._log_path(stream)
            if stream not in self._sizes:  # maybe no file yet: a blank one, if the spare left some
                self._take_blank(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            self._appending = (stream, fd, weakref.finalize(self, os.close, fd))
        view = memoryview(data)
        while view:
            view = view[os.write(self._appending[1], view) :]


@dataclass
class _Flight:
    """A report sent and not yet answered."""

    logs: list[tuple[str, int, bytes]]
    batch: list[dict[str, Any]]  # the state changes it carries
    sent_at: float  # monotonic
    task: asyncio.Future[dict[str, int]]


def _beyond(sizes: dict[str, int], sent: dict[str, int]) -> int:
    """Log bytes written and not yet handed to any report."""
    return sum(size - sent.get(stream, 0) for stream, size in sizes.items())


def _split(
    events: list[dict[str, Any]],
) -> tuple[BuildStarted | None, list[tuple[str, StepUpdate]], BuildFinished | None]:
    started = [BuildStarted.model_validate(e["body"]) for e in events if e["kind"] == "started"]
    steps = [(e["name"], StepUpdate.model_validate(e["body"])) for e in events if e["kind"] == "step"]
    finishes = [BuildFinished.model_validate(e["body"]) for e in events if e["kind"] == "finish"]
    return started[0] if started else None, steps, finishes[-1] if finishes else None


def write_lease(folder: Path, task: RunBuildTask, runner_token: str, *, made: bool = False) -> None:
    """The lease of the build whose outbox this folder is, its job token sealed under `runner_token` (if given).
    `made`: the folder is there already."""
    if not made:
        folder.mkdir(parents=True, exist_ok=True)
    lease = {"build_id": task.build_id, "lease_id": task.lease_id, "lease_ttl": task.lease_ttl}
    if runner_token:
        lease["job_token"] = sealing.seal(task.job_token, runner_token, task.lease_id)
    # One write, not json.dump's through a text file: the file is small, and on the hand-over's path.
    data = json.dumps(lease).encode()
    fd = os.open(folder / LEASE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_lease(folder: Path, runner_token: str) -> RunBuildTask:
    """The lease an outbox was written for, as a task that carries only what reporting needs. ValueError if its
    job token was not kept, or was sealed under another runner token (the runner registered again)."""
    try:
        lease = json.loads((folder / LEASE_FILE).read_text())
        job_token = sealing.unseal(str(lease["job_token"]), runner_token, str(lease["lease_id"]))
        return RunBuildTask(
            build_id=str(lease["build_id"]),
            lease_id=str(lease["lease_id"]),
            lease_ttl=float(lease["lease_ttl"]),
            job_token=job_token,
            account="",
            pipeline="",
            yaml="",
        )
    # An empty file is a spare's (spares.py); ValueError covers sealing.Unsealable and json.JSONDecodeError.
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"no job token to deliver with: {type(exc).__name__} {exc}") from exc


class _Tally:
    """A value saved by appending it as a line of JSON; the last whole line is the value. A crash in the middle of
    an append leaves a line without its newline, which does not count: the value read is then the one before, and
    both tallies may lag (what they count is sent again, and the control plane ignores what it holds). Each line
    starts with a newline of its own, so one saved after such a crash is not joined to what it left. A file
    without any newline is one written whole by an older runner (write and rename) and counts as it is."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, value: object) -> None:
        # A newline first too: it ends what a crash may have left cut short, so this line is whole by itself.
        line = ("\n" + json.dumps(value, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if os.fstat(fd).st_size + len(line) <= TALLY_MAX:
                os.write(fd, line)
                return
        finally:
            os.close(fd)
        _write_atomically(self.path, line.decode())  # grown too long: this line alone, whole or not at all

    def last(self) -> object:
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError):
            return None
        lines = text.split("\n")[:-1] if "\n" in text else [text]  # the part after the last newline is torn
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                if line.strip():
                    return json.loads(line)
        return None


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def _read(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), size, offset)

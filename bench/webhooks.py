"""Webhook throughput, side by side: signed GitHub pushes POSTed to a real `outpost server` and to a Buildbot
master's GitHub change hook, measured as deliveries per second and latency until the build is queued.

    .venv/bin/python bench/webhooks.py [--count 500] [--concurrency 8] [--systems outpost,buildbot]
                                       [--write docs/benchmarks.md]

Both systems get the same deliveries: a real GitHub push payload (a forced push of one commit, from
/work/shared/fixtures), each copy with its own `after` SHA and commit id and its own delivery id, signed
the way GitHub signs (`X-Hub-Signature` SHA-1 and `X-Hub-Signature-256`), with the same count and the
same number in flight. Each system runs alone, as its own processes on loopback, with SQLite and nothing
that would run the builds, so they stay queued.

- Outpost: the webhook's 201 answer means the build row is committed. At the end the database must
  hold exactly one queued build per delivery.
- Buildbot: the answer (200 "1 change found") means the change is stored ("accepted"); its scheduler makes the build
  request afterwards. When each request appeared is noted inside the master (see buildbot_webhook.py);
  at the end the REST API must show one pending build request per delivered revision.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import hmac
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import loopback
import machine
from buildbot_webhook import BuildbotHook
from loopback import json_of
from mdsection import write_section
from outpost_layouts import outpost_argv
from peers import Skipped
from processes import Processes, stop_on_signals
from waiting import BenchError

PIPELINE = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"
FIXTURE = Path("/work/shared/fixtures/webhooks/github/push-branch-forced-with-commits.json")
SYSTEMS = ("outpost", "buildbot")


@dataclass(frozen=True)
class Delivery:
    revision: str
    body: bytes


@dataclass(frozen=True)
class Answered:
    revision: str
    sent_at: float  # wall clock, comparable with times noted by other processes
    ms: float  # POST sent → answer received


@dataclass
class Measured:
    """One system's run: its answers and, where the answer is not the queued build, when it was queued."""

    label: str
    version: str = ""
    seconds: float = 0.0  # first POST → last answer
    answers: list[Answered] = field(default_factory=list)
    queued_ms: list[float] | None = None  # POST sent → build request created, when that is later than the answer
    queued_seconds: float = 0.0  # first POST → last build request created
    queued_by_last_answer: int = 0  # build requests that existed when the last delivery was answered
    load: tuple[float, float] = (0.0, 0.0)
    checks: list[str] = field(default_factory=list)
    skipped: str = ""


def deliveries(fixture: Path, n: int) -> list[Delivery]:
    """`n` copies of a real push, each with its own head commit SHA (so no system can treat two as one)."""
    payload = json.loads(fixture.read_text())
    made = []
    for i in range(n):
        copied = copy.deepcopy(payload)
        revision = hashlib.sha1(f"outpost-bench-webhooks-{i}".encode()).hexdigest()
        copied["after"] = copied["head_commit"]["id"] = copied["commits"][-1]["id"] = revision
        made.append(Delivery(revision, json.dumps(copied).encode()))
    return made


def signed_headers(body: bytes, secret: str) -> dict[str, str]:
    """What GitHub sends with a push to a webhook that has a secret."""
    key = secret.encode()
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/bench",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
    }


async def deliver_all(
    url: str, batch: list[Delivery], secret: str, concurrency: int, accepted: Callable[[httpx.Response], bool]
) -> tuple[float, list[Answered]]:
    """POSTs every delivery with `concurrency` requests in flight; the wall time and each answer."""
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    for delivery in batch:
        queue.put_nowait(delivery)
    answers: list[Answered] = []
    transport = httpx.AsyncHTTPTransport(socket_options=loopback.NODELAY)
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                delivery = queue.get_nowait()
                headers = signed_headers(delivery.body, secret)
                sent_at, start = time.time(), time.perf_counter()
                r = await client.post(url, content=delivery.body, headers=headers)
                answers.append(Answered(delivery.revision, sent_at, (time.perf_counter() - start) * 1000))
                if not accepted(r):
                    raise BenchError(f"delivery answered {r.status_code}: {r.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, answers


def measure_outpost(batch: list[Delivery], warmup: int, concurrency: int, workdir: Path) -> Measured:
    result = Measured("Outpost (`outpost server`)")
    with Processes(workdir / "logs") as procs:
        data, port = workdir / "server", loopback.free_port()
        server = procs.start("outpost-server", outpost_argv("server", "--port", str(port), "--data-dir", str(data)))
        token_file = data / "admin-token"
        token = server.wait_for(lambda: token_file.read_text().strip() if token_file.exists() else None, "token")
        repo = json.loads(batch[0].body)["repository"]["full_name"]
        with loopback.client(f"http://127.0.0.1:{port}", token=token) as api:
            server.wait_for(lambda: api.get("/api/v1/whoami").status_code == 200 or None, "the API")
            result.version = json_of(api.get("/api/v1/health"))["version"]
            json_of(api.post("/api/v1/runtimes", json={"name": "bench"}))
            json_of(api.post("/api/v1/pipelines", json={"name": "bench", "yaml": PIPELINE}))
            rule = {"pipeline": "bench", "provider": "github", "repo": repo, "events": ["push"]}
            trigger = json_of(api.post("/api/v1/triggers", json=rule))
        built = lambda r: r.status_code == 201  # noqa: E731
        endpoint, secret = trigger["endpoint"], trigger["secret"]
        asyncio.run(deliver_all(endpoint, batch[:warmup], secret, concurrency, built))
        before = machine.load_average()
        result.seconds, result.answers = asyncio.run(deliver_all(endpoint, batch[warmup:], secret, concurrency, built))
        result.load = (before, machine.load_average())
        made = queued_builds(data / "outpost.db", trigger["id"])
        if made != len(batch):
            raise BenchError(f"{len(batch)} deliveries made {made} queued builds")
        result.checks.append(f"the database held {made} queued builds of the trigger, one per delivery")
    return result


def queued_builds(database: Path, trigger_id: str) -> int:
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT count(*) FROM builds WHERE trigger_id = ? AND status = 'queued'", (trigger_id,))
        return int(row.fetchone()[0])


def measure_buildbot(batch: list[Delivery], warmup: int, concurrency: int, workdir: Path) -> Measured:
    result = Measured(BuildbotHook.label)
    with Processes(workdir / "logs") as procs:
        hook = BuildbotHook(procs, workdir)
        try:
            hook.start()
            result.version = hook.version
            one_change = lambda r: r.status_code in (200, 202) and r.text == "1 change found"  # noqa: E731
            timeout = 30 + 0.2 * len(batch)
            asyncio.run(deliver_all(hook.endpoint, batch[:warmup], hook.secret, concurrency, one_change))
            hook.queued_at({d.revision for d in batch[:warmup]}, timeout)
            before = machine.load_average()
            measured = batch[warmup:]
            result.seconds, result.answers = asyncio.run(
                deliver_all(hook.endpoint, measured, hook.secret, concurrency, one_change)
            )
            queued = hook.queued_at({d.revision for d in measured}, timeout)
            result.load = (before, machine.load_average())
            first_sent = min(a.sent_at for a in result.answers)
            result.queued_ms = [(queued[a.revision] - a.sent_at) * 1000 for a in result.answers]
            result.queued_seconds = max(queued.values()) - first_sent
            last_answer = max(a.sent_at + a.ms / 1000 for a in result.answers)
            result.queued_by_last_answer = sum(1 for t in queued.values() if t <= last_answer)
            result.checks += buildbot_checks(hook.confirm({d.revision for d in batch}), len(batch))
        finally:
            hook.close()
    return result


def buildbot_checks(seen: dict[str, int], n: int) -> list[str]:
    """The REST API's view after the run, in words; BenchError when a delivery made no build request."""
    if seen["revisions_with_request"] != n or seen["changes"] != n:
        raise BenchError(f"{n} deliveries: Buildbot's REST API shows {seen}")
    return [
        f"`/api/v2/changes` held {seen['changes']} changes and `/api/v2/buildrequests` {seen['buildrequests']} "
        f"build requests ({seen['pending']} pending), one for each delivered revision"
    ]


def run(systems: list[str], count: int, warmup: int, concurrency: int, workdir: Path) -> list[Measured]:
    batch = deliveries(FIXTURE, warmup + count)
    results = []
    for key in systems:
        folder = workdir / key
        folder.mkdir()
        log(f"{key}: {warmup} warm-up and {count} measured deliveries, {concurrency} in flight")
        measure = measure_outpost if key == "outpost" else measure_buildbot
        try:
            result = measure(batch, warmup, concurrency, folder)
        except (BenchError, Skipped, httpx.HTTPError, OSError) as exc:
            label = "Outpost" if key == "outpost" else BuildbotHook.label
            result = Measured(label, skipped=str(exc).strip().replace("\n", " / "))
        log(f"{key}: {result.skipped or f'{count / result.seconds:.0f} deliveries/s answered'}")
        results.append(result)
    return results


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _row(label: str, meaning: str, count: int, seconds: float, ms: list[float]) -> str:
    figures = " | ".join(f"{percentile(ms, p):.1f}" for p in (50, 90, 99))
    return f"| {label} | {meaning} | {seconds:.2f} | {count / seconds:.0f} | {figures} | {max(ms):.1f} |"


def table(results: list[Measured]) -> str:
    rows = []
    for r in results:
        if r.skipped:
            continue
        name, answered = f"{r.label} {r.version}", [a.ms for a in r.answers]
        if r.queued_ms is None:
            rows.append(_row(name, "201 answer = build queued", len(answered), r.seconds, answered))
        else:
            rows.append(_row(name, "200 answer = change accepted", len(answered), r.seconds, answered))
            rows.append(_row(name, "build request created", len(answered), r.queued_seconds, r.queued_ms))
    head = "| System | Until | Wall time (s) | Deliveries/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |"
    return "\n".join([head, "|---|---|--:|--:|--:|--:|--:|--:|", *rows])


def queued_rate(r: Measured) -> float:
    return len(r.answers) / (r.queued_seconds if r.queued_ms is not None else r.seconds)


def reading(results: list[Measured]) -> str:
    """Sentences that follow from this run's figures."""
    done = {r.label.split()[0]: r for r in results if not r.skipped}
    outpost, buildbot = done.get("Outpost"), done.get("Buildbot")
    sentences = []
    if outpost:
        ms = [a.ms for a in outpost.answers]
        sentences.append(
            f"Outpost queued {queued_rate(outpost):.0f} builds/s, each {percentile(ms, 50):.0f} ms after its POST "
            f"at the median (p99 {percentile(ms, 99):.0f} ms); the answer comes after the build row is committed."
        )
    if buildbot and buildbot.queued_ms is not None:
        ms = [a.ms for a in buildbot.answers]
        lag = statistics.median(q - a.ms for q, a in zip(buildbot.queued_ms, buildbot.answers, strict=True))
        sentences.append(
            f"Buildbot answered {len(ms) / buildbot.seconds:.0f} deliveries/s ({percentile(ms, 50):.0f} ms median), "
            f"but its answer only says the change is stored: its scheduler created the build requests at "
            f"{queued_rate(buildbot):.0f}/s, {percentile(buildbot.queued_ms, 50):.0f} ms after the POST at the "
            f"median, {lag:.0f} ms after the answer."
        )
        if buildbot.queued_by_last_answer < len(ms):
            sentences.append(
                f"When the last delivery was answered, {buildbot.queued_by_last_answer} of the {len(ms)} build "
                "requests existed: the hook took changes faster than the scheduler, which shares the master's "
                "reactor and database with it, turned them into requests, so a backlog built up and that latency "
                "is mostly time spent waiting behind earlier changes, not the cost of one delivery on an idle "
                "master."
            )
    if outpost and buildbot:
        ratio = queued_rate(outpost) / queued_rate(buildbot)
        faster, factor = ("Outpost", ratio) if ratio >= 1 else ("Buildbot", 1 / ratio)
        sentences.append(
            f"Counted until the build is queued, {faster} was {factor:.1f} times as fast in this run. The work is not "
            "identical: Outpost checks the SHA-256 signature, stores a delivery row and looks the delivery id up "
            "for redeliveries; Buildbot 4.3 checks only the SHA-1 one and splits the work between the hook and "
            "its scheduler. Both use SQLite, and the client shares the machine's cores with the server it loads, "
            "so the figures are for this machine and one run, not a capacity."
        )
    return " ".join(sentences)


def render(results: list[Measured], count: int, warmup: int, concurrency: int, command: str) -> str:
    size = len(deliveries(FIXTURE, 1)[0].body)
    rows = "\n".join(f"| {k} | {v} |" for k, v in machine.describe())
    loads = "\n".join(
        f"| Load average (1 min), {r.label.split()[0]} | {r.load[0]:.2f} before, {r.load[1]:.2f} after |"
        for r in results
        if not r.skipped
    )
    checks = [f"- {r.label.split()[0]}: {c}." for r in results for c in r.checks]
    checks += [f"- {r.label} was skipped: {r.skipped}" for r in results if r.skipped]
    return f"""## Webhooks: signed deliveries → queued builds

- **Command**: `{command}`
- **Run**: for each system in turn, alone, {count} measured deliveries after {warmup} warm-up ones,
  {concurrency} in flight at a time, POSTed over loopback.
- **Deliveries**: the real GitHub push `{FIXTURE.name}` (a forced push of one commit,
  ~{size} bytes as sent), each copy with its own `after`/commit SHA and delivery id, signed as GitHub signs
  (`X-Hub-Signature` SHA-1 and `X-Hub-Signature-256`). Nothing to deduplicate, nothing runs the builds:
  they stay queued.
- **Outpost** (`/webhooks/{{trigger}}`, SQLite, no runner): body read, SHA-256 signature checked, JSON parsed,
  trigger rules applied, delivery id checked for a redelivery, the queued build and its delivery row
  committed, then the 201 answer: its latency is the time until the build is queued.
- **Buildbot** (`/change_hook/github` with `strict` and a secret, AnyBranchScheduler with
  `treeStableTimer=None`, `collapseRequests` off, SQLite, no worker): the hook checks the SHA-1 signature,
  stores the change and answers `200 1 change found` ("accepted"; the code sets 202 but writes the body
  first, so 200 goes out); the scheduler then creates the buildset and its build request. Buildbot's
  default logging also writes each payload to `twistd.log`. "Build request created" is the wall-clock
  time a small observer service inside the master saw the `buildsets new` message (sent once the rows are
  written and read back) minus the time the POST was sent; its wall time runs from the first POST to the
  last request created.

| Machine | |
|---|---|
{rows}
{loads}

{table(results)}

Checked afterwards:

{chr(10).join(checks)}

**Reading.** {reading(results)}
"""


def log(text: str) -> None:
    print(f"[webhooks {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {','.join(SYSTEMS)}")
    parser.add_argument("--write", type=Path, help="Put the results into this Markdown file.")
    args = parser.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    if set(systems) - set(SYSTEMS):
        parser.error(f"unknown system(s) in {args.systems}")
    stop_on_signals()
    command = " ".join([".venv/bin/python", "bench/webhooks.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="outpost-bench-webhooks-") as tmp:
        results = run(systems, args.count, args.warmup, args.concurrency, Path(tmp))
    section = render(results, args.count, args.warmup, args.concurrency, command)
    print(section)
    if args.write:
        write_section(args.write, section, "bench/webhooks.py")


if __name__ == "__main__":
    main()

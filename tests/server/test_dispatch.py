"""Dispatch: idle polls cost no queries, a queued build reaches exactly one of a thousand waiting polls, overload
answers 503 + Retry-After, a poll hands over several builds at once, a runner fills its slots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from outpost.runner.agent import Runner, RunnerIdentity, RunnerOptions
from outpost.runner.client import ProtocolClient
from outpost.server import dispatch
from outpost.server.models import Runtime
from outpost.server.store import builds, runtimes
from outpost.wire import LEASE_HEADER, PREFIX, PollRequest, RegisterRequest
from tests.stack import BASE, Stack, running_stack, settings_for

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"


async def poll(stack: Stack, token: str, **body: Any) -> httpx.Response:
    request = PollRequest(**{"wait": 0.0, **body})
    async with stack.raw() as c:
        return await c.post(
            PREFIX + "/poll",
            json=request.model_dump(exclude_none=True),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )


async def eventually(check: Any, what: str, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


@contextlib.contextmanager
def counted(engine: AsyncEngine) -> Iterator[list[tuple[asyncio.Task[Any] | None, str]]]:
    """The statements the store sends to the database meanwhile, with the task that sent each (an event listener:
    observing, not patching). The reaper and the cron scheduler run queries of their own meanwhile."""
    seen: list[tuple[asyncio.Task[Any] | None, str]] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((asyncio.current_task(), statement))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def many_runners(stack: Stack, count: int) -> list[str]:
    """`count` registered runners of the "local" runtime, each with its own token, registered in one transaction
    through the store (the API would spend a minute on a thousand registrations)."""
    tokens = []
    async with stack.services.tx() as session:
        runtime = await session.scalar(select(Runtime).where(Runtime.name == "local"))
        assert runtime is not None
        for i in range(count):
            install = await runtimes.create_install_token(session, runtime)
            _runner, token, _rt, _account = await runtimes.register_runner(
                session, RegisterRequest(install_token=install, name=f"idle-{i}")
            )
            tokens.append(token)
    return tokens


def patient(database_url: str, tmp_path: Path, **overrides: Any) -> Any:
    """Polls held up to 30 s (room for many polls to settle before any ends), and leases long enough that a build
    claimed and never started is not requeued during a test."""
    return running_stack(settings_for(database_url, tmp_path / "data", poll_timeout=30.0, lease_ttl=300.0, **overrides))


@pytest.fixture
async def roomy(tmp_path: Path) -> AsyncIterator[Stack]:
    async with patient(f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}", tmp_path) as s:
        yield s


@pytest.fixture
async def calm(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with patient(database_url, tmp_path) as s:
        yield s


async def test_a_thousand_idle_polls_are_all_answered_and_a_build_queued_meanwhile_goes_to_exactly_one(
    roomy: Stack,
) -> None:
    stack, wakeups = roomy, roomy.services.wakeups
    tokens = await many_runners(stack, 1000)
    await stack.pipeline("hello", HELLO)
    async with asyncio.timeout(120):
        polls = [asyncio.create_task(poll(stack, t, wait=25.0)) for t in tokens]
        await eventually(lambda: wakeups.idle_polls == 1000, "a thousand idle polls")
        build = await stack.run("hello")
        answers = await asyncio.gather(*polls)

    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1
    assert statuses.count(204) == 999
    (handed,) = [a.json()["task"] for a in answers if a.status_code == 200]
    assert (handed["kind"], handed["build_id"]) == ("run_build", build["id"])
    assert (await stack.build(build["id"]))["status"] == "claimed"
    assert wakeups.polls == 0


async def test_an_idle_poll_runs_no_query_while_it_waits(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    waiting = asyncio.create_task(poll(stack, runner.runner_token, wait=5.0))
    await eventually(lambda: stack.services.wakeups.idle_polls == 1, "the poll to wait")

    with counted(stack.services.engine) as statements:
        await asyncio.sleep(2.5)  # longer than the 2 s re-check the polls used to run
    # The app runs in the task of the request (ASGI in process): the poll's own queries are those of `waiting`.
    assert [sql for task, sql in statements if task is waiting] == []

    build = await stack.run("hello")
    answer = await waiting
    assert answer.status_code == 200
    assert answer.json()["task"]["build_id"] == build["id"]


async def test_a_renewed_poll_in_a_runtime_with_nothing_to_claim_sends_no_statement(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    assert (await poll(stack, runner.runner_token)).status_code == 204  # its look found nothing and proved its token

    renewal = asyncio.create_task(poll(stack, runner.runner_token))
    with counted(stack.services.engine) as statements:
        assert (await renewal).status_code == 204
    # No authentication (its token has a pass), no claim nor git-query look (the runtime is quiet), and no write of
    # when it was seen (batched): it used to run one of each.
    assert [sql for task, sql in statements if task is renewal] == []


async def test_a_renewed_poll_whose_pass_was_forgotten_only_authenticates(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    assert (await poll(stack, runner.runner_token)).status_code == 204
    stack.services.wakeups.passes.clear()  # as when the replica link comes back: signals may have been lost

    renewal = asyncio.create_task(poll(stack, runner.runner_token))
    with counted(stack.services.engine) as statements:
        assert (await renewal).status_code == 204
    mine = [sql.split() for task, sql in statements if task is renewal]
    # Its runner read by its token, and no claim nor git-query look, nor an UPDATE of the runner.
    assert [words[0] for words in mine if words[0] in ("SELECT", "INSERT", "UPDATE", "DELETE")] == ["SELECT"], mine
    assert not [words for words in mine if "builds" in words or "git_queries" in words]


async def test_a_build_queued_after_an_empty_look_is_claimed_by_the_next_poll(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    assert (await poll(stack, runner.runner_token)).status_code == 204

    build = await stack.run("hello")
    answer = await poll(stack, runner.runner_token)
    assert answer.status_code == 200
    assert answer.json()["task"]["build_id"] == build["id"]


async def test_a_git_query_asked_after_a_claim_found_none_reaches_the_next_poll(calm: Stack) -> None:
    """A claim's look that found no git query lets the looks after it skip that query: a git query asked later
    must still reach a poll at once, whether the poll waits when it is asked or comes after."""
    stack = calm
    r = await stack.api(
        "POST",
        "/integrations",
        json={"kind": "git", "name": "corp", "url": "https://git.corp.invalid", "behind_firewall": True},
    )
    assert r.status_code == 201, r.text
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    claimed = await poll(stack, runner.runner_token)
    assert claimed.json()["task"]["build_id"] == build["id"]  # that look found no git query

    async def ask() -> httpx.Response:
        return await stack.api("GET", "/integrations/git/corp/branches", params={"repo": "acme/app", "wait": 10})

    for poll_first in (True, False):
        if poll_first:
            held = asyncio.create_task(poll(stack, runner.runner_token, wait=3.0))
            await eventually(lambda: stack.services.wakeups.idle_polls == 1, "the poll to wait")
            asking = asyncio.create_task(ask())
        else:
            asking = asyncio.create_task(ask())
            await asyncio.sleep(0.2)  # the query stored (were it not yet, the poll would wait for its signal)
            held = asyncio.create_task(poll(stack, runner.runner_token, wait=3.0))
        answer = await held
        assert answer.status_code == 200, answer.text
        assert answer.json()["task"]["kind"] == "git_query"
        asking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asking


async def test_a_build_requested_while_a_runner_waits_says_nothing_of_waiting_unless_that_runner_is_drained(
    stack: Stack,
) -> None:
    await stack.pipeline("hello", HELLO)
    drained = await stack.register()
    assert (await stack.api("POST", f"/runners/{drained.runner_id}/drain")).json()["drain"] == "drained"
    held = asyncio.create_task(poll(stack, drained.runner_token, wait=1.0))
    await eventually(lambda: stack.services.wakeups.idle_polls == 1, "the drained runner's poll waits")
    first = await stack.run("hello")
    assert any("no runner" in w for w in first["warnings"])  # its poll waits, but it takes no build
    assert (await held).status_code == 204
    assert (await stack.api("POST", f"/builds/{first['id']}/cancel")).status_code == 200

    ready = await stack.register()
    held = asyncio.create_task(poll(stack, ready.runner_token, wait=5.0))
    await eventually(lambda: stack.services.wakeups.idle_polls == 1, "the other runner's poll waits")
    second = await stack.run("hello")
    assert second["warnings"] == []
    answer = await held
    assert answer.status_code == 200
    assert answer.json()["task"]["build_id"] == second["id"]


async def test_a_queued_build_wakes_one_waiting_poll_and_the_others_keep_waiting(calm: Stack) -> None:
    stack, wakeups = calm, calm.services.wakeups
    tokens = [(await stack.register()).runner_token for _ in range(10)]
    await stack.pipeline("hello", HELLO)
    polls = [asyncio.create_task(poll(stack, t, wait=5.0)) for t in tokens]
    await eventually(lambda: wakeups.idle_polls == 10, "ten idle polls")

    await stack.run("hello")
    async with asyncio.timeout(30):
        done, _ = await asyncio.wait(polls, return_when=asyncio.FIRST_COMPLETED)
    assert [d.result().status_code for d in done] == [200]
    assert wakeups.idle_polls == 9  # nobody else looked at the store
    answers = await asyncio.gather(*polls)
    assert sorted(a.status_code for a in answers) == [200] + [204] * 9


async def test_past_the_maximum_of_held_polls_a_poll_gets_503_with_retry_after(
    database_url: str, tmp_path: Path
) -> None:
    async with patient(database_url, tmp_path, max_polls=2) as stack:
        tokens = [(await stack.register()).runner_token for _ in range(3)]
        held = [asyncio.create_task(poll(stack, t, wait=3.0)) for t in tokens[:2]]
        await eventually(lambda: stack.services.wakeups.idle_polls == 2, "two held polls")

        refused = await poll(stack, tokens[2], wait=3.0)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"] == "too_many_polls"

        assert [a.status_code for a in await asyncio.gather(*held)] == [204, 204]
        assert (await poll(stack, tokens[2])).status_code == 204  # room again


async def test_one_runner_token_cannot_fill_the_control_plane_with_polls(stack: Stack) -> None:
    """A runner needs only its newest poll: past a few, each new one ends its oldest at once (204)."""
    greedy, other = (await stack.register()).runner_token, (await stack.register()).runner_token
    wakeups = stack.services.wakeups
    polls = []
    for _ in range(dispatch.POLLS_PER_RUNNER + 3):
        polls.append(asyncio.create_task(poll(stack, greedy, wait=8.0)))
        await eventually(lambda: wakeups.polls == min(len(polls), dispatch.POLLS_PER_RUNNER), "the poll held")
    await eventually(lambda: sum(p.done() for p in polls) == 3, "the three oldest to be answered", timeout=5)
    assert [p.result().status_code for p in polls[:3]] == [204, 204, 204]
    assert wakeups.polls == dispatch.POLLS_PER_RUNNER

    assert (await poll(stack, other, wait=0.5)).status_code == 204  # another runner's poll is held as ever
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    answers = await asyncio.gather(*polls[3:])  # the build goes to the greedy runner's live polls, to no other
    assert {r.json()["task"]["build_id"] for r in answers if r.status_code == 200} == {build["id"]}


async def test_a_poll_with_max_tasks_is_handed_up_to_its_free_slots_in_one_answer(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    queued = [(await stack.run("hello"))["id"] for _ in range(5)]

    answer = await poll(stack, runner.runner_token, free_slots=3, max_tasks=8)
    assert answer.status_code == 200
    assert "task" not in answer.json()
    tasks = answer.json()["tasks"]
    assert [(t["kind"], t["build_id"]) for t in tasks] == [("run_build", b) for b in queued[:3]]

    older = await poll(stack, runner.runner_token, free_slots=3)  # a runner of the previous version: one task
    assert "tasks" not in older.json()
    assert older.json()["task"]["build_id"] == queued[3]


async def test_a_stopping_control_plane_answers_every_held_poll_at_once(roomy: Stack) -> None:
    wakeups = roomy.services.wakeups
    tokens = await many_runners(roomy, 200)
    polls = [asyncio.create_task(poll(roomy, t, wait=25.0)) for t in tokens]
    await eventually(lambda: wakeups.idle_polls == 200, "200 idle polls")

    wakeups.close()  # what SIGTERM does before the server waits for open requests
    async with asyncio.timeout(10):
        answers = await asyncio.gather(*polls)
    assert {a.status_code for a in answers} == {204}


CONCURRENT = """version: '1.0'
steps:
  wait:
    image: alpine
    commands:
      - touch "$MARKS/${{CF_BUILD_ID}}"
      - for i in $(seq 1 600); do [ -e "$MARKS/go" ] && exit 0; sleep 0.1; done; exit 1
"""


async def test_one_runner_with_concurrency_4_runs_4_builds_at_once(stack: Stack, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    await stack.pipeline("wait", CONCURRENT, variables={"MARKS": str(marks)})
    builds = [(await stack.run("wait"))["id"] for _ in range(4)]
    identity = RunnerIdentity.registered(BASE, await stack.register())
    options = RunnerOptions(url=BASE, data_dir=tmp_path / "runner", concurrency=4, poll_wait=2.0)
    runner = Runner(ProtocolClient(BASE, transport=httpx.ASGITransport(app=stack.app)), identity, options)
    running = asyncio.create_task(runner.run())
    try:
        # Every build's step runs before any may end: four at once.
        await eventually(lambda: len(list(marks.iterdir())) == 4, "four steps running at once", timeout=60)
        (marks / "go").touch()
        for build_id in builds:
            await eventually(lambda b=build_id: b not in runner.jobs, f"build {build_id} to end", timeout=60)
    finally:
        runner.stop()
        async with asyncio.timeout(60):
            await running
    for build_id in builds:
        assert (await stack.build(build_id))["status"] == "success"


class Counting(httpx.AsyncBaseTransport):
    """Passes requests on and keeps the status of every poll answer: the wire as the runner sees it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.polls: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/poll"):
            self.polls.append(response.status_code)
        return response


async def test_a_runner_refused_with_503_waits_as_long_as_retry_after_says(database_url: str, tmp_path: Path) -> None:
    async with patient(database_url, tmp_path, max_polls=1) as stack:
        other = await stack.register()
        held = asyncio.create_task(poll(stack, other.runner_token, wait=10.0))  # the only poll there is room for
        await eventually(lambda: stack.services.wakeups.idle_polls == 1, "the held poll")
        identity = RunnerIdentity.registered(BASE, await stack.register())
        wire = Counting(httpx.ASGITransport(app=stack.app))
        runner = Runner(
            ProtocolClient(BASE, transport=wire), identity, RunnerOptions(url=BASE, data_dir=tmp_path / "r")
        )
        running = asyncio.create_task(runner.run())
        try:
            await eventually(lambda: wire.polls, "the runner's first poll")
            await asyncio.sleep(3.0)  # less than Retry-After (5 s): a backoff from 0.2 s would have polled 3-4 times
        finally:
            runner.stop()
            async with asyncio.timeout(30):
                await running
        assert wire.polls == [503]
        assert (await held).status_code == 204


async def test_a_build_requested_while_a_poll_waits_is_claimed_in_the_requests_own_commit(stack: Stack) -> None:
    """The request claims its build for the held poll in its own transaction: its answer already names the runner,
    and the poll answers that build (a list, to a poll that asked for several tasks) without a look of its own."""
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    held = asyncio.create_task(poll(stack, runner.runner_token, wait=5.0, free_slots=2, max_tasks=4))
    await eventually(lambda: stack.services.wakeups.idle_polls == 1, "the poll to wait")

    with counted(stack.services.engine) as statements:
        build = await stack.run("hello")
        answer = await held
    assert (build["status"], build["runner_id"], build["warnings"]) == ("claimed", runner.runner_id, [])
    assert answer.status_code == 200
    assert [(t["kind"], t["build_id"]) for t in answer.json()["tasks"]] == [("run_build", build["id"])]
    assert [sql for task, sql in statements if task is held] == []  # the poll itself ran no statement
    assert (await stack.build(build["id"]))["status"] == "claimed"


async def test_builds_requested_while_one_poll_waits_go_in_order_and_the_second_waits_for_the_next_poll(
    stack: Stack,
) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    held = asyncio.create_task(poll(stack, runner.runner_token, wait=5.0))
    await eventually(lambda: stack.services.wakeups.idle_polls == 1, "the poll to wait")
    first, second = await stack.run("hello"), await stack.run("hello")
    assert (first["status"], second["status"]) == ("claimed", "queued")
    assert (await held).json()["task"]["build_id"] == first["id"]
    assert (await poll(stack, runner.runner_token)).json()["task"]["build_id"] == second["id"]


async def test_a_build_its_poll_could_not_hand_over_goes_back_to_the_queue_and_its_lease_is_refused(
    stack: Stack,
) -> None:
    """What happens to a build claimed for a poll whose runner hung up before the answer (`give_back`): queued
    again at once, not counted as a requeue, its lease fenced, and the next poll gets it."""
    lost, other = await stack.register(), await stack.register()
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    task = (await poll(stack, lost.runner_token)).json()["task"]
    async with stack.services.tx() as session:
        given = await builds.give_back(session, task["build_id"], task["lease_id"])
    assert given is not None
    assert (given.status, given.requeues) == ("queued", 0)
    async with stack.services.tx() as session:  # a second time: no longer that lease's claim
        assert await builds.give_back(session, task["build_id"], task["lease_id"]) is None
    assert (await stack.build(build["id"]))["status"] == "queued"

    async with stack.raw() as c:
        late = await c.post(
            f"{PREFIX}/builds/{build['id']}/heartbeat",
            headers={"Authorization": f"Bearer {task['job_token']}", LEASE_HEADER: task["lease_id"]},
        )
    assert late.status_code == 409, late.text
    again = (await poll(stack, other.runner_token)).json()["task"]
    assert again["build_id"] == build["id"]
    assert again["lease_id"] != task["lease_id"]


async def test_a_poll_whose_runner_hangs_up_while_its_build_is_claimed_for_it_gives_the_build_to_the_next(
    calm: Stack,
) -> None:
    """The runner of the poll a build request claims for hangs up in the middle of the request's transaction (when
    the claim's UPDATE is sent): the build does not wait in that poll's lease for the reaper (300 s here), it goes
    back to the queue at once and the next waiting poll gets it."""
    stack = calm
    first, second = await stack.register(), await stack.register()
    await stack.pipeline("hello", HELLO)
    wakeups = stack.services.wakeups
    hung_up = asyncio.Event()
    sent: list[MutableMapping[str, Any]] = []
    body = PollRequest(wait=10.0, free_slots=1).model_dump_json(exclude_none=True).encode()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PREFIX + "/poll",
        "raw_path": (PREFIX + "/poll").encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {first.runner_token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    gone = asyncio.create_task(stack.app(scope, receive, send))
    await eventually(lambda: wakeups.idle_polls == 1, "the first runner's poll waits")
    other = asyncio.create_task(poll(stack, second.runner_token, wait=10.0))
    await eventually(lambda: wakeups.idle_polls == 2, "the second runner's poll waits too")

    def hang_up_at_the_claim(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE BUILDS") and "lease_id" in statement:
            hung_up.set()

    event.listen(stack.services.engine.sync_engine, "before_cursor_execute", hang_up_at_the_claim)
    try:
        build = await stack.run("hello")
    finally:
        event.remove(stack.services.engine.sync_engine, "before_cursor_execute", hang_up_at_the_claim)
    assert (build["status"], build["runner_id"]) == ("claimed", first.runner_id)  # claimed for the first poll
    async with asyncio.timeout(10):
        answer = await other
        await gone
    assert answer.status_code == 200, answer.text
    assert answer.json()["task"]["build_id"] == build["id"]  # without waiting for the first lease to expire
    assert sent[0]["status"] == 204  # what the first poll said, to nobody
    shown = await stack.build(build["id"])
    assert (shown["status"], shown["runner_id"]) == ("claimed", second.runner_id)

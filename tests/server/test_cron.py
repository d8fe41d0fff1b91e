"""Cron expressions and the scheduler: which minutes fire, and each minute fires once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from outpost.errors import Invalid
from outpost.server.cron import CronExpression, minute_of, run_scheduler
from outpost.server.models import Build
from outpost.server.store import schedules
from tests.stack import Stack

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "moment", "fires"),
    [
        ("* * * * *", "2026-03-04 05:06", True),
        ("0 3 * * *", "2026-03-04 03:00", True),
        ("0 3 * * *", "2026-03-04 03:01", False),
        ("*/15 * * * *", "2026-03-04 10:45", True),
        ("*/15 * * * *", "2026-03-04 10:50", False),
        ("5/20 * * * *", "2026-03-04 10:45", True),
        ("0 9-17 * * *", "2026-03-04 17:00", True),
        ("0 9-17 * * *", "2026-03-04 18:00", False),
        ("0 9-17/4 * * *", "2026-03-04 13:00", True),
        ("0 9-17/4 * * *", "2026-03-04 15:00", False),
        ("0,30 * * * *", "2026-03-04 10:30", True),
        ("0 0 1 * *", "2026-03-01 00:00", True),
        ("0 0 1 * *", "2026-03-02 00:00", False),
        ("0 0 * * MON-FRI", "2026-03-06 00:00", True),  # a Friday
        ("0 0 * * mon-fri", "2026-03-07 00:00", False),  # a Saturday
        ("0 0 * * 0", "2026-03-08 00:00", True),  # Sunday is 0 ...
        ("0 0 * * 7", "2026-03-08 00:00", True),  # ... and 7
        ("0 0 * JAN,jul *", "2026-07-01 00:00", True),
        ("0 0 * JAN,jul *", "2026-08-01 00:00", False),
        ("0 0 13 * FRI", "2026-03-13 00:00", True),  # both day fields restricted: either one fires
        ("0 0 13 * FRI", "2026-03-06 00:00", True),
        ("0 0 13 * FRI", "2026-03-10 00:00", False),
        ("0 0 */2 * *", "2026-03-03 00:00", True),
        ("0 0 */2 * *", "2026-03-04 00:00", False),
        ("@daily", "2026-03-04 00:00", True),
        ("@hourly", "2026-03-04 07:00", True),
        ("@weekly", "2026-03-08 00:00", True),
        ("@yearly", "2026-01-01 00:00", True),
    ],
)
def test_an_expression_fires_on_the_minutes_it_names(expression: str, moment: str, fires: bool) -> None:
    assert CronExpression.parse(expression).matches(at(moment)) is fires


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("", "5 fields"),
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("60 * * * *", "minute '60' is out of range 0-59"),
        ("* 24 * * *", "hour '24' is out of range"),
        ("* * 0 * *", "day of month '0' is out of range"),
        ("* * * 13 *", "month '13' is out of range"),
        ("* * * * 8", "day of week '8' is out of range"),
        ("*/0 * * * *", "step"),
        ("*/x * * * *", "step"),
        ("5-1 * * * *", "ends before it starts"),
        ("a * * * *", "not a number"),
        ("* * * FOO *", "not a number or a name"),
        ("1,,2 * * * *", "not a number"),
    ],
)
def test_a_bad_expression_is_refused_naming_the_field(expression: str, complaint: str) -> None:
    with pytest.raises(Invalid) as caught:
        CronExpression.parse(expression)
    assert complaint in caught.value.message


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 3 * * *", "2026-03-04 03:00", "2026-03-05 03:00"),
        ("*/15 * * * *", "2026-03-04 10:46", "2026-03-04 11:00"),
        ("0 0 29 2 *", "2026-03-01 00:00", "2028-02-29 00:00"),
        ("30 8 * * MON", "2026-03-04 12:00", "2026-03-09 08:30"),
        ("0 0 1 1 *", "2026-12-31 23:59", "2027-01-01 00:00"),
    ],
)
def test_the_next_firing_is_the_first_matching_minute_after(expression: str, after: str, expected: str) -> None:
    assert CronExpression.parse(expression).next_after(at(after)) == at(expected)


def test_an_expression_that_can_never_fire_has_no_next_firing() -> None:
    assert CronExpression.parse("0 0 31 2 *").next_after(at("2026-01-01 00:00")) is None


async def test_the_scheduler_fires_each_minute_once_aligned_to_the_minute() -> None:
    now = 1_800_000_030.0  # half a minute into a minute
    fired: list[float] = []
    slept: list[float] = []

    def clock() -> float:
        return now

    async def fire(minute: float) -> None:
        fired.append(minute)
        if len(fired) == 2:
            raise RuntimeError("a database hiccup")  # the loop goes on
        if len(fired) == 4:
            raise asyncio.CancelledError

    async def sleep(seconds: float) -> None:
        nonlocal now
        slept.append(seconds)
        now += seconds

    with pytest.raises(asyncio.CancelledError):
        await run_scheduler(fire, clock=clock, sleep=sleep)
    assert fired == [1_800_000_000.0, 1_800_000_060.0, 1_800_000_120.0, 1_800_000_180.0]
    assert slept[0] == pytest.approx(30.01)
    assert slept[1:] == [pytest.approx(60.0)] * 2


async def test_a_cron_trigger_starts_one_build_per_due_minute_even_across_restarts(stack: Stack) -> None:
    await stack.pipeline("nightly", HELLO, variables={"FROM": "pipeline"})
    r = await stack.api(
        "POST",
        "/triggers",
        json={
            "pipeline": "nightly",
            "cron": "0 3 29 2 *",  # leap days only: the app's own scheduler will not fire it during the test
            "branch": "main",
            "message": "nightly",
            "variables": {"K": "v"},
        },
    )
    assert r.status_code == 201, r.text
    trigger = r.json()
    assert (trigger["kind"], trigger["endpoint"], trigger["secret"]) == ("cron", None, None)
    due = at("2028-02-29 03:00").timestamp()

    async with stack.services.tx() as session:
        assert await schedules.fire_cron(session, due - 60) == []  # 02:59: not due
    for _ in range(3):  # the same minute again, as after restarts of the control plane
        async with stack.services.tx() as session:
            started = await schedules.fire_cron(session, minute_of(due + 42))
        assert len(started) <= 1
    async with stack.services.tx() as session:
        builds = list(await session.scalars(select(Build)))
    assert len(builds) == 1
    build = await stack.build(builds[0].id)
    assert (build["trigger"], build["initiator"], build["branch"], build["trigger_id"]) == (
        "cron",
        "cron",
        "main",
        trigger["id"],
    )
    assert build["variables"] == {
        "FROM": "pipeline",
        "K": "v",
        "CF_BRANCH": "main",
        "EVENT_MESSAGE": "nightly",
        "EVENT_TIMESTAMP": "2028-02-29T03:00:00Z",
    }
    shown = (await stack.api("GET", f"/triggers/{trigger['id']}")).json()
    assert shown["last_fired_at"] == "2028-02-29T03:00:00.000Z"

    async with stack.services.tx() as session:
        assert await schedules.fire_cron(session, due + 86400) == []  # March 1st: not due
    async with stack.services.tx() as session:
        assert len(await schedules.fire_cron(session, at("2032-02-29 03:00").timestamp())) == 1  # the next leap day


async def test_a_disabled_cron_trigger_does_not_fire(stack: Stack) -> None:
    await stack.pipeline("nightly", HELLO)
    r = await stack.api("POST", "/triggers", json={"pipeline": "nightly", "cron": "* * * * *", "disabled": True})
    assert r.status_code == 201
    async with stack.services.tx() as session:
        assert await schedules.fire_cron(session, minute_of(at("2026-03-04 03:00").timestamp())) == []

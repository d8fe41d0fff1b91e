"""Cron triggers: the five-field expression and the loop that fires it once a minute.

Expressions are read in UTC: `minute hour day-of-month month day-of-week`, each `*`, a number, a range
`a-b`, a list `a,b`, a step `*/n` or `a-b/n`; months and weekdays may be names (`JAN`, `MON`), Sunday is
0 or 7, and `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` are shorthands. As in Vixie cron, when
both day fields are restricted a day matching either one fires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from outpost.errors import Invalid

log = logging.getLogger("outpost.cron")
TICK_TIMEOUT = 50.0  # seconds one minute's firing may take; the next minute's must not queue up behind it

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
WEEKDAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


FIELDS = (
    Field("minute", 0, 59, {}),
    Field("hour", 0, 23, {}),
    Field("day of month", 1, 31, {}),
    Field("month", 1, 12, {n: i for i, n in enumerate(MONTHS, start=1)}),
    Field("day of week", 0, 7, {n: i for i, n in enumerate(WEEKDAYS)}),
)


@dataclass(frozen=True)
class CronExpression:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # the day-of-month field was `*`
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Raises Invalid, naming the field, for anything that is not a valid expression."""
        expanded = SHORTHANDS.get(text.strip().lower(), text)
        parts = expanded.split()
        if len(parts) != 5:
            raise Invalid(f"cron expression {text!r} must have 5 fields (minute hour day month weekday)")
        values = [_parse_field(part, field, text) for part, field in zip(parts, FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in values[4])
        return cls(
            text=text,
            minutes=values[0],
            hours=values[1],
            days=values[2],
            months=values[3],
            weekdays=weekdays,
            any_day=parts[2].startswith("*"),
            any_weekday=parts[4].startswith("*"),
        )

    def matches(self, t: datetime) -> bool:
        """Whether the minute holding `t` (UTC) is one this expression fires on."""
        t = t.astimezone(UTC)
        return t.minute in self.minutes and t.hour in self.hours and t.month in self.months and self._day_matches(t)

    def next_after(self, t: datetime, *, within_days: int = 366 * 5) -> datetime | None:
        """The first minute strictly after `t` this expression fires on (None if none in `within_days`)."""
        candidate = t.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = candidate + timedelta(days=within_days)
        while candidate < end:
            if candidate.month not in self.months:
                candidate = _first_of_next_month(candidate)
            elif not self._day_matches(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
            elif candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        return None

    def _day_matches(self, t: datetime) -> bool:
        day = t.day in self.days
        weekday = (t.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday


def _first_of_next_month(t: datetime) -> datetime:
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.replace(year=year, month=month, day=1, hour=0, minute=0)


def _parse_field(text: str, field: Field, whole: str) -> frozenset[int]:
    out: set[int] = set()
    for item in text.split(","):
        out.update(_parse_item(item, field, whole))
    return frozenset(out)


def _parse_item(item: str, field: Field, whole: str) -> range:
    def bad(why: str) -> Invalid:
        return Invalid(f"cron expression {whole!r}: {field.name} {item!r} {why}")

    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise bad("has a step that is not a positive number")
        step = int(step_text)
    if base == "*":
        low, high = field.low, field.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, field, bad), _value(last, field, bad)
        if low > high:
            raise bad("is a range that ends before it starts")
    else:
        low = _value(base, field, bad)
        high = field.high if slash else low  # `5/15` means from 5 to the end, every 15
    return range(low, high + 1, step)


def _value(text: str, field: Field, bad: Callable[[str], Invalid]) -> int:
    upper = text.upper()
    if upper in field.names:
        return field.names[upper]
    if not text.isdigit():
        raise bad("is not a number" + (" or a name" if field.names else ""))
    value = int(text)
    if not field.low <= value <= field.high:
        raise bad(f"is out of range {field.low}-{field.high}")
    return value


def minute_of(t: float) -> float:
    """The start of the minute holding `t` (seconds since the epoch)."""
    return float(int(t // 60) * 60)


async def run_scheduler(
    fire: Callable[[float], Awaitable[object]],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Forever: call `fire(minute)` for the current minute, then sleep until the next one begins.

    The first call happens at once, so a control plane that restarts within a minute still fires it;
    `fire` itself must make sure a minute fires once (the store keeps each trigger's last fired minute).
    """
    while True:
        minute = minute_of(clock())
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancel that arrives as `fire` finishes,
            # and the scheduler would then outlive the control plane's shutdown.
            async with asyncio.timeout(TICK_TIMEOUT):
                await fire(minute)
        except Exception:  # a database hiccup must not end the scheduler
            log.exception("cron scheduler failed for %s; trying again next minute", minute)
        await sleep(max(0.0, minute + 60.0 - clock()) + 0.01)

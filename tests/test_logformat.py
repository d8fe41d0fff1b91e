"""--log-format json: one object per line whatever the message holds, naming the build, runner and account."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost import logformat


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    root = logging.getLogger()
    kept = (root.handlers[:], root.level)
    path = tmp_path / "outpost.log"
    logformat.configure(path, log_format="json")
    yield path
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = kept


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_multi_line_message_and_its_traceback_stay_one_json_object_on_one_line(log_file: Path) -> None:
    log = logging.getLogger("outpost.test")
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        log.exception("it failed:\n  héllo \u2603")
    [line] = lines(log_file)
    assert line["level"] == "error"
    assert line["logger"] == "outpost.test"
    assert line["message"] == "it failed:\n  héllo \u2603"
    assert "ValueError: first line\nsecond line" in str(line["exception"])
    assert str(line["time"]).endswith("+00:00")


async def test_a_task_started_in_a_builds_context_names_it_and_its_caller_does_not(log_file: Path) -> None:
    log = logging.getLogger("outpost.test")
    token = logformat.RUNNER_ID.set("r1")
    try:

        async def build() -> None:
            log.info("in the build")

        await asyncio.create_task(build(), context=logformat.context(build_id="b1", account="acme"))
        log.info("in the runner")
        log.info("told explicitly", extra={"build_id": "b2"})
    finally:
        logformat.RUNNER_ID.reset(token)
    inside, outside, explicit = lines(log_file)
    assert (inside["build_id"], inside["runner_id"], inside["account"]) == ("b1", "r1", "acme")
    assert "build_id" not in outside
    assert outside["runner_id"] == "r1"
    assert explicit["build_id"] == "b2"


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of text, json"):
        logformat.configure(None, log_format="xml")

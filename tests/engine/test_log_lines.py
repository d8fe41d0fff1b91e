"""What the build log looks like to a person: `[outpost]` lines on lines of their own (no blank lines), no word
about hooks a pipeline does not have, and the YAML's warnings where the build's own log starts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from outpost.engine import BuildEngine
from outpost.executors.local import LocalExecutor
from outpost.wire import SYSTEM_STREAM
from tests.engine.recorder import Recorder
from tests.engine.test_engine import context, run, steps


async def test_an_outpost_line_after_a_full_line_of_output_follows_it_without_a_blank_line(tmp_path: Path) -> None:
    _, rec = await run(tmp_path, steps("  fails:\n    image: x\n    commands: [echo before, exit 3]\n"))
    assert rec.text("fails").startswith("before\n[outpost] ")
    assert "\n\n" not in rec.text("fails")


async def test_an_outpost_line_after_an_unfinished_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    _, rec = await run(tmp_path, steps("  fails:\n    image: x\n    commands: ['printf half', exit 3]\n"))
    assert rec.text("fails").startswith("half\n[outpost] ")


async def test_retry_notes_are_not_preceded_by_blank_lines(tmp_path: Path) -> None:
    yaml = steps("  flaky:\n    image: x\n    retry: {maxAttempts: 2, delay: 0}\n    commands: [echo try, exit 1]\n")
    _, rec = await asyncio.wait_for(run(tmp_path, yaml), 20)
    log = rec.text("flaky")
    assert log.count("[outpost] attempt 1 of 2 failed") == 1
    assert "\n\n" not in log


async def _cancelled(tmp_path: Path, yaml: str) -> str:
    started = tmp_path / "started"
    recorder = Recorder()
    ctx = context(tmp_path, yaml.replace("STARTED", str(started)))
    engine = BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder)
    running = asyncio.create_task(engine.run())
    while not started.exists():
        await asyncio.sleep(0.05)
    engine.cancel("cancel requested")
    await asyncio.wait_for(running, 15)
    return recorder.text(SYSTEM_STREAM)


async def test_a_cancelled_build_without_hooks_says_nothing_about_hooks(tmp_path: Path) -> None:
    log = await _cancelled(tmp_path, steps("  long:\n    image: x\n    commands: [touch STARTED, sleep 60]\n"))
    assert "hooks" not in log


async def test_a_cancelled_build_with_hooks_says_they_do_not_run(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nhooks:\n  on_finish:\n    exec:\n      image: x\n      commands: [echo finished]\n"
        "steps:\n  long:\n    image: x\n    commands: [touch STARTED, sleep 60]\n"
    )
    log = await _cancelled(tmp_path, yaml)
    assert "hooks after the steps do not run: the build was terminated" in log


async def test_the_build_log_starts_with_the_yaml_warnings_at_their_lines(tmp_path: Path) -> None:
    outcome, rec = await run(tmp_path, steps("  typo:\n    image: x\n    comands: [echo never]\n"))
    assert outcome.status == "success"  # tolerated, as the original does
    said = "codefresh.yml:5:5: warning: step 'typo': unknown field 'comands' — did you mean 'commands'?"
    assert said in rec.text(SYSTEM_STREAM)

"""A restart from the failed step in the engine: the steps that succeeded are skipped (and count as successful for
conditions), parallel children are judged one by one, and a clone that checks out another revision stops the
skipping."""

from __future__ import annotations

from pathlib import Path

from outpost.engine import BuildEngine, BuildOutcome
from outpost.engine.restart import Restart
from outpost.engine.state import BuildState
from outpost.executors.local import LocalExecutor
from outpost.pipelines.spec import Location, Step
from tests.engine.recorder import Recorder
from tests.engine.test_engine import context

FLAKY = """version: '1.0'
steps:
  prepare:
    image: alpine
    commands: [echo prepared > made.txt]
  checks:
    type: parallel
    steps:
      lint:
        image: alpine
        commands: [echo linted]
      unit:
        image: alpine
        commands: [cat made.txt]
  report:
    image: alpine
    commands: [echo reported]
    when:
      steps:
        - name: prepare
          on: [success]
"""


async def test_the_steps_that_succeeded_are_skipped_and_count_as_successful_for_conditions(tmp_path: Path) -> None:
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "made.txt").write_text("left by the original\n")
    recorder = Recorder()
    ctx = context(tmp_path, FLAKY)
    ctx.restart = Restart("#7", frozenset({"prepare", "lint", "checks"}), note="restarted from #7")
    outcome = await BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder).run()

    assert outcome == BuildOutcome("success")
    final = {name: update for name, update in recorder.updates if update.status != "running"}
    assert final["prepare"].status == final["lint"].status == "skipped"
    assert final["prepare"].message == "succeeded in #7: not run again (restarted from the failed step, on its volume)"
    assert final["unit"].status == final["checks"].status == final["report"].status == "success"
    assert recorder.text("unit") == "left by the original\n"  # the volume the original left, not made again
    assert "prepare" not in {name for name, update in recorder.updates if update.status == "running"}
    assert "[outpost] restarted from #7\n" in recorder.text("$system")


def clone_step(name: str) -> Step:
    return Step(name=name, type="git-clone", fields={}, location=Location(1, 1))


def test_a_clone_that_checks_out_another_revision_stops_the_skipping() -> None:
    restart = Restart("#7", frozenset({"build"}), clones={"main_clone": "a" * 40})
    build = Step(name="build", type="freestyle", fields={}, location=Location(1, 1))
    state = BuildState(Path("/nowhere"))

    state.members["steps.main_clone.revision"] = "a" * 40
    assert restart.after_clone(clone_step("main_clone"), state) is None
    assert restart.skip(build) is not None
    state.members["steps.main_clone.revision"] = "b" * 40
    note = restart.after_clone(clone_step("main_clone"), state)

    assert note == f"main_clone checked out {'b' * 12}, not {'a' * 12} as in #7: every later step runs"
    assert restart.skip(build) is None
    assert restart.skip(clone_step("main_clone")) is None  # clones always run again

"""The engine running real pipelines on the local executor, reporting to a recorder."""

from __future__ import annotations

import asyncio
import os
from dataclasses import fields
from pathlib import Path

import pytest

from outpost.engine import BuildContext, BuildEngine, BuildOutcome
from outpost.executors.local import LocalExecutor
from outpost.wire import SYSTEM_STREAM, GitAccess, PipelineSource, RegistryAccess, RunBuildTask
from tests.engine.recorder import Recorder


def context(tmp_path: Path, yaml: str, **variables: str) -> BuildContext:
    return BuildContext(
        build_id="b123",
        account="acme",
        pipeline="demo",
        yaml=yaml,
        volume=tmp_path / "volume",
        scratch=tmp_path / "scratch",
        variables=dict(variables),
        build_url="http://cp/builds/b123",
        created_at=1_700_000_000.5,
        initiator="alice",
    )


async def run(tmp_path: Path, yaml: str, **variables: str) -> tuple[BuildOutcome, Recorder]:
    recorder = Recorder()
    ctx = context(tmp_path, yaml, **variables)
    outcome = await BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder).run()
    return outcome, recorder


def steps(body: str) -> str:
    return "version: '1.0'\nsteps:\n" + body


async def test_steps_run_in_order_and_report_their_states(tmp_path: Path) -> None:
    outcome, rec = await run(
        tmp_path,
        steps(
            "  first:\n    image: alpine\n    commands: [echo one]\n"
            "  second:\n    image: alpine\n    commands: [echo two]\n"
        ),
    )
    assert outcome == BuildOutcome("success")
    assert [p.name for p in rec.plans[0].steps] == ["first", "second"]
    assert [(n, u.status) for n, u in rec.updates] == [
        ("first", "running"),
        ("first", "success"),
        ("second", "running"),
        ("second", "success"),
    ]
    assert rec.text("first") == "one\n"
    assert rec.text("second") == "two\n"


async def test_the_image_is_ignored_and_the_log_says_so_once(tmp_path: Path) -> None:
    _, rec = await run(
        tmp_path,
        steps("  a:\n    image: alpine:3\n    commands: [true]\n  b:\n    image: debian\n    commands: [true]\n"),
    )
    system = rec.text(SYSTEM_STREAM)
    assert system.count("ignores image") == 1
    assert "alpine:3" in system


async def test_variables_are_substituted_and_exported_to_the_environment(tmp_path: Path) -> None:
    yaml = steps(
        "  show:\n    image: x\n    commands:\n"
        "      - echo \"yaml=${{NAME}} env=$NAME\" 'missing=${{NOPE}}'\n"
        '      - echo "$CF_BUILD_ID $CF_PIPELINE_NAME $CF_ACCOUNT $CF_STEP_NAME $CF_BUILD_INITIATOR $CI"\n'
        '      - echo "$CF_BUILD_URL $CF_BUILD_TRIGGER $CF_BUILD_TIMESTAMP"\n'
        '      - test "$CF_VOLUME_PATH" = "$(pwd)"\n'
    )
    outcome, rec = await run(tmp_path, yaml, NAME="world")
    assert outcome.status == "success", rec.text("show")
    lines = rec.text("show").splitlines()
    assert lines[0] == "yaml=world env=world missing=${{NOPE}}"
    assert lines[1] == "b123 demo acme show alice true"
    assert lines[2].startswith("http://cp/builds/b123 build ")


async def test_runner_secrets_do_not_leak_into_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_RUNNER_TOKEN", "opr_secret")
    outcome, rec = await run(tmp_path, steps("  env:\n    image: x\n    commands: [env]\n"))
    assert outcome.status == "success"
    assert "opr_secret" not in rec.text("env")


async def test_cf_export_reaches_later_steps_only(tmp_path: Path) -> None:
    yaml = steps(
        "  produce:\n    image: x\n    commands:\n"
        "      - cf_export VERSION=1.2.3 'GREETING=hello world'\n"
        "      - 'echo \"same step sees [${VERSION:-}]\"'\n"
        "  consume:\n    image: x\n    commands:\n"
        '      - echo "${{VERSION}} / $GREETING"\n'
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success", rec.logs
    assert "same step sees []" in rec.text("produce")
    assert rec.text("consume") == "1.2.3 / hello world\n"


async def test_writing_the_export_file_directly_works_like_cf_export(tmp_path: Path) -> None:
    yaml = steps(
        "  produce:\n    image: x\n    commands:\n"
        "      - echo TAG=v7 >> ${{CF_VOLUME_PATH}}/env_vars_to_export\n"
        "  consume:\n    image: x\n    commands: ['echo $TAG']\n"
    )
    _, rec = await run(tmp_path, yaml)
    assert rec.text("consume") == "v7\n"


async def test_environment_and_working_directory_apply_to_the_step(tmp_path: Path) -> None:
    yaml = steps(
        "  prep:\n    image: x\n    commands: [mkdir -p sub/dir]\n"
        "  inside:\n    image: x\n    working_directory: sub/dir\n"
        "    environment: [COLOUR=blue, 'GREETING=hi ${{WHO}}']\n"
        "    commands: ['echo $COLOUR $GREETING', pwd]\n"
        "  aliased:\n    image: x\n    working_directory: /codefresh/volume/sub\n    commands: [pwd]\n"
    )
    outcome, rec = await run(tmp_path, yaml, WHO="bob")
    assert outcome.status == "success", rec.logs
    volume = (tmp_path / "volume").resolve()
    assert rec.text("inside") == f"blue hi bob\n{volume / 'sub' / 'dir'}\n"
    assert rec.text("aliased") == f"{volume / 'sub'}\n"


async def test_a_failing_step_fails_the_build_and_skips_the_rest(tmp_path: Path) -> None:
    yaml = steps(
        "  ok:\n    image: x\n    commands: [echo fine]\n"
        "  bad:\n    image: x\n    commands: [echo before, 'exit 3', echo after]\n"
        "  never:\n    image: x\n    commands: [echo never]\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome == BuildOutcome("failure", "step bad failed")
    assert rec.final("bad").status == "failure"
    assert rec.final("bad").exit_code == 3
    assert rec.text("bad").startswith("before\n")
    assert "after" not in rec.text("bad")
    assert rec.final("never").status == "skipped"
    assert "never" not in rec.logs


async def test_fail_fast_false_lets_the_build_go_on_and_succeed(tmp_path: Path) -> None:
    yaml = steps(
        "  bad:\n    image: x\n    fail_fast: false\n    commands: ['exit 1']\n"
        "  next:\n    image: x\n    commands: [echo still here]\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success"
    assert rec.final("bad").status == "failure"
    assert rec.text("next") == "still here\n"


async def test_strict_fail_fast_turns_a_tolerated_failure_into_a_failed_build(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nstrict_fail_fast: true\nsteps:\n"
        "  bad:\n    image: x\n    fail_fast: false\n    commands: ['exit 1']\n"
        "  next:\n    image: x\n    commands: [echo ran]\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "failure"
    assert rec.text("next") == "ran\n"


async def test_fail_fast_can_come_from_a_variable(tmp_path: Path) -> None:
    yaml = steps(
        "  bad:\n    image: x\n    fail_fast: ${{STOP}}\n    commands: ['exit 1']\n"
        "  next:\n    image: x\n    commands: [echo ran]\n"
    )
    outcome, _ = await run(tmp_path, yaml, STOP="false")
    assert outcome.status == "success"
    outcome, _ = await run(tmp_path / "2", yaml, STOP="true")
    assert outcome.status == "failure"


async def test_a_step_past_its_timeout_is_stopped_and_fails(tmp_path: Path) -> None:
    yaml = steps("  slow:\n    image: x\n    timeout: 1s\n    commands: [echo start, sleep 30]\n")
    outcome, rec = await asyncio.wait_for(run(tmp_path, yaml), 20)
    assert outcome.status == "failure"
    assert rec.final("slow").message == "step timed out after 1s"
    assert "timed out" in rec.text("slow")


async def test_cancel_terminates_the_running_step_and_its_processes(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    yaml = steps(f"  long:\n    image: x\n    commands: ['sleep 300 & echo $! > {pidfile}; wait']\n")
    recorder = Recorder()
    ctx = context(tmp_path, yaml)
    engine = BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder)
    running = asyncio.create_task(engine.run())
    while not pidfile.exists() or not pidfile.read_text().strip():
        await asyncio.sleep(0.05)
    pid = int(pidfile.read_text())
    engine.cancel("cancel requested")
    outcome = await asyncio.wait_for(running, 15)
    assert outcome == BuildOutcome("terminated", "cancel requested")
    assert recorder.final("long").status == "terminated"
    assert not _alive(pid)


async def test_an_unsupported_step_type_ends_with_a_clear_error(tmp_path: Path) -> None:
    yaml = steps("  image:\n    type: build\n    image_name: acme/app\n")
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "failure"
    final = rec.final("image")
    assert final.status == "error"
    assert "not supported by this runner's executor (local)" in (final.message or "")


async def test_an_invalid_pipeline_ends_the_build_as_error_with_its_problems(tmp_path: Path) -> None:
    outcome, rec = await run(tmp_path, "version: '1.0'\nsteps:\n  a:\n    commands: [echo]\n")
    assert outcome.status == "error"
    assert "codefresh.yml:" in (outcome.message or "")
    assert "invalid" in rec.text(SYSTEM_STREAM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every practical purpose.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


async def test_secrets_are_usable_but_masked_in_every_log(tmp_path: Path) -> None:
    yaml = steps(
        "  use:\n    image: x\n    commands:\n"
        '      - echo "key=${{API_KEY}} env=$API_KEY"\n'
        "      - printf 'split s3cr3'; printf 't-value\\n'\n"
        '      - test "$API_KEY" = s3cr3t-value\n'
    )
    recorder = Recorder()
    ctx = context(tmp_path, yaml)
    ctx.secrets = {"API_KEY": "s3cr3t-value"}
    outcome = await BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder).run()
    assert outcome.status == "success", recorder.logs
    assert recorder.text("use") == "key=***** env=*****\nsplit *****\n"


async def test_cf_export_mask_hides_the_value_in_later_logs(tmp_path: Path) -> None:
    yaml = steps(
        "  make:\n    image: x\n    commands: ['cf_export TOKEN=tok-12345 --mask']\n"
        "  show:\n    image: x\n    commands: ['echo token is $TOKEN']\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success", rec.logs
    assert rec.text("make") == "Exporting TOKEN\n"
    assert rec.text("show") == "token is *****\n"


# What the runner keeps to itself (`resume` becomes the context's `restart` once the runner has looked at its volume).
RUNNER_ALONE = {"kind", "lease_id", "lease_ttl", "job_token", "source", "resume"}


def test_a_build_context_made_from_a_task_holds_all_the_task_says_of_the_build(tmp_path: Path) -> None:
    task = RunBuildTask(
        build_id="b1",
        lease_id="l1",
        lease_ttl=30,
        job_token="jt",
        account="acme",
        pipeline="demo",
        yaml="version: '1.0'\nsteps: {}\n",
        yaml_file="ci/build.yml",
        variables={"A": "1"},
        secrets={"TOKEN": "s3cret"},
        build_url="http://cp/builds/b1",
        created_at=1_700_000_000.5,
        trigger="webhook",
        initiator="alice",
        branch="main",
        revision="0123456789abcdef0123456789abcdef01234567",
        event={"ref": "refs/heads/main"},
        integrations={"gh": GitAccess(name="gh", provider="github", url="https://github.com")},
        registries={"hub": RegistryAccess(name="hub", domain="registry.example:5000")},
        source=PipelineSource(repo="acme/app"),
    )
    ctx = BuildContext.from_task(
        task, volume=tmp_path / "v", scratch=tmp_path / "s", runner="r1", runner_secrets={"GIT": "pw"}
    )
    of_the_build = RunBuildTask.model_fields.keys() - RUNNER_ALONE
    assert of_the_build <= {f.name for f in fields(BuildContext)}  # a new field of the task reaches the engine
    assert {name: getattr(ctx, name) for name in of_the_build} == {name: getattr(task, name) for name in of_the_build}
    assert (ctx.volume, ctx.scratch, ctx.runner, dict(ctx.runner_secrets)) == (
        tmp_path / "v",
        tmp_path / "s",
        "r1",
        {"GIT": "pw"},
    )
    ctx.variables["CF_BRANCH"] = "main"  # the engine adds to its copies, never to the task
    assert task.variables == {"A": "1"}

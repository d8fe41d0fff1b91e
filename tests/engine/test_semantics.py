"""Pipeline semantics on the local executor: conditions, parallel steps and mode, retries, hooks,
success criteria, timeouts and approvals. Every pipeline here really runs its shell commands."""

from __future__ import annotations

import asyncio
from pathlib import Path

from outpost.engine import BuildContext, BuildEngine, BuildOutcome
from outpost.executors.local import LocalExecutor
from outpost.wire import SYSTEM_STREAM
from tests import gitserver
from tests.engine.recorder import Recorder
from tests.gitserver import GitHttpServer, Upstream

git_root, upstream, upstream_template = gitserver.git_root, gitserver.upstream, gitserver.upstream_template
http_git_auth = gitserver.http_git_auth

WAIT_FOR = "i=0; while [ ! -e {f} ]; do i=$((i+1)); [ $i -lt 200 ] || exit 9; sleep 0.05; done"


def context(tmp_path: Path, yaml: str, *, branch: str | None = None, **variables: str) -> BuildContext:
    return BuildContext(
        build_id="b1",
        account="acme",
        pipeline="demo",
        yaml=yaml,
        volume=tmp_path / "volume",
        scratch=tmp_path / "scratch",
        variables=dict(variables),
        branch=branch,
    )


async def run(tmp_path: Path, yaml: str, **kw: str | None) -> tuple[BuildOutcome, Recorder]:
    recorder = Recorder()
    ctx = context(tmp_path, yaml, **kw)  # type: ignore[arg-type]
    engine = BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder)
    outcome = await asyncio.wait_for(engine.run(), 60)
    return outcome, recorder


def order(tmp_path: Path) -> list[str]:
    path = tmp_path / "volume" / "order"
    return path.read_text().split() if path.exists() else []


def mark(word: str) -> str:
    return f"echo {word} >> ${{{{CF_VOLUME_PATH}}}}/order"


def statuses(rec: Recorder) -> dict[str, str]:
    return {name: rec.final(name).status for name, _ in rec.updates}


# --- when ----------------------------------------------------------------------------------------


async def test_branch_conditions_run_or_skip_steps_and_say_why(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  only_main:\n    image: x\n    commands: [echo main]\n    when: {branch: {only: [main]}}\n"
        "  not_feature:\n    image: x\n    commands: [echo nf]\n    when: {branch: {ignore: ['/^feature-/i']}}\n"
        "  release:\n    image: x\n    commands: [echo rel]\n    when: {branch: {only: ['/^release/']}}\n"
    )
    outcome, rec = await run(tmp_path, yaml, branch="Feature-42")
    assert outcome.status == "success"
    assert statuses(rec) == {"only_main": "skipped", "not_feature": "skipped", "release": "skipped"}
    assert "Feature-42" in (rec.final("only_main").message or "")
    outcome, rec = await run(tmp_path / "2", yaml, branch="main")
    assert statuses(rec) == {"only_main": "success", "not_feature": "success", "release": "skipped"}


async def test_conditions_see_variables_and_earlier_results(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  first:\n    image: x\n    fail_fast: false\n    commands: ['exit 1']\n"
        "  on_failure:\n    image: x\n    commands: [echo recovering]\n"
        '    when: {condition: {all: {failed: \'"${{steps.first.result}}" == "failure"\'}}}\n'
        "  when_var:\n    image: x\n    commands: [echo deploying]\n"
        "    when: {condition: {any: {isProd: '\"${{ENV}}\" == \"prod\"', forced: '${{FORCE}} == true'}}}\n"
        "  garbage:\n    image: x\n    commands: [echo never]\n"
        "    when: {condition: {all: {broken: '1 + \"a\" == 2'}}}\n"
    )
    outcome, rec = await run(tmp_path, yaml, ENV="staging", FORCE="true")
    assert outcome.status == "success"
    assert statuses(rec) == {"first": "failure", "on_failure": "success", "when_var": "success", "garbage": "skipped"}
    assert rec.text("on_failure") == "recovering\n"
    assert "broken" in (rec.final("garbage").message or "")


async def test_steps_conditions_follow_the_states_of_other_steps(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  a:\n    image: x\n    fail_fast: false\n    commands: ['exit 2']\n"
        "  after_fail:\n    image: x\n    commands: [echo yes]\n    when: {steps: [{name: a, on: [failure]}]}\n"
        "  after_ok:\n    image: x\n    commands: [echo no]\n    when: {steps: [{name: a, on: [success]}]}\n"
        "  after_any:\n    image: x\n    commands: [echo fin]\n    when: {steps: [{name: a, on: [finished]}]}\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success"
    assert statuses(rec) == {"a": "failure", "after_fail": "success", "after_ok": "skipped", "after_any": "success"}


# --- parallel --------------------------------------------------------------------------------------


async def test_a_parallel_step_starts_its_children_together(tmp_path: Path) -> None:
    # Each child waits for the other's start mark: they can only both succeed if they overlap.
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  both:\n    type: parallel\n    steps:\n"
        f"      left:\n        image: x\n        commands: [touch L, '{WAIT_FOR.format(f='R')}', '{mark('left')}']\n"
        f"      right:\n        image: x\n        commands: [touch R, '{WAIT_FOR.format(f='L')}', '{mark('right')}']\n"
        f"  after:\n    image: x\n    commands: ['{mark('after')}']\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success", rec.logs
    assert sorted(order(tmp_path)[:2]) == ["left", "right"]
    assert order(tmp_path)[2] == "after"
    assert [p.parent for p in rec.plans[0].steps] == [None, "both", "both", None]


async def test_a_failing_child_fails_the_parallel_step_unless_fail_fast_is_false(tmp_path: Path) -> None:
    body = (
        "  group:\n    type: parallel\n{extra}    steps:\n"
        "      good:\n        image: x\n        commands: [echo ok]\n"
        "      bad:\n        image: x\n        commands: ['exit 4']\n"
        "  next:\n    image: x\n    commands: [echo next]\n"
    )
    outcome, rec = await run(tmp_path, "version: '1.0'\nsteps:\n" + body.format(extra=""))
    assert outcome == BuildOutcome("failure", "step group failed")
    assert statuses(rec) == {"group": "failure", "good": "success", "bad": "failure", "next": "skipped"}
    outcome, rec = await run(tmp_path / "2", "version: '1.0'\nsteps:\n" + body.format(extra="    fail_fast: false\n"))
    assert outcome.status == "success"
    assert statuses(rec)["group"] == "success"
    assert statuses(rec)["next"] == "success"


async def test_success_criteria_choose_which_children_count(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  group:\n    type: parallel\n"
        "    success_criteria: {steps: {ignore: [flaky]}}\n    steps:\n"
        "      solid:\n        image: x\n        commands: [echo ok]\n"
        "      flaky:\n        image: x\n        commands: ['exit 1']\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success"
    assert statuses(rec) == {"group": "success", "solid": "success", "flaky": "failure"}


async def test_parallel_mode_runs_steps_as_their_conditions_allow(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nmode: parallel\nsteps:\n"
        f"  clone:\n    image: x\n    commands: ['{mark('clone')}']\n"
        f"  unit:\n    image: x\n    commands: [touch U, '{WAIT_FOR.format(f='I')}', '{mark('unit')}']\n"
        "    when: {steps: [{name: clone, on: [success]}]}\n"
        f"  integ:\n    image: x\n    commands: [touch I, '{WAIT_FOR.format(f='U')}', '{mark('integ')}']\n"
        "    when: {steps: [{name: clone, on: [success]}]}\n"
        f"  deploy:\n    image: x\n    commands: ['{mark('deploy')}']\n"
        "    when: {steps: {all: [{name: unit, on: [success]}, {name: integ, on: [success]}]}}\n"
        f"  rollback:\n    image: x\n    commands: ['{mark('rollback')}']\n"
        "    when: {steps: {any: [{name: unit, on: [failure]}, {name: integ, on: [failure]}]}}\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success", rec.logs
    got = order(tmp_path)
    assert got[0] == "clone"
    assert sorted(got[1:3]) == ["integ", "unit"]
    assert got[3:] == ["deploy"]
    assert statuses(rec)["rollback"] == "skipped"


async def test_parallel_mode_fail_fast_stops_the_rest(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nmode: parallel\nsteps:\n"
        "  breaks:\n    image: x\n    commands: ['exit 1']\n"
        "  waits:\n    image: x\n    commands: [echo never]\n"
        "    when: {steps: [{name: breaks, on: [success]}]}\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome == BuildOutcome("failure", "step breaks failed")
    assert statuses(rec) == {"breaks": "failure", "waits": "skipped"}


async def test_matrix_and_scale_run_every_variant(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  test:\n    image: x\n    commands: ['echo $FLAVOUR-$CGO >> ${{CF_VOLUME_PATH}}/variants']\n"
        "    matrix:\n      environment: [[FLAVOUR=a, CGO=1], [FLAVOUR=b, CGO=0]]\n"
        "  scaled:\n    image: x\n    environment: [BASE=1]\n"
        "    commands: ['echo $BASE$EXTRA >> ${{CF_VOLUME_PATH}}/scaled']\n"
        "    scale:\n      first:\n        environment: [EXTRA=x]\n      second:\n        environment: [EXTRA=y]\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success", rec.logs
    assert sorted((tmp_path / "volume" / "variants").read_text().split()) == ["a-1", "b-0"]
    assert sorted((tmp_path / "volume" / "scaled").read_text().split()) == ["1x", "1y"]
    assert [(p.name, p.parent) for p in rec.plans[0].steps] == [
        ("test", None),
        ("test_1", "test"),
        ("test_2", "test"),
        ("scaled", None),
        ("first", "scaled"),
        ("second", "scaled"),
    ]


async def test_a_parallel_steps_timeout_reaches_its_children(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  group:\n    type: parallel\n    timeout: 1s\n    steps:\n"
        "      slow:\n        image: x\n        commands: [sleep 30]\n"
        "      unlimited:\n        image: x\n        timeout: null\n        commands: [sleep 2, echo done]\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "failure"
    assert rec.final("slow").message == "step timed out after 1s"
    assert rec.final("unlimited").status == "success"


# --- retry -----------------------------------------------------------------------------------------


async def test_retry_runs_again_with_growing_delays_and_attempt_variables(tmp_path: Path) -> None:
    stamp = "date +%s.%N >> ${{CF_VOLUME_PATH}}/stamps"
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  flaky:\n    image: x\n    retry: {maxAttempts: 3, delay: 1, exponentialFactor: 2}\n    commands:\n"
        f"      - {stamp}\n"
        "      - echo attempt $CF_CURRENT_ATTEMPT of $CF_MAX_ATTEMPTS\n"
        "      - test $CF_CURRENT_ATTEMPT -eq 3\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success", rec.logs
    stamps = [float(s) for s in (tmp_path / "volume" / "stamps").read_text().split()]
    assert len(stamps) == 3
    assert stamps[1] - stamps[0] >= 1.0
    assert stamps[2] - stamps[1] >= 2.0
    log = rec.text("flaky")
    assert "attempt 1 of 3" in log
    assert "attempt 3 of 3" in log
    assert "retrying in 1s" in log
    assert "retrying in 2s" in log


async def test_retry_gives_up_after_max_attempts(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  never:\n    image: x\n    retry: {maxAttempts: 2, delay: 0}\n    commands: ['exit 5']\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "failure"
    assert rec.final("never").exit_code == 5
    assert rec.text("never").count("retrying") == 1


# --- hooks -----------------------------------------------------------------------------------------


async def test_pipeline_and_step_hooks_run_in_order(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\n"
        "hooks:\n"
        f"  on_elected: {{exec: {{image: alpine, commands: ['{mark('p-elected')}']}}}}\n"
        f"  on_success: {{exec: ['{mark('p-success')}']}}\n"
        f"  on_fail: {{exec: ['{mark('p-fail')}']}}\n"
        f"  on_finish: {{exec: ['{mark('p-finish')}']}}\n"
        "steps:\n"
        "  work:\n    image: x\n"
        f"    commands: ['{mark('work')}']\n"
        "    hooks:\n"
        f"      on_elected: {{exec: ['{mark('s-elected')}']}}\n"
        f"      on_success: {{exec: ['{mark('s-success')}']}}\n"
        f"      on_fail: {{exec: ['{mark('s-fail')}']}}\n"
        f"      on_finish: {{exec: ['{mark('s-finish')}']}}\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome.status == "success", rec.logs
    assert order(tmp_path) == ["p-elected", "s-elected", "work", "s-success", "s-finish", "p-success", "p-finish"]
    assert "hook on_finish: success" in rec.text(SYSTEM_STREAM)


async def test_a_failing_build_runs_on_fail_and_a_failing_hook_does_not_change_it(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\n"
        f"hooks:\n  on_fail: {{exec: ['{mark('p-fail')}', 'exit 1']}}\n  on_finish: {{exec: ['{mark('p-finish')}']}}\n"
        "steps:\n  boom:\n    image: x\n    commands: ['exit 1']\n"
    )
    outcome, _ = await run(tmp_path, yaml)
    assert outcome == BuildOutcome("failure", "step boom failed")
    assert order(tmp_path) == ["p-fail", "p-finish"]
    yaml = (
        "version: '1.0'\n"
        f"hooks:\n  on_success: {{exec: ['exit 1']}}\n  on_finish: {{exec: ['{mark('p-finish')}']}}\n"
        "steps:\n  fine:\n    image: x\n    commands: [true]\n"
    )
    outcome, _ = await run(tmp_path / "2", yaml)
    assert outcome.status == "success"


async def test_a_failing_on_elected_hook_fails_the_build_before_any_step(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nhooks:\n  on_elected: {exec: ['exit 3']}\n"
        f"  on_fail: {{exec: ['{mark('p-fail')}']}}\n"
        f"steps:\n  never:\n    image: x\n    commands: ['{mark('never')}']\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome == BuildOutcome("failure", "the pipeline's on_elected hook failed")
    assert rec.final("never").status == "skipped"
    assert order(tmp_path) == ["p-fail"]
    tolerant = yaml.replace("on_elected: {exec: ['exit 3']}", "on_elected: {exec: ['exit 3'], fail_fast: false}")
    outcome, _ = await run(tmp_path / "2", tolerant)
    assert outcome.status == "success"


# --- approvals -------------------------------------------------------------------------------------


async def approval_build(tmp_path: Path, yaml: str) -> tuple[BuildEngine, Recorder, asyncio.Task[BuildOutcome]]:
    recorder = Recorder()
    ctx = context(tmp_path, yaml)
    engine = BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder)
    task = asyncio.create_task(engine.run())
    for _ in range(400):
        if any(u.status == "pending-approval" for _, u in recorder.updates):
            break
        await asyncio.sleep(0.025)
    else:
        raise AssertionError(f"the build never waited for approval: {recorder.updates}")
    return engine, recorder, task


APPROVAL = (
    "version: '1.0'\nsteps:\n"
    "  gate:\n    type: pending-approval\n{extra}"
    "  yes:\n    image: x\n    commands: [echo approved-path]\n    when: {{steps: [{{name: gate, on: [approved]}}]}}\n"
    "  no:\n    image: x\n    commands: [echo denied-path]\n    when: {{steps: [{{name: gate, on: [denied]}}]}}\n"
)


async def test_an_approval_step_waits_and_an_approval_lets_the_build_go_on(tmp_path: Path) -> None:
    engine, rec, task = await approval_build(tmp_path, APPROVAL.format(extra=""))
    assert not task.done()
    assert engine.decide("gate", "approved", "alice")
    assert not engine.decide("gate", "denied", "bob")  # the first answer stands
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.status == "success"
    assert rec.final("gate").status == "approved"
    assert rec.final("gate").message == "approved by alice"
    assert statuses(rec)["yes"] == "success"
    assert statuses(rec)["no"] == "skipped"


async def test_a_denial_fails_the_build_unless_fail_fast_is_false(tmp_path: Path) -> None:
    engine, rec, task = await approval_build(tmp_path, APPROVAL.format(extra=""))
    engine.decide("gate", "denied", "bob")
    outcome = await asyncio.wait_for(task, 30)
    assert outcome == BuildOutcome("failure", "step gate failed")
    engine, rec, task = await approval_build(tmp_path / "2", APPROVAL.format(extra="    fail_fast: false\n"))
    engine.decide("gate", "denied", "bob")
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.status == "success"
    assert statuses(rec)["no"] == "success"
    assert statuses(rec)["yes"] == "skipped"


async def test_an_unanswered_approval_takes_its_final_state(tmp_path: Path) -> None:
    # 0.02 minutes = 1.2 s
    timeout = "    fail_fast: false\n    timeout: {{duration: 0.02, timeUnit: minutes, finalState: {state}}}\n"
    _, rec, task = await approval_build(tmp_path, APPROVAL.format(extra=timeout.format(state="approved")))
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.status == "success"
    assert rec.final("gate").status == "approved"
    assert "no answer within 1.2s" in (rec.final("gate").message or "")
    _, rec, task = await approval_build(tmp_path / "2", APPROVAL.format(extra=timeout.format(state="terminated")))
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.status == "terminated"
    assert statuses(rec)["yes"] == "skipped"


async def test_cancel_ends_a_build_waiting_for_approval(tmp_path: Path) -> None:
    engine, rec, task = await approval_build(tmp_path, APPROVAL.format(extra=""))
    engine.cancel("cancel requested")
    outcome = await asyncio.wait_for(task, 30)
    assert outcome == BuildOutcome("terminated", "cancel requested")
    assert rec.final("gate").status == "terminated"


async def test_the_branch_and_revision_asked_for_are_variables_and_drive_branch_conditions(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  show:\n    image: x\n    commands: ['echo $CF_BRANCH $CF_BRANCH_TAG_NORMALIZED ${{CF_SHORT_REVISION}}']\n"
        "    when: {branch: {only: ['/^feature//']}}\n"
    )
    recorder = Recorder()
    ctx = context(tmp_path, yaml, branch="feature/Login")
    ctx.revision = "0123456789abcdef0123456789abcdef01234567"
    outcome = await BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder).run()
    assert outcome.status == "success", recorder.logs
    assert recorder.text("show") == "feature/Login featureLogin 0123456\n"


# --- git-clone in a pipeline ---------------------------------------------------------------------


async def test_a_main_clone_checkout_is_where_later_steps_run_with_its_git_variables(
    tmp_path: Path, upstream: Upstream, http_git_auth: GitHttpServer
) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  main_clone:\n    type: git-clone\n"
        f"    repo: {http_git_auth.url}/acme/app.git\n    revision: feature/login\n"
        "    credentials: {username: robot, password: '${{GIT_PASSWORD}}'}\n"
        "  inside:\n    image: x\n    commands:\n"
        "      - pwd\n      - test -f login.html\n"
        '      - echo $CF_REPO_OWNER/$CF_REPO_NAME $CF_BRANCH $CF_SHORT_REVISION "$CF_COMMIT_AUTHOR"\n'
        "      - echo ${{steps.main_clone.result}} ${{steps.main_clone.revision}}\n"
        "  elsewhere:\n    image: x\n    working_directory: ${{main_clone}}/sub\n    commands: [pwd]\n"
    )
    recorder = Recorder()
    ctx = context(tmp_path, yaml)
    ctx.secrets = {"GIT_PASSWORD": "s3cr3t-Pa55word"}
    outcome = await BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder).run()
    assert outcome.status == "success", recorder.logs
    checkout = (tmp_path / "volume" / "app").resolve()
    sha = upstream.shas["feature"]
    assert recorder.text("inside").splitlines() == [
        str(checkout),
        f"acme/app feature/login {sha[:7]} Carol Coder",
        f"success {sha}",
    ]
    assert recorder.text("elsewhere") == f"{checkout / 'sub'}\n"
    assert "s3cr3t-Pa55word" not in recorder.text("main_clone")
    assert "s3cr3t-Pa55word" not in (checkout / ".git" / "config").read_text()


async def test_a_clone_with_a_wrong_password_fails_the_build_with_a_clear_message(
    tmp_path: Path, upstream: Upstream, http_git_auth: GitHttpServer
) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  main_clone:\n    type: git-clone\n"
        f"    repo: {http_git_auth.url}/acme/app.git\n"
        "    credentials: {username: robot, password: not-the-Pa55word}\n"
        "  never:\n    image: x\n    commands: [echo never]\n"
    )
    outcome, rec = await run(tmp_path, yaml)
    assert outcome == BuildOutcome("failure", "step main_clone failed")
    assert "authentication failed" in (rec.final("main_clone").message or "")
    assert "not-the-Pa55word" not in rec.text("main_clone")
    assert rec.final("never").status == "skipped"

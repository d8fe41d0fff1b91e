"""Artifacts, test reports and restarts on the control plane (SQLite and PostgreSQL): what a runner may upload and
what it is refused, who may read it, how long it is kept; a restart from the failed step and what it tells the
runner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from outpost.engine.engine import StepFiles
from outpost.errors import LeaseLost
from outpost.runner.artifacts import StepOutputs
from outpost.runner.client import Refused
from outpost.server.api import artifacts as artifacts_api
from outpost.wire import (
    LEASE_HEADER,
    PREFIX,
    BuildFinished,
    BuildStarted,
    JUnitCase,
    JUnitReport,
    RunBuildTask,
    StepPlan,
    StepUpdate,
)
from tests.server.test_protocol import HELLO, claim, claimed, poll
from tests.stack import Stack, running_stack, settings_for


async def upload(stack: Stack, task: RunBuildTask, path: str, data: bytes, tmp_path: Path) -> str:
    file = tmp_path / "upload.bin"
    file.write_bytes(data)
    async with stack.protocol() as client:
        return (await client.upload_artifact(task, "hello", path, file, len(data))).id


async def raw_upload(stack: Stack, task: RunBuildTask, path: str, data: bytes) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {task.job_token}",
        LEASE_HEADER: task.lease_id,
        "Content-Type": "application/octet-stream",
    }
    async with stack.raw() as c:
        return await c.put(
            f"{PREFIX}/artifacts/{task.build_id}", params={"step": "hello", "path": path}, content=data, headers=headers
        )


async def test_an_uploaded_artifact_is_listed_and_downloaded_by_its_account_only(stack: Stack, tmp_path: Path) -> None:
    task = await claimed(stack)
    artifact_id = await upload(stack, task, "dist/app.tar.gz", b"\x1f\x8b binary \x00 bytes", tmp_path)

    listed = (await stack.api("GET", f"/builds/{task.build_id}/artifacts")).json()
    got = await stack.api("GET", f"/builds/{task.build_id}/artifacts/{artifact_id}")
    acme = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]

    assert [(a["step"], a["path"], a["size"]) for a in listed] == [("hello", "dist/app.tar.gz", 17)]
    assert got.status_code == 200
    assert got.content == b"\x1f\x8b binary \x00 bytes"
    assert got.headers["content-disposition"] == 'attachment; filename="app.tar.gz"'
    assert got.headers["x-content-type-options"] == "nosniff"
    for path in (f"/builds/{task.build_id}/artifacts", f"/builds/{task.build_id}/artifacts/{artifact_id}"):
        assert (await stack.api("GET", path, token=acme)).status_code == 404
    stored = stack.data_dir / "artifacts" / listed[0]["id"]
    assert not stored.exists()  # kept per account, then per build
    assert len(list((stack.data_dir / "artifacts").glob(f"*/{task.build_id}/{artifact_id}"))) == 1


async def test_the_same_step_and_path_sent_again_replace_the_artifact_and_its_file(
    stack: Stack, tmp_path: Path
) -> None:
    task = await claimed(stack)
    first = await upload(stack, task, "out.txt", b"one", tmp_path)
    second = await upload(stack, task, "out.txt", b"two!", tmp_path)

    listed = (await stack.api("GET", f"/builds/{task.build_id}/artifacts")).json()
    assert [(a["id"], a["size"]) for a in listed] == [(second, 4)]
    assert (await stack.api("GET", f"/builds/{task.build_id}/artifacts/{first}")).status_code == 404
    assert list((stack.data_dir / "artifacts").glob(f"*/*/{first}")) == []


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b"])
async def test_an_artifact_path_that_could_climb_is_refused_and_nothing_is_written(stack: Stack, path: str) -> None:
    task = await claimed(stack)
    r = await raw_upload(stack, task, path, b"data")
    assert r.status_code == 422, r.text
    assert [p for p in (stack.data_dir / "artifacts").rglob("*") if p.is_file()] == []


async def test_an_artifact_past_the_size_limit_or_the_count_limit_is_refused(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, tmp_path / "data", max_artifact_bytes=1000, max_build_artifacts=2)
    async with running_stack(settings) as stack:
        task = await claimed(stack)
        declared = await raw_upload(stack, task, "big.bin", b"x" * 1001)

        async def chunked() -> AsyncIterator[bytes]:  # no length declared: counted as it comes
            for _ in range(3):
                yield b"y" * 400

        headers = {
            "Authorization": f"Bearer {task.job_token}",
            LEASE_HEADER: task.lease_id,
            "Content-Type": "application/octet-stream",
        }
        async with stack.raw() as c:
            streamed = await c.put(
                f"{PREFIX}/artifacts/{task.build_id}",
                params={"step": "hello", "path": "big2.bin"},
                content=chunked(),
                headers=headers,
            )
        one, two = await raw_upload(stack, task, "1", b"1"), await raw_upload(stack, task, "2", b"2")
        three = await raw_upload(stack, task, "3", b"3")

    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert (one.status_code, two.status_code, three.status_code) == (200, 200, 413)
    assert "at most 2 artifacts" in three.json()["message"]
    kept = sorted(p.name for p in (tmp_path / "data" / "artifacts").rglob("*") if p.is_file())
    assert kept == sorted([one.json()["id"], two.json()["id"]])  # nothing of the refused ones


async def test_a_finished_build_takes_no_more_artifacts_or_test_reports(stack: Stack, tmp_path: Path) -> None:
    task = await claimed(stack)
    async with stack.protocol() as client:
        await client.started(task, BuildStarted())
        await client.report(task, [], [("hello", StepUpdate(status="success"))], BuildFinished(status="success"))
        with pytest.raises(LeaseLost):
            await upload(stack, task, "late.txt", b"late", tmp_path)
        with pytest.raises(LeaseLost):
            await client.annotations(task, JUnitReport(step="hello", cases=[]))
    assert (await stack.api("GET", f"/builds/{task.build_id}/artifacts")).json() == []


async def test_expired_artifacts_are_neither_listed_nor_served_and_the_cron_removes_their_files(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, tmp_path / "data", artifact_days=0.5 / 86400)  # half a second
    async with running_stack(settings) as stack:
        task = await claimed(stack)
        artifact_id = await upload(stack, task, "soon-gone.txt", b"bye", tmp_path)
        assert len((await stack.api("GET", f"/builds/{task.build_id}/artifacts")).json()) == 1
        await asyncio.sleep(0.6)
        listed = (await stack.api("GET", f"/builds/{task.build_id}/artifacts")).json()
        served = await stack.api("GET", f"/builds/{task.build_id}/artifacts/{artifact_id}")
        removed = await artifacts_api.remove_expired(stack.services)
        again = await artifacts_api.remove_expired(stack.services)

    assert listed == []
    assert served.status_code == 404
    assert (removed, again) == (1, 0)
    assert [p for p in (tmp_path / "data" / "artifacts").rglob("*") if p.is_file()] == []


async def test_test_reports_are_listed_failures_first_and_a_resend_replaces_the_steps_cases(stack: Stack) -> None:
    task = await claimed(stack)
    cases = [
        JUnitCase(classname="a.B", name="passes", status="passed", time=0.1),
        JUnitCase(classname="a.B", name="is skipped", status="skipped"),
        JUnitCase(classname="a.B", name="errs", status="error", message="boom"),
        JUnitCase(classname="a.B", name="fails", status="failed", time=2.5, message="expected 1"),
    ]
    async with stack.protocol() as client:
        await client.annotations(task, JUnitReport(step="hello", cases=cases))
        await client.annotations(task, JUnitReport(step="hello", cases=cases))  # a resend after a cut

    body = (await stack.api("GET", f"/builds/{task.build_id}/annotations")).json()

    assert (body["total"], body["failed"]) == (4, 2)
    assert body["counts"] == {"failed": 1, "error": 1, "skipped": 1, "passed": 1}
    assert [(c["name"], c["status"]) for c in body["cases"]] == [
        ("fails", "failed"),
        ("errs", "error"),
        ("is skipped", "skipped"),
        ("passes", "passed"),
    ]
    assert body["cases"][0]["message"] == "expected 1"


async def test_a_test_report_with_too_many_cases_is_refused_whole(stack: Stack) -> None:
    task = await claimed(stack)
    many = JUnitReport.model_construct(
        step="hello", cases=[JUnitCase(name=f"t{i}", status="passed") for i in range(5001)]
    )
    async with stack.protocol() as client:
        with pytest.raises(Refused) as refused:
            await client.annotations(task, many)
    assert refused.value.status == 422
    assert (await stack.api("GET", f"/builds/{task.build_id}/annotations")).json()["total"] == 0


async def test_a_restart_from_the_failed_step_runs_the_original_yaml_and_tells_the_runner_what_succeeded(
    stack: Stack,
) -> None:
    runner = await stack.register()
    await stack.pipeline("two", HELLO.replace("hello:", "first:") + "  second:\n    image: alpine\n    commands: [x]\n")
    build = await stack.run("two", variables={"V": "1"})
    task = await claim(stack, runner.runner_token)
    async with stack.protocol() as client:
        await client.started(task, BuildStarted(steps=[StepPlan(name="first"), StepPlan(name="second")]))
        updates = [("first", StepUpdate(status="success")), ("second", StepUpdate(status="failure"))]
        await client.report(task, [], updates, BuildFinished(status="failure"))
    await stack.api("PATCH", "/pipelines/two", json={"yaml": HELLO})  # changed since

    plain = await stack.api("POST", f"/builds/{build['id']}/restart", json={})
    again = await stack.api("POST", f"/builds/{build['id']}/restart", json={"from_failed": True})
    # the plain restart is claimed first (older), the restart from the failed step next
    first_task, second_task = await claim(stack, runner.runner_token), await claim(stack, runner.runner_token)

    assert plain.status_code == again.status_code == 201
    assert plain.json()["resume_steps"] is None
    assert again.json()["resume_steps"] == ["first"]
    assert again.json()["restarted_from"] == build["id"]
    assert again.json()["variables"]["V"] == "1"
    assert first_task.resume is None
    assert first_task.yaml == HELLO  # the pipeline as it is now
    assert second_task.resume is not None
    assert (second_task.resume.build_id, second_task.resume.number, second_task.resume.steps) == (
        build["id"],
        1,
        ["first"],
    )
    assert "second:" in second_task.yaml  # the original's own YAML


async def test_only_a_failed_build_restarts_from_its_failed_step(stack: Stack) -> None:
    await stack.pipeline("hello", HELLO)
    queued = await stack.run("hello")

    r = await stack.api("POST", f"/builds/{queued['id']}/restart", json={"from_failed": True})
    plain = await stack.api("POST", f"/builds/{queued['id']}/restart", json={})

    assert r.status_code == 409
    assert "is still queued" in r.json()["message"]
    assert plain.status_code == 201


async def test_only_a_restart_from_the_failed_step_carries_resume_so_older_runners_read_every_other_task(
    stack: Stack,
) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    await stack.run("hello")
    r = await poll(stack, runner.runner_token)

    task = r.json()["task"]
    assert "resume" not in task
    assert "source" not in task  # nor any other field left unset


async def test_reports_holding_more_cases_than_a_step_may_send_are_sent_up_to_the_bound_and_the_log_says_so(
    stack: Stack, tmp_path: Path
) -> None:
    task = await claimed(stack)
    volume = tmp_path / "volume"
    (volume / "reports").mkdir(parents=True)
    for n in range(3):  # 3 x 2,000 cases
        cases = "".join(f'<testcase classname="c{n}" name="t{i}"/>' for i in range(2000))
        (volume / "reports" / f"r{n}.xml").write_text(f"<testsuite>{cases}</testsuite>")
    notes: list[str] = []

    async def note(text: str) -> None:
        notes.append(text)

    async with stack.protocol() as client:
        collect = StepOutputs(client, task, volume)
        await collect(StepFiles("hello", volume, [], ["reports/*.xml"]), note, lambda text: text)

    body = (await stack.api("GET", f"/builds/{task.build_id}/annotations")).json()
    assert body["total"] == 5000
    assert "warning: the reports hold more than 5000 test cases; the first are shown" in notes
    assert notes[-1] == "test report: 5000 test cases, 0 failed"

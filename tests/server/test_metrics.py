"""GET /metrics: who may read it, and that what a user does moves what it shows (the app in-process, both
databases; tests/e2e/test_observability.py does the same with real processes)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from outpost.server.metrics import READ_EVERY
from outpost.wire import LEASE_HEADER, PREFIX, BuildFinished, PollRequest, Report, RunBuildTask
from tests.server.test_webhooks import add_trigger, deliver
from tests.stack import Stack, running_stack, settings_for

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels (parsing fails on anything malformed)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(stack: Stack, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with stack.client(token) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_are_refused_to_anonymous_callers_and_to_an_accounts_own_admin(stack: Stack) -> None:
    async with stack.raw() as c:
        anonymous = await c.get("/metrics")
    assert anonymous.status_code == 401
    assert "default" not in anonymous.text  # no account name leaks in the refusal
    made = await stack.api("POST", "/tokens", json={"name": "ops", "role": "admin"})
    async with stack.client(made.json()["token"]) as c:
        admin = await c.get("/metrics")
    assert admin.status_code == 403
    assert "outpost_" not in admin.text


async def test_the_scrape_token_reads_metrics_and_nothing_else(database_url: str, tmp_path: Any) -> None:
    settings = settings_for(database_url, tmp_path / "data", metrics_token="scrape-only-secret")
    async with running_stack(settings) as stack:
        found = await scrape(stack, "scrape-only-secret")
        assert ("outpost_polls_held", ()) in found
        assert (await stack.api("GET", "/pipelines", token="scrape-only-secret")).status_code == 401
        async with stack.client("scrape-only-secret-but-longer") as c:
            assert (await c.get("/metrics")).status_code == 401


async def _protocol(stack: Stack, method: str, path: str, token: str, lease: str = "", **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **({LEASE_HEADER: lease} if lease else {})}
    async with stack.raw() as c:
        return await c.request(method, PREFIX + path, headers=headers, **kw)


async def test_a_build_moves_the_queue_the_dispatch_latency_the_log_bytes_and_the_finished_count(
    stack: Stack,
) -> None:
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    queued = await scrape(stack)
    assert value(queued, "outpost_queue_depth", account="default", runtime="local") == 1
    assert value(queued, "outpost_runners_online", account="default", runtime="local") == 0
    assert value(queued, "outpost_dispatch_latency_seconds_count") == 0

    runner = await stack.register()
    polled = await _protocol(
        stack, "POST", "/poll", runner.runner_token, json=PollRequest(wait=0.0).model_dump(exclude_none=True)
    )
    task = RunBuildTask.model_validate(polled.json()["task"])
    assert task.build_id == build["id"]
    await asyncio.sleep(READ_EVERY)  # past the second a read serves later scrapes
    claimed = await scrape(stack)
    assert value(claimed, "outpost_queue_depth", account="default", runtime="local") == 0
    assert value(claimed, "outpost_builds_running", account="default", runtime="local") == 1
    assert value(claimed, "outpost_runners_online", account="default", runtime="local") == 1
    assert value(claimed, "outpost_dispatch_latency_seconds_count") == 1

    log = b"hi\n" * 1000
    report = Report.model_validate(
        {
            "logs": [{"stream": "hello", "offset": 0, "data": base64.b64encode(log).decode()}],
            "finish": BuildFinished(status="success").model_dump(),
        }
    )
    sent = await _protocol(
        stack,
        "POST",
        f"/builds/{task.build_id}/report",
        task.job_token,
        task.lease_id,
        json=report.model_dump(mode="json", exclude_none=True),
    )
    assert sent.status_code == 200, sent.text
    await asyncio.sleep(READ_EVERY)
    done = await scrape(stack)
    assert value(done, "outpost_log_received_bytes_total") == len(log)
    assert value(done, "outpost_builds_finished_total", status="success") == 1
    assert value(done, "outpost_builds_finished_total", status="failure") == 0
    assert value(done, "outpost_builds_running", account="default", runtime="local") == 0
    route = "/api/runner/v1/builds/{build_id}/report"
    assert value(done, "outpost_http_requests_total", method="POST", route=route, status="200") == 1


async def test_requests_are_counted_by_route_template_never_by_their_raw_path(stack: Stack) -> None:
    for _ in range(3):
        assert (await stack.api("GET", f"/builds/{'0' * 32}")).status_code == 404
    async with stack.raw() as c:
        for n in range(3):
            assert (await c.get(f"/no/such/page-{n}")).status_code == 404
    found = await scrape(stack)
    by_template = value(
        found, "outpost_http_requests_total", method="GET", route="/api/v1/builds/{build_id}", status="404"
    )
    assert by_template == 3
    assert value(found, "outpost_http_requests_total", method="GET", route="unmatched", status="404") == 3
    assert not any("page-" in str(labels) or "0" * 32 in str(labels) for _, labels in found)


async def test_webhook_deliveries_are_counted_by_outcome(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, repo="Octocoders/Hello-World")
    assert (await deliver(stack, trigger, "ping")).status_code == 200
    assert (await deliver(stack, trigger, "ping", X_Hub_Signature_256="sha256=00")).status_code == 401
    found = await scrape(stack)
    assert value(found, "outpost_webhook_deliveries_total", outcome="ignored") == 1
    assert value(found, "outpost_webhook_deliveries_total", outcome="rejected") == 1
    assert value(found, "outpost_webhook_deliveries_total", outcome="build") == 0


async def test_the_database_pool_and_held_polls_are_shown(stack: Stack) -> None:
    found = await scrape(stack)
    assert value(found, "outpost_db_pool_size") >= 1
    assert value(found, "outpost_db_pool_checked_out") >= 0
    assert value(found, "outpost_polls_held") == 0
    assert value(found, "process_resident_memory_bytes") > 0

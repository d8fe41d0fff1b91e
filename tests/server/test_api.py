"""The public API: tenants, tokens, pipelines, builds — and bad requests that must change nothing."""

from __future__ import annotations

import asyncio

from tests.stack import Stack

HELLO = """version: '1.0'
steps:
  hello:
    image: alpine
    commands:
      - echo hello ${{NAME}}
"""


async def test_health_needs_no_token(stack: Stack) -> None:
    async with stack.raw() as c:
        r = await c.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_an_unknown_token_is_refused_with_401(stack: Stack) -> None:
    r = await stack.api("GET", "/pipelines", token="opt_not-a-real-token")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "unauthorized"


async def test_a_missing_token_is_refused_with_401(stack: Stack) -> None:
    async with stack.raw() as c:
        r = await c.get("/api/v1/pipelines")
    assert r.status_code == 401
    assert "Bearer" in r.json()["message"]


async def test_a_revoked_token_stops_working(stack: Stack) -> None:
    created = (await stack.api("POST", "/tokens", json={"name": "ci-script"})).json()
    assert (await stack.api("GET", "/pipelines", token=created["token"])).status_code == 200
    revoked = await stack.api("DELETE", f"/tokens/{created['id']}")
    assert revoked.status_code == 200
    r = await stack.api("GET", "/pipelines", token=created["token"])
    assert r.status_code == 401


async def test_build_requests_refused_after_their_token_check_leave_the_control_plane_serving(stack: Stack) -> None:
    """The builds routes check the token in the transaction the handler then uses: a request refused after that
    check (an invalid body, an unknown pipeline or build) must not keep it open (on SQLite it would hold the one
    connection, and every later request would wait for it)."""
    await stack.pipeline("hello", HELLO)
    async with asyncio.timeout(30), stack.client() as c:
        for _ in range(3):
            assert (await c.post("/api/v1/pipelines/hello/builds", json={"branch": 5})).status_code == 422
            assert (await c.post("/api/v1/pipelines/nope/builds", json={})).status_code == 404
            assert (await c.get("/api/v1/builds/nope")).status_code == 404
            assert (await c.post("/api/v1/builds/nope/cancel")).status_code == 404
        build = (await c.post("/api/v1/pipelines/hello/builds", json={})).json()
        assert build["number"] == 1
        assert (await c.get(f"/api/v1/builds/{build['id']}")).json()["status"] == "queued"


async def test_tokens_are_stored_only_as_hashes(stack: Stack) -> None:
    from sqlalchemy import select

    from outpost.server.models import ApiToken

    created = (await stack.api("POST", "/tokens", json={"name": "x"})).json()
    async with stack.services.tx() as session:
        hashes = list(await session.scalars(select(ApiToken.token_hash)))
    assert created["token"] not in hashes
    assert all(len(h) == 64 for h in hashes)


async def test_a_pipeline_is_created_listed_and_shown(stack: Stack) -> None:
    await stack.pipeline("hello", HELLO, variables={"NAME": "world"})
    listed = (await stack.api("GET", "/pipelines")).json()
    assert [p["name"] for p in listed] == ["hello"]
    shown = (await stack.api("GET", "/pipelines/hello")).json()
    assert shown["runtime"] == "local"
    assert shown["variables"] == {"NAME": "world"}


async def test_an_invalid_pipeline_is_refused_with_every_problem_and_not_stored(stack: Stack) -> None:
    bad = "version: '1.0'\nsteps:\n  one:\n    commands: [echo]\n  two.bad:\n    image: x\n"
    r = await stack.api("POST", "/pipelines", json={"name": "broken", "yaml": bad, "yaml_file": "cf.yml"})
    assert r.status_code == 422
    problems = r.json()["problems"]
    assert len(problems) >= 2
    assert all(p.startswith("cf.yml:") for p in problems)
    assert (await stack.api("GET", "/pipelines")).json() == []


async def test_a_malformed_body_gets_422_and_changes_nothing(stack: Stack) -> None:
    async with stack.client() as c:
        not_json = await c.post("/api/v1/pipelines", content=b"{not json", headers={"content-type": "application/json"})
        wrong_type = await c.post("/api/v1/pipelines", json={"name": 5, "yaml": ["x"]})
        missing = await c.post("/api/v1/pipelines", json={"name": "x"})
        unknown_field = await c.post("/api/v1/pipelines", json={"name": "x", "yaml": HELLO, "colour": "red"})
    for r in (not_json, wrong_type, missing, unknown_field):
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_request"
    assert (await stack.api("GET", "/pipelines")).json() == []


async def test_an_oversized_request_body_gets_413(stack: Stack) -> None:
    huge = "x" * (stack.services.settings.max_request_body + 1)
    r = await stack.api("POST", "/validate", json={"yaml": huge})
    assert r.status_code == 413
    assert r.json()["error"] == "too_large"


async def test_a_build_records_the_yaml_and_variables_it_ran_with(stack: Stack) -> None:
    await stack.pipeline("hello", HELLO, variables={"NAME": "pipeline", "KEEP": "1"})
    build = await stack.run("hello", variables={"NAME": "run"})
    assert build["status"] == "queued"
    assert build["variables"] == {"NAME": "run", "KEEP": "1"}
    await stack.api("PATCH", "/pipelines/hello", json={"yaml": HELLO.replace("hello ${{NAME}}", "changed")})
    from outpost.server.models import Build

    async with stack.services.tx() as session:
        row = await session.get_one(Build, build["id"])
    assert row.yaml == HELLO


async def test_a_build_without_an_online_runner_says_it_waits(stack: Stack) -> None:
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    assert any("no runner" in w for w in build["warnings"])


async def test_another_accounts_build_is_not_found(stack: Stack) -> None:
    other = await stack.api("POST", "/accounts", json={"name": "acme"})
    assert other.status_code == 201
    acme = other.json()["token"]
    await stack.api("POST", "/runtimes", token=acme, json={"name": "acme-k8s"})
    await stack.pipeline("secret-pipeline", HELLO, token=acme)
    build = await stack.run("secret-pipeline", token=acme)

    for method, path in [
        ("GET", f"/builds/{build['id']}"),
        ("POST", f"/builds/{build['id']}/cancel"),
        ("GET", f"/builds/{build['id']}/log"),
        ("GET", "/pipelines/secret-pipeline"),
    ]:
        r = await stack.api(method, path)
        assert r.status_code == 404, (method, path, r.text)
    assert (await stack.api("GET", "/builds")).json() == []
    assert (await stack.build(build["id"], token=acme))["status"] == "queued"


async def test_only_the_installation_admin_creates_accounts(stack: Stack) -> None:
    plain = (await stack.api("POST", "/tokens", json={"name": "plain"})).json()["token"]
    r = await stack.api("POST", "/accounts", token=plain, json={"name": "evil"})
    assert r.status_code == 403


async def test_cancelling_a_queued_build_ends_it_at_once(stack: Stack) -> None:
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    r = await stack.api("POST", f"/builds/{build['id']}/cancel")
    assert r.json()["status"] == "terminated"
    again = await stack.api("POST", f"/builds/{build['id']}/cancel")
    assert again.status_code == 409


async def test_validate_reports_problems_or_a_summary(stack: Stack) -> None:
    ok = (await stack.api("POST", "/validate", json={"yaml": HELLO})).json()
    assert ok["valid"] is True
    assert ok["summary"]
    bad = (await stack.api("POST", "/validate", json={"yaml": "version: '1.0'\n", "file": "x.yml"})).json()
    assert bad["valid"] is False
    assert bad["problems"][0].startswith("x.yml:")


async def test_secret_variables_are_stored_encrypted_and_never_shown(stack: Stack) -> None:
    from sqlalchemy import text

    await stack.pipeline("deploy", HELLO, variables={"NAME": "plain"}, secrets={"API_KEY": "s3cr3t-value"})
    shown = (await stack.api("GET", "/pipelines/deploy")).json()
    assert shown["secrets"] == ["API_KEY"]
    assert "s3cr3t-value" not in (await stack.api("GET", "/pipelines/deploy")).text
    build = await stack.run("deploy")
    assert "s3cr3t-value" not in (await stack.api("GET", f"/builds/{build['id']}")).text
    async with stack.services.tx() as session:
        rows = (await session.execute(text("SELECT secrets FROM pipelines UNION ALL SELECT secrets FROM builds"))).all()
    assert len(rows) == 2
    assert all("s3cr3t-value" not in str(row[0]) and "API_KEY" in str(row[0]) for row in rows)


async def test_a_name_cannot_be_both_a_variable_and_a_secret(stack: Stack) -> None:
    r = await stack.api(
        "POST", "/pipelines", json={"name": "x", "yaml": HELLO, "variables": {"K": "1"}, "secrets": {"K": "2"}}
    )
    assert r.status_code == 422
    assert "cannot also be a secret" in r.json()["message"]

"""Roles: every route of the app against every kind of caller, and the rules around tokens.

The matrix is generated from `app.routes`: a route added without a rule in RULES fails
`test_every_route_of_the_app_has_a_rule_in_the_matrix`, and each rule is then checked against a viewer, a
developer, an admin, another account's admin, a token scoped to one pipeline, an expired and a revoked token
(API routes), and against logged-in users of each role (web UI routes).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.routing import Mount

from tests.stack import BASE, Stack
from tests.ui.client import UiClient, csrf_of

HELLO = "version: '1.0'\nsteps:\n  main:\n    image: alpine\n    commands: [echo hi]\n"
RANK = {"viewer": 0, "developer": 1, "admin": 2}


@dataclass(frozen=True)
class Rule:
    """What a route is: `api` (an API token with at least `role`; `scoped`: a token limited to one pipeline
    may call it; `obj`: the path names one object of the account), `superuser`, `ui` / `ui-stream` (a logged-in
    user with at least `role`), `runner` (runner or job tokens), `webhook` (signed), `login`, `logout` or `public`."""

    kind: str
    role: str = "viewer"
    scoped: bool = False
    obj: bool = False


def api(role: str, *, scoped: bool = False, obj: bool = False) -> Rule:
    return Rule("api", role, scoped, obj)


def ui(role: str = "viewer", *, obj: bool = False, stream: bool = False) -> Rule:
    return Rule("ui-stream" if stream else "ui", role, False, obj)


PUBLIC, RUNNER, WEBHOOK = Rule("public"), Rule("runner"), Rule("webhook")
V, D, A = "viewer", "developer", "admin"

RULES: dict[tuple[str, str], Rule] = {
    # documentation and static files
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/ui/static"): PUBLIC,
    # the public API
    ("GET", "/api/v1/health"): PUBLIC,
    ("GET", "/metrics"): Rule("superuser", A),  # or the scrape token (tests/server/test_metrics.py)
    ("POST", "/api/v1/validate"): PUBLIC,
    ("GET", "/api/v1/whoami"): api(V, scoped=True),
    ("POST", "/api/v1/accounts"): Rule("superuser", A),
    ("POST", "/api/v1/tokens"): api(A),
    ("GET", "/api/v1/tokens"): api(A),
    ("DELETE", "/api/v1/tokens/{token_id}"): api(A, obj=True),
    ("POST", "/api/v1/runtimes"): api(A),
    ("GET", "/api/v1/runtimes"): api(V),
    ("POST", "/api/v1/runtimes/{name}/install-tokens"): api(A, obj=True),
    ("GET", "/api/v1/runners"): api(V),
    ("DELETE", "/api/v1/runners/{runner_id}"): api(A, obj=True),
    ("POST", "/api/v1/runners/{runner_id}/drain"): api(A, obj=True),
    ("POST", "/api/v1/runners/{runner_id}/undrain"): api(A, obj=True),
    ("POST", "/api/v1/pipelines"): api(D),
    ("GET", "/api/v1/pipelines"): api(V, scoped=True),
    ("GET", "/api/v1/pipelines/{name}"): api(V, scoped=True, obj=True),
    ("PATCH", "/api/v1/pipelines/{name}"): api(D, obj=True),
    ("POST", "/api/v1/pipelines/{name}/builds"): api(D, scoped=True, obj=True),
    ("GET", "/api/v1/builds"): api(V, scoped=True),
    ("GET", "/api/v1/builds/{build_id}"): api(V, scoped=True, obj=True),
    ("GET", "/api/v1/pipelines/{name}/builds/{number}"): api(V, scoped=True, obj=True),
    ("POST", "/api/v1/builds/{build_id}/cancel"): api(D, obj=True),
    ("POST", "/api/v1/builds/{build_id}/restart"): api(D, scoped=True, obj=True),
    ("GET", "/api/v1/builds/{build_id}/artifacts"): api(V, scoped=True, obj=True),
    ("GET", "/api/v1/builds/{build_id}/artifacts/{artifact_id}"): api(V, scoped=True, obj=True),
    ("GET", "/api/v1/builds/{build_id}/annotations"): api(V, scoped=True, obj=True),
    ("POST", "/api/v1/builds/{build_id}/steps/{step}/approve"): api(D, obj=True),
    ("POST", "/api/v1/builds/{build_id}/steps/{step}/deny"): api(D, obj=True),
    ("GET", "/api/v1/builds/{build_id}/log"): api(V, scoped=True, obj=True),
    ("GET", "/api/v1/builds/{build_id}/steps/{step}/log"): api(V, scoped=True, obj=True),
    ("POST", "/api/v1/triggers"): api(A),
    ("GET", "/api/v1/triggers"): api(V),
    ("GET", "/api/v1/triggers/{trigger_id}"): api(V, obj=True),
    ("PATCH", "/api/v1/triggers/{trigger_id}"): api(A, obj=True),
    ("DELETE", "/api/v1/triggers/{trigger_id}"): api(A, obj=True),
    ("GET", "/api/v1/triggers/{trigger_id}/secret"): api(A, obj=True),
    ("POST", "/api/v1/triggers/{trigger_id}/rotate-secret"): api(A, obj=True),
    ("GET", "/api/v1/triggers/{trigger_id}/deliveries"): api(V, obj=True),
    ("POST", "/api/v1/triggers/{trigger_id}/test-delivery"): api(A, obj=True),
    ("POST", "/api/v1/triggers/{trigger_id}/deliveries/{delivery_id}/redeliver"): api(A, obj=True),
    ("POST", "/api/v1/integrations"): api(A),
    ("GET", "/api/v1/integrations"): api(V),
    ("GET", "/api/v1/integrations/{kind}/{name}"): api(V, obj=True),
    ("PATCH", "/api/v1/integrations/{kind}/{name}"): api(A, obj=True),
    ("DELETE", "/api/v1/integrations/{kind}/{name}"): api(A, obj=True),
    ("POST", "/api/v1/integrations/{kind}/{name}/test"): api(A, obj=True),
    ("GET", "/api/v1/integrations/git/{name}/branches"): api(D, obj=True),
    ("GET", "/api/v1/integrations/git/{name}/file"): api(D, obj=True),
    ("GET", "/api/v1/integrations/git/{name}/changed-files"): api(D, obj=True),
    ("POST", "/api/v1/integrations/cluster/{name}/check"): api(A, obj=True),
    ("POST", "/api/v1/users"): api(A),
    ("GET", "/api/v1/users"): api(A),
    ("DELETE", "/api/v1/users/{name}"): api(A, obj=True),
    ("GET", "/api/v1/audit"): api(A),
    # the runner protocol: runner and job tokens, never API tokens
    ("POST", "/api/runner/v1/register"): RUNNER,
    ("POST", "/api/runner/v1/poll"): RUNNER,
    ("POST", "/api/runner/v1/git-queries/{query_id}/answer"): RUNNER,
    ("POST", "/api/runner/v1/cluster-checks/{query_id}/answer"): RUNNER,
    ("POST", "/api/runner/v1/builds/{build_id}/heartbeat"): RUNNER,
    ("POST", "/api/runner/v1/builds/{build_id}/started"): RUNNER,
    ("POST", "/api/runner/v1/builds/{build_id}/steps/{step}"): RUNNER,
    ("PUT", "/api/runner/v1/builds/{build_id}/steps/{step}/log"): RUNNER,
    ("POST", "/api/runner/v1/builds/{build_id}/report"): RUNNER,
    ("POST", "/api/runner/v1/builds/{build_id}/finish"): RUNNER,
    ("POST", "/api/runner/v1/builds/{build_id}/late-logs"): RUNNER,
    ("POST", "/api/runner/v1/builds/{build_id}/annotations"): RUNNER,
    ("PUT", "/api/runner/v1/artifacts/{build_id}"): RUNNER,
    # webhooks: authenticated by their signature
    ("POST", "/webhooks/{trigger_id}"): WEBHOOK,
    # the web UI
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): Rule("login"),  # its own CSRF cookie first, then a username and password
    ("POST", "/logout"): Rule("logout"),
    ("GET", "/"): PUBLIC,
    ("GET", "/builds"): ui(),
    ("GET", "/builds/{build_id}"): ui(obj=True),
    ("GET", "/pipelines/{name}/builds/{number}"): ui(obj=True),
    ("POST", "/pipelines/{name}/badge"): ui(A, obj=True),
    ("GET", "/badge/{key}/{file}"): PUBLIC,  # an unguessable key in the URL, opt-in per pipeline
    ("GET", "/ui/builds/{build_id}/steps/{step}/lines"): ui(obj=True),
    ("GET", "/builds/{build_id}/steps/{step}/log.txt"): ui(obj=True),
    ("POST", "/builds/{build_id}/cancel"): ui(D, obj=True),
    ("POST", "/builds/{build_id}/restart"): ui(D, obj=True),
    ("GET", "/builds/{build_id}/artifacts/{artifact_id}"): ui(obj=True),
    ("POST", "/builds/{build_id}/steps/{step}/{decision}"): ui(D, obj=True),
    ("GET", "/ui/events/builds"): ui(stream=True),
    ("GET", "/ui/events/builds/{build_id}"): ui(obj=True, stream=True),
    ("GET", "/pipelines"): ui(),
    ("GET", "/new/pipeline"): ui(D),
    ("POST", "/new/pipeline"): ui(D),
    ("GET", "/pipelines/{name}"): ui(obj=True),
    ("GET", "/pipelines/{name}/edit"): ui(D, obj=True),
    ("POST", "/pipelines/{name}/edit"): ui(D, obj=True),
    ("POST", "/pipelines/{name}/run"): ui(D, obj=True),
    ("GET", "/runtimes"): ui(),
    ("POST", "/new/runtime"): ui(A),
    ("POST", "/runtimes/{name}/install-token"): ui(A, obj=True),
    ("POST", "/runners/{runner_id}/revoke"): ui(A, obj=True),
    ("POST", "/runners/{runner_id}/drain"): ui(A, obj=True),
    ("POST", "/runners/{runner_id}/undrain"): ui(A, obj=True),
    ("GET", "/triggers"): ui(),
    ("GET", "/new/trigger"): ui(A),
    ("POST", "/new/trigger"): ui(A),
    ("GET", "/triggers/{trigger_id}"): ui(obj=True),
    ("POST", "/triggers/{trigger_id}/{action}"): ui(A, obj=True),
    ("GET", "/triggers/{trigger_id}/edit"): ui(A, obj=True),
    ("POST", "/triggers/{trigger_id}/edit"): ui(A, obj=True),
    ("POST", "/triggers/{trigger_id}/deliveries/{delivery_id}/redeliver"): ui(A, obj=True),
    ("GET", "/integrations"): ui(),
    ("GET", "/new/integration"): ui(A),
    ("POST", "/new/integration"): ui(A),
    ("POST", "/integrations/{kind}/{name}/firewall"): ui(A, obj=True),
    ("POST", "/integrations/{kind}/{name}/test"): ui(A, obj=True),
    ("POST", "/integrations/{kind}/{name}/remove"): ui(A, obj=True),
    ("GET", "/new/integration/kubernetes"): ui(A),
    ("POST", "/new/integration/kubernetes"): ui(A),
    ("POST", "/integrations/cluster/{name}/pipelines"): ui(A, obj=True),
    ("POST", "/integrations/cluster/{name}/check"): ui(A, obj=True),
    ("GET", "/integrations/cluster/{name}/edit"): ui(A, obj=True),
    ("POST", "/integrations/cluster/{name}/edit"): ui(A, obj=True),
    ("GET", "/integrations/{kind}/{name}/edit"): ui(A, obj=True),
    ("POST", "/integrations/{kind}/{name}/edit"): ui(A, obj=True),
    ("GET", "/users"): ui(A),
    ("POST", "/users"): ui(A),
    ("POST", "/users/{name}/remove"): ui(A, obj=True),
    ("GET", "/audit"): ui(A),
}


def app_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app answers, routers included at any depth (HEAD goes with GET)."""

    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, str]]:
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI's included router
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif isinstance(route, Mount):
                yield "GET", prefix + route.path
            else:
                for method in sorted(getattr(route, "methods", None) or ()):
                    if method != "HEAD":
                        yield method, prefix + route.path

    yield from walk(list(app.routes), "")


@dataclass
class World:
    """One account with objects of every kind, callers of every kind, and another account."""

    tokens: dict[str, str]
    build: str
    trigger: str
    runner: str
    spare_token: str


async def world(stack: Stack) -> World:
    async def made(method: str, path: str, json: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        r = await stack.api(method, path, json=json, token=token)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    await stack.pipeline("hello", HELLO)
    await stack.pipeline("other", HELLO)
    build = await stack.run("hello")
    trigger = await made(
        "POST", "/triggers", {"pipeline": "hello", "provider": "github", "repo": "o/r", "events": ["push"]}
    )
    await made(
        "POST", "/integrations", {"kind": "git", "name": "corp-git", "url": "https://git.corp", "behind_firewall": True}
    )
    runner = await stack.register()
    await made("POST", "/users", {"name": "temp-user", "role": "viewer"})

    async def token(name: str, **body: Any) -> str:
        value: str = (await made("POST", "/tokens", {"name": name, **body}))["token"]
        return value

    tokens = {
        "viewer": await token("v", role="viewer"),
        "developer": await token("d", role="developer"),
        "admin": await token("a", role="admin"),
        "scoped": await token("bot", role="developer", pipeline="hello"),
        "expired": await token("old", role="admin", expires="1s"),
        "revoked": await token("gone", role="admin"),
        "other": (await made("POST", "/accounts", {"name": "acme"}))["token"],
    }
    revoked = (await stack.api("GET", "/tokens")).json()
    gone = next(t["id"] for t in revoked if t["name"] == "gone")
    assert (await stack.api("DELETE", f"/tokens/{gone}")).status_code == 200
    spare = await made("POST", "/tokens", {"name": "spare", "role": "viewer"})
    await asyncio.sleep(1.1)  # the expired token's second passes
    return World(tokens, build["id"], trigger["id"], runner.runner_id, spare["id"])


def concrete(path: str, w: World) -> str:
    values = {
        "build_id": w.build,
        "number": "1",
        "key": "obadge_unknown",
        "file": "hello.svg",
        "step": "main",
        "trigger_id": w.trigger,
        "delivery_id": "unknown-delivery",
        "runner_id": w.runner,
        "token_id": w.spare_token,
        "query_id": "q",
        "artifact_id": "unknown-artifact",
        "kind": "git",
        "decision": "approve",
        "action": "disable",
    }
    if "/runtimes/{name}" in path:
        name = "local"
    elif "/integrations/" in path:
        name = "corp-git"
    elif "/users/{name}" in path:
        name = "temp-user"
    else:
        name = "hello"
    path = path.replace("{name}", name)
    path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
    if path == "/ui/static":
        return "/ui/static/outpost.css"
    if "/integrations/git/" in path:
        return path + "?repo=o/r&path=f&from=a&to=b&wait=0.1"
    return path


def api_expectation(rule: Rule, who: str) -> str:
    """ok (not 401/403, never 5xx) | 401 | 403 | 404 | refused (a 4xx: not an API token's route)."""
    if rule.kind == "public":
        return "ok"
    if rule.kind in ("runner", "webhook", "login"):
        return "refused"
    if rule.kind in ("ui", "ui-stream", "logout"):
        return "no-session"
    if who in ("expired", "revoked"):
        return "401"
    if rule.kind == "superuser":
        return "403"  # the installation's superuser token only
    if who == "other":
        return "404" if rule.obj else "ok"
    if who == "scoped":
        return "ok" if rule.scoped and RANK[rule.role] <= RANK["developer"] else "403"
    return "ok" if RANK[who] >= RANK[rule.role] else "403"


def check(response: httpx.Response, expected: str, rule: Rule, who: str, what: str) -> None:
    code = response.status_code
    if "/integrations/git/" in what and code in (503, 504):  # a git query nobody answered: its designed answer
        assert response.json()["error"] in ("no_answer", "no_runner_online"), response.text
        code = 200
    assert code < 500, f"{what} as {who}: {code} {response.text[:300]}"
    if expected == "ok":
        assert code not in (401, 403), f"{what} as {who}: {code} {response.text[:300]}"
    elif expected == "refused":
        assert 400 <= code < 500, f"{what} as {who}: {code}"
    elif expected == "no-session":
        assert code in (303, 401), f"{what} as {who}: {code}"
    else:
        assert code == int(expected), f"{what} as {who}: expected {expected}, got {code} {response.text[:300]}"
    if expected == "403" and rule.kind == "api":
        message = response.json()["message"]
        if who == "scoped" and RANK["developer"] >= RANK[rule.role]:
            assert "may only read and run pipeline hello" in message, message
        else:
            has = {"scoped": "developer", "other": "admin"}.get(who, who)
            assert f"this needs the {rule.role} role; your token has {has}" in message, message
    if expected == "401":
        assert response.json()["message"] == ("token expired" if who == "expired" else "unknown or revoked API token")


async def test_every_route_of_the_app_has_a_rule_in_the_matrix(stack: Stack) -> None:
    routes = set(app_routes(stack.app))
    unruled, stale = sorted(routes - set(RULES)), sorted(set(RULES) - routes)
    assert unruled == [], "routes without a rule in the role matrix"
    assert stale == [], "rules for routes that no longer exist"


async def test_every_route_answers_each_kind_of_token_as_its_role_says(stack: Stack) -> None:
    w = await world(stack)
    # The admin goes last: its calls change things (revoke, remove) the others' calls still need.
    for who in ("viewer", "developer", "scoped", "other", "expired", "revoked", "admin"):
        headers = {"Authorization": f"Bearer {w.tokens[who]}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=stack.app), base_url=BASE, headers=headers, timeout=30
        ) as client:
            for (method, template), rule in sorted(RULES.items(), key=lambda item: item[0][1]):
                if rule.kind == "ui-stream" and who not in ("expired", "revoked"):
                    continue  # a stream to a session would not end; refusals are checked in the UI test
                sends_json = method in ("POST", "PATCH", "PUT") and template.startswith(("/api/", "/webhooks/"))
                kwargs: dict[str, Any] = {"json": {}} if sends_json else {}
                path = concrete(template, w)
                r = await client.request(method, path, **kwargs)
                check(r, api_expectation(rule, who), rule, who, f"{method} {template}")


async def test_every_web_page_and_form_answers_each_role_as_it_says(stack: Stack) -> None:
    w = await world(stack)
    passwords = {}
    for role in ("viewer", "developer", "admin"):
        r = await stack.api("POST", "/users", json={"name": f"ui-{role}", "role": role})
        passwords[f"ui-{role}"] = r.json()["password"]
    r = await stack.api("POST", "/users", token=w.tokens["other"], json={"name": "ui-other", "role": "admin"})
    assert r.status_code == 201, r.text
    passwords["ui-other"] = r.json()["password"]
    for who, role in (
        ("ui-viewer", "viewer"),
        ("ui-developer", "developer"),
        ("ui-other", "admin"),
        ("ui-admin", "admin"),
    ):
        async with UiClient(stack) as client:
            assert (await client.login(who, passwords[who])).status_code == 303
            csrf = csrf_of((await client.get("/builds")).text)
            for (method, template), rule in sorted(RULES.items(), key=lambda item: item[0][1]):
                if rule.kind not in ("ui", "ui-stream"):
                    continue
                if rule.kind == "ui-stream" and not (who == "ui-other" and rule.obj):
                    continue  # an allowed stream would not end
                path = concrete(template, w)
                if method == "POST":
                    r = await client.http.post(path, data={"csrf": csrf})
                else:
                    r = await client.get(path)
                what = f"{method} {template} as {who}"
                assert r.status_code < 500, what
                if RANK[role] < RANK[rule.role]:
                    assert r.status_code == 403, f"{what}: {r.status_code}"
                    assert f"this needs the {rule.role} role; your user has {role}" in r.text, what
                elif who == "ui-other" and rule.obj:
                    assert r.status_code == 404, f"{what}: {r.status_code}"
                else:
                    assert r.status_code not in (401, 403), f"{what}: {r.status_code} {r.text[:300]}"


async def test_pages_hide_the_actions_a_viewer_cannot_take(stack: Stack) -> None:
    w = await world(stack)
    r = await stack.api("POST", "/users", json={"name": "watcher", "role": "viewer"})
    async with UiClient(stack) as client:
        await client.login("watcher", r.json()["password"])
        build = (await client.get(f"/builds/{w.build}")).text
        pipeline = (await client.get("/pipelines/hello")).text
        nav = (await client.get("/builds")).text
    assert 'id="cancel"' not in build
    assert 'id="restart"' not in build
    assert 'id="run"' not in pipeline
    assert "/edit" not in pipeline
    assert 'href="/users"' not in nav
    assert 'href="/audit"' not in nav


# --- tokens: defect 3 and the rules around granting --------------------------------------------------


async def superuser_token_id(stack: Stack) -> str:
    rows = (await stack.api("GET", "/tokens")).json()
    token_id: str = next(t["id"] for t in rows if t["superuser"])
    return token_id


async def test_no_token_of_the_account_can_revoke_the_installations_superuser_token(stack: Stack) -> None:
    target = await superuser_token_id(stack)
    for role in ("viewer", "developer", "admin"):
        made = await stack.api("POST", "/tokens", json={"name": f"ci-{role}", "role": role})
        r = await stack.api("DELETE", f"/tokens/{target}", token=made.json()["token"])
        assert r.status_code == 403, r.text
    assert "only the installation's superuser" in r.json()["message"]
    assert (await stack.api("GET", "/whoami")).json()["superuser"] is True  # still works
    # ...while the superuser revokes an admin token, and an admin another admin's.
    one = (await stack.api("POST", "/tokens", json={"name": "one", "role": "admin"})).json()
    two = (await stack.api("POST", "/tokens", json={"name": "two", "role": "admin"})).json()
    assert (await stack.api("DELETE", f"/tokens/{two['id']}", token=one["token"])).status_code == 200
    assert (await stack.api("DELETE", f"/tokens/{one['id']}")).status_code == 200


async def test_a_token_made_without_a_role_gets_its_creators_and_never_more(stack: Stack) -> None:
    admin = (await stack.api("POST", "/tokens", json={"name": "ops", "role": "admin", "expires": "1h"})).json()
    child = (await stack.api("POST", "/tokens", token=admin["token"], json={"name": "child", "expires": "30d"})).json()
    assert child["role"] == "admin"
    assert child["superuser"] is False
    assert child["expires_at"] <= admin["expires_at"]  # never outlives its creator
    dev = (await stack.api("POST", "/tokens", json={"name": "dev", "role": "developer"})).json()
    r = await stack.api("POST", "/tokens", token=dev["token"], json={"name": "escalate", "role": "admin"})
    assert r.status_code == 403
    assert r.json()["message"] == "this needs the admin role; your token has developer"
    r = await stack.api("POST", "/tokens", json={"name": "x", "role": "owner"})
    assert r.status_code == 422
    r = await stack.api("POST", "/tokens", json={"name": "x", "expires": "soon"})
    assert r.status_code == 422
    assert "30d, 12h or 90m" in r.json()["message"]


async def test_a_token_scoped_to_a_pipeline_reads_and_runs_only_that_one(stack: Stack) -> None:
    await stack.pipeline("deploy", HELLO)
    await stack.pipeline("secret-stuff", HELLO)
    hidden = await stack.run("secret-stuff")
    bot = (await stack.api("POST", "/tokens", json={"name": "bot", "pipeline": "deploy"})).json()
    assert bot["role"] == "developer"  # an admin's bot gets no more than reading and running
    assert bot["pipeline"] == "deploy"
    token = bot["token"]
    mine = await stack.run("deploy", token=token)
    assert mine["initiator"] == "bot"
    assert [p["name"] for p in (await stack.api("GET", "/pipelines", token=token)).json()] == ["deploy"]
    assert [b["id"] for b in (await stack.api("GET", "/builds", token=token)).json()] == [mine["id"]]
    assert (await stack.api("POST", "/pipelines/secret-stuff/builds", token=token, json={})).status_code == 404
    assert (await stack.api("GET", f"/builds/{hidden['id']}", token=token)).status_code == 404
    r = await stack.api("POST", f"/builds/{mine['id']}/cancel", token=token)
    assert r.status_code == 403
    assert "may only read and run pipeline deploy" in r.json()["message"]
    who = (await stack.api("GET", "/whoami", token=token)).json()
    assert (who["role"], who["pipeline"]) == ("developer", "deploy")


async def test_an_expired_token_gets_401_token_expired(stack: Stack) -> None:
    made = (await stack.api("POST", "/tokens", json={"name": "short", "expires": "1s"})).json()
    assert (await stack.api("GET", "/whoami", token=made["token"])).status_code == 200
    await asyncio.sleep(1.1)
    r = await stack.api("GET", "/whoami", token=made["token"])
    assert r.status_code == 401
    assert r.json() == {"error": "token_expired", "message": "token expired"}


async def test_each_account_has_its_own_users_added_by_its_admin(stack: Stack) -> None:
    acme = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    r = await stack.api("POST", "/users", token=acme, json={"name": "wile", "role": "developer"})
    assert r.status_code == 201, r.text
    assert r.json()["account"] == "acme"
    assert len(r.json()["password"]) >= 12  # generated, answered once
    assert [u["name"] for u in (await stack.api("GET", "/users", token=acme)).json()] == ["wile"]
    assert "wile" not in [u["name"] for u in (await stack.api("GET", "/users")).json()]
    assert (await stack.api("DELETE", "/users/wile")).status_code == 404  # another account's user
    dev = (await stack.api("POST", "/tokens", token=acme, json={"name": "d", "role": "developer"})).json()["token"]
    r = await stack.api("POST", "/users", token=dev, json={"name": "boss", "role": "admin"})
    assert r.status_code == 403
    assert (await stack.api("DELETE", "/users/wile", token=acme)).status_code == 200


# --- the CLI, as a user runs it ------------------------------------------------------------------------


async def test_the_cli_token_of_a_ci_bot_cannot_revoke_the_superuser_token(stack: Stack) -> None:
    """Defect 3 as it was found: `outpost token create ci-bot`, then with that token `outpost token revoke`."""
    from tests.server.test_triggers import outpost, serving

    target = await superuser_token_id(stack)
    await stack.pipeline("deploy", HELLO)
    async with serving(stack) as url:
        code, out, err = await outpost(url, stack.admin_token, "token", "create", "ci-bot", "--json")
        assert code == 0, err
        bot = json.loads(out)
        code, out, err = await outpost(url, bot["token"], "token", "revoke", target)
        assert code != 0
        assert "only the installation's superuser may revoke the superuser token" in err
        code, out, err = await outpost(
            url, stack.admin_token, "token", "create", "deployer", "--role", "developer", "--pipeline", "deploy",
            "--expires", "12h", "--json",
        )  # fmt: skip
        assert code == 0, err
        scoped = json.loads(out)
        assert (scoped["role"], scoped["pipeline"]) == ("developer", "deploy")
        assert scoped["expires_at"]
        code, out, err = await outpost(url, stack.admin_token, "token", "list")
        assert code == 0, err
        assert "developer of deploy" in out
    assert (await stack.api("GET", "/whoami")).status_code == 200


async def test_the_cli_adds_lists_and_removes_users(stack: Stack, tmp_path: Path) -> None:
    from tests.server.test_triggers import outpost, serving

    secret = tmp_path / "password"
    secret.write_text("a-long-enough-password\n")
    async with serving(stack) as url:
        code, out, err = await outpost(url, stack.admin_token, "user", "add", "ann", "--role", "developer", "--json")
        assert code == 0, err
        assert len(json.loads(out)["password"]) >= 12  # generated: no terminal to ask at
        code, out, err = await outpost(
            url, stack.admin_token, "user", "add", "bob", "--role", "viewer", "--password-file", str(secret)
        )
        assert code == 0, err
        assert "password" not in out  # the given one is not echoed
        code, out, err = await outpost(url, stack.admin_token, "user", "list", "--json")
        assert [(u["name"], u["role"]) for u in json.loads(out)] == [("ann", "developer"), ("bob", "viewer")]
        code, out, err = await outpost(url, stack.admin_token, "user", "add", "eve", "--role", "owner")
        assert code != 0
        async with UiClient(stack) as client:  # the password from the file is bob's
            assert (await client.login("bob", "a-long-enough-password")).status_code == 303
        code, out, err = await outpost(url, stack.admin_token, "user", "remove", "bob")
        assert code == 0, err
        code, out, err = await outpost(url, stack.admin_token, "user", "list")
        assert "bob" not in out
    async with UiClient(stack) as client:  # removed: no more logging in
        assert (await client.login("bob", "a-long-enough-password")).status_code == 401


async def test_tokens_and_users_made_before_roles_existed_become_admins_of_their_account(database_url: str) -> None:
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.engine import Connection

    from outpost.server.db import alembic_config, make_engine, migrate

    engine = make_engine(database_url)
    try:

        def to_0006(connection: Connection) -> None:
            command.upgrade(alembic_config(connection), "0006")

        async with engine.begin() as conn:
            await conn.run_sync(to_0006)
            await conn.execute(text("INSERT INTO accounts (id, name, created_at) VALUES ('a1', 'old', 0)"))
            await conn.execute(
                text(
                    "INSERT INTO api_tokens (id, account_id, name, token_hash, prefix, is_superuser, created_at)"
                    " VALUES ('t1', 'a1', 'script', :hash, 'opt_x', false, 0)"
                ),
                {"hash": "0" * 64},
            )
            await conn.execute(
                text(
                    "INSERT INTO users (id, account_id, username, password_hash, salt, created_at)"
                    " VALUES ('u1', 'a1', 'someone', 'scrypt$1$1$1$00', '00', 0)"
                )
            )
        await migrate(engine)
        async with engine.connect() as conn:
            token = (await conn.execute(text("SELECT role, pipeline_id, expires_at FROM api_tokens"))).one()
            user = (await conn.execute(text("SELECT role FROM users"))).one()
        assert tuple(token) == ("admin", None, None)
        assert tuple(user) == ("admin",)
    finally:
        await engine.dispose()


# --- the web UI's Users and Audit pages ------------------------------------------------------------------


async def test_an_accounts_admin_adds_a_user_on_the_users_page_who_then_acts_with_that_role(stack: Stack) -> None:
    acme = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    r = await stack.api("POST", "/users", token=acme, json={"name": "acme-admin", "role": "admin"})
    admin_password = r.json()["password"]
    await stack.api("POST", "/runtimes", token=acme, json={"name": "acme-k8s"})
    await stack.pipeline("app", HELLO, token=acme)
    async with UiClient(stack) as admin:
        assert (await admin.login("acme-admin", admin_password)).status_code == 303
        page = await admin.submit("/users", "/users", {"name": "road-runner", "role": "developer", "password": ""})
        assert page.status_code == 200, page.text
        shown = re.search(r'<code id="new-password">([^<]+)</code>', page.text)
        assert shown, "the generated password is shown once"
        refused = await admin.submit("/users", "/users/acme-admin/remove")
        assert refused.status_code == 409  # nobody removes themselves
        audit_page = (await admin.get("/audit")).text
        assert "user.add" in audit_page
        assert "user acme-admin" in audit_page  # who, as a user
    async with UiClient(stack) as dev:
        assert (await dev.login("road-runner", shown.group(1))).status_code == 303
        assert "acme" in (await dev.get("/builds")).text
        ran = await dev.submit("/pipelines/app", "/pipelines/app/run", {"branch": "", "variables": ""})
        assert ran.status_code == 303, ran.text  # a developer runs
        refused = await dev.submit("/runtimes", "/new/runtime", {"name": "mine"})
        assert refused.status_code == 403
        assert "this needs the admin role; your user has developer" in refused.text
        assert (await dev.get("/users")).status_code == 403
    users = (await stack.api("GET", "/users", token=acme)).json()
    assert [(u["name"], u["role"]) for u in users] == [("acme-admin", "admin"), ("road-runner", "developer")]

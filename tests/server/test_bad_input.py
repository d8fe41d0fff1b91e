"""Bad input never gets a 500: every route of the API and the runner protocol, fed garbage."""

from __future__ import annotations

import json
import random
from typing import Any

from fastapi.routing import APIRoute

from outpost.server.api import accounts, approvals, builds, health, logs, pipelines, runtimes
from outpost.server.api import runner as runner_api
from outpost.wire import LEASE_HEADER, PREFIX
from tests.stack import Stack

GARBAGE: list[Any] = [
    None,
    0,
    -1,
    2**70,
    1.5e308,
    "",
    "x" * 5000,
    "\u0000\ud7ff\U0010ffff",
    [],
    [None, {"a": []}],
    {},
    {"name": None},
    {"name": "x", "yaml": 5},
    {"variables": {"": "x"}},
    {"variables": {"A": ["nested"]}},
    {"status": "exploded"},
    {"logs": [{"stream": "$$$", "offset": -5, "data": "@@"}]},
    {"steps": [{"name": "a.b", "update": {"status": "running"}}]},
    {"free_slots": -1, "wait": 1e9},
    {"install_token": "", "name": "x" * 1000},
    {"variables": {"A": "\ud800"}},
    {"variables": {"A": "nul\u0000"}},
]


HELLO = "version: '1.0'\nsteps:\n  s:\n    image: x\n    commands: [echo]\n"


async def test_text_no_database_can_store_is_refused_not_crashed_on(stack: Stack) -> None:
    for variables in ({"A": "nul\u0000here"}, {"A": "lone \ud800 surrogate"}, {"A\u0000": "x"}):
        body = json.dumps({"name": "p", "yaml": HELLO, "variables": variables}).encode()  # \\u escapes, as sent
        r = await stack.api("POST", "/pipelines", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (variables, r.text)
    r = await stack.api("GET", "/pipelines/a%00b")
    assert r.status_code == 400
    for path in ("/pipelines/%ED%A0%80", "/pipelines/%FF%FE", "/builds?pipeline=%ED%A0%80", "/builds?status=%FF"):
        r = await stack.api("GET", path)
        assert r.status_code < 500, (path, r.text)
    assert (await stack.api("GET", "/pipelines")).json() == []


def concrete(path: str, rng: random.Random) -> str:
    parts = []
    for part in path.split("/"):
        if part.startswith("{"):
            part = rng.choice(["x", "0" * 32, "..", "%00", "$system", "a" * 300])
        parts.append(part)
    return "/".join(parts)


async def test_no_route_answers_500_to_garbage(stack: Stack) -> None:
    rng = random.Random(1234)
    runner = await stack.register()
    tokens = [stack.admin_token, runner.runner_token, "opj_nonsense", ""]
    public = (health, accounts, runtimes, pipelines, builds, approvals, logs)
    routers = [m.router for m in public] + [runner_api.router]
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) > 20
    async with stack.raw() as client:
        for route in routes:
            for method in route.methods:
                for _ in range(12):
                    body = rng.choice(GARBAGE)
                    headers = {
                        "Authorization": f"Bearer {rng.choice(tokens)}",
                        LEASE_HEADER: rng.choice(["", "0" * 32]),
                    }
                    kwargs: dict[str, Any] = {"headers": headers, "params": {"offset": rng.choice([-1, 0, "x"])}}
                    if method not in ("GET", "DELETE"):
                        raw = rng.random() < 0.2
                        kwargs["content"] = rng.randbytes(64) if raw else json.dumps(body).encode()
                        headers["content-type"] = "application/json"
                    r = await client.request(method, concrete(route.path, rng), **kwargs)
                    assert r.status_code < 500, (method, route.path, body, r.status_code, r.text[:300])
    listed = await stack.api("GET", "/pipelines")
    assert listed.json() == []


async def test_a_body_without_a_content_type_is_checked_too(stack: Stack) -> None:
    body = json.dumps({"name": "p", "yaml": HELLO, "variables": {"A": "nul\u0000"}}).encode()
    r = await stack.api("POST", "/pipelines", content=body)
    assert r.status_code == 422
    assert (await stack.api("GET", "/pipelines")).json() == []


DEEP = b"[" * 50_000 + b"]" * 50_000
HOSTILE_BODIES: list[bytes] = [
    DEEP,
    b'{"name": "p", "yaml": ' + DEEP + b"}",
    b'{"name": "\\u00e9", "yaml": ' + DEEP + b"}",  # an escape: the guard that looks for NUL parses it
    b'{"a": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
    b"1e400",
    b'{"name": 1e400, "yaml": -1e400, "free_slots": 1e400, "wait": 1e400}',
    b'{"name": "p", "free_slots": ' + b"9" * 5000 + b', "wait": ' + b"9" * 5000 + b"}",
    b"[" + b"1" * 100_000 + b"]",
]
LONG = "x" * 65_536


def every_route(stack: Stack) -> list[APIRoute]:
    """Every route the app serves (API, runner protocol, webhooks, web UI): a new one is fuzzed without a change."""
    found: list[APIRoute] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif (router := getattr(route, "original_router", None)) is not None:  # an included router
                walk(router.routes)

    walk(stack.app.routes)
    return found


async def test_no_route_answers_500_to_deep_nesting_huge_numbers_or_huge_headers(stack: Stack) -> None:
    rng = random.Random(99)
    routes = every_route(stack)
    assert len(routes) > 60
    tokens = [stack.admin_token, "opj_nonsense"]
    async with stack.raw() as client:
        for route in routes:
            for method in sorted((route.methods or set()) - {"HEAD"}):
                path = concrete(route.path, rng)
                tries: list[tuple[dict[str, str], bytes | None]] = [
                    ({"Authorization": "Bearer " + LONG}, None),
                    (
                        {"Authorization": f"Bearer {rng.choice(tokens)}", "Content-Type": "application/json; " + LONG},
                        b"{}",
                    ),
                    (
                        {"Authorization": f"Bearer {rng.choice(tokens)}", LEASE_HEADER: LONG, "Cookie": "a=" + LONG},
                        None,
                    ),
                ]
                if method not in ("GET", "DELETE"):
                    for hostile in HOSTILE_BODIES:
                        headers = {"Authorization": f"Bearer {rng.choice(tokens)}", "Content-Type": "application/json"}
                        tries.append((headers, hostile))
                for sent, content in tries:
                    r = await client.request(method, path, headers=sent, content=content)
                    assert r.status_code < 500, (method, route.path, sent.keys(), (content or b"")[:40], r.text[:300])


async def test_a_body_nested_deeper_than_the_parser_can_recurse_is_refused_with_400_and_the_reason(
    stack: Stack,
) -> None:
    deep = b"[" * 20_000 + b"]" * 20_000  # small enough for every route's size limit
    for path in ("/pipelines", "/tokens", "/triggers"):
        body = b'{"name": ' + deep + b"}"
        r = await stack.api("POST", path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (path, r.text[:300])
        assert "nests 20001 levels deep" in r.json()["message"]
    async with stack.raw() as client:
        r = await client.post(PREFIX + "/register", content=deep)  # no content type: still JSON to the framework
    assert r.status_code == 400, r.text[:300]
    assert (await stack.api("GET", "/pipelines")).json() == []

"""Build numbers: each pipeline counts its builds from 1, concurrent creations included, on both databases;
`my-app#42` resolves through the API; migration 0008 numbers the builds that existed in creation order."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from outpost.server.db import alembic_config, make_engine, migrate
from tests.stack import Stack

HELLO = "version: '1.0'\nsteps:\n  main:\n    image: alpine\n    commands: [echo hi]\n"


async def test_builds_created_at_once_get_distinct_numbers_counted_per_pipeline(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    await stack.pipeline("web", HELLO)

    made = await asyncio.gather(*(stack.run("app" if i % 3 else "web") for i in range(30)))

    app = sorted(b["number"] for b in made if b["pipeline"] == "app")
    web = sorted(b["number"] for b in made if b["pipeline"] == "web")
    assert app == list(range(1, 21))
    assert web == list(range(1, 11))
    later = await stack.run("web")
    assert later["number"] == 11


async def test_a_build_is_found_by_its_pipeline_and_number(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    first = await stack.run("app")
    second = await stack.run("app")

    r = await stack.api("GET", "/pipelines/app/builds/2")
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["number"]) == (second["id"], 2)
    assert (await stack.build(first["id"]))["number"] == 1
    assert (await stack.api("GET", "/pipelines/app/builds/3")).status_code == 404
    assert (await stack.api("GET", "/pipelines/nope/builds/1")).status_code == 404
    for bad in ("0", "abc", "99999999999"):
        assert (await stack.api("GET", f"/pipelines/app/builds/{bad}")).status_code == 422, bad


async def test_another_accounts_build_number_is_not_found(stack: Stack) -> None:
    acme = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    await stack.api("POST", "/runtimes", token=acme, json={"name": "k8s"})
    await stack.pipeline("secret", HELLO, token=acme)
    await stack.run("secret", token=acme)

    assert (await stack.api("GET", "/pipelines/secret/builds/1")).status_code == 404
    assert (await stack.api("GET", "/pipelines/secret/builds/1", token=acme)).status_code == 200


async def test_who_cancelled_a_build_is_kept(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    build = await stack.run("app")
    assert (await stack.build(build["id"]))["cancelled_by"] is None

    assert (await stack.api("POST", f"/builds/{build['id']}/cancel")).status_code == 200

    assert (await stack.build(build["id"]))["cancelled_by"].startswith("token ")


def _old_builds(conn: Connection) -> None:
    """Rows as they stood at revision 0007: two pipelines, builds inserted out of creation order, their steps."""
    cfg = alembic_config(conn)
    command.upgrade(cfg, "0007")
    conn.execute(sa.text("INSERT INTO accounts (id, name, created_at) VALUES ('a', 'acct', 0)"))
    conn.execute(
        sa.text("INSERT INTO runtimes (id, account_id, name, is_default, created_at) VALUES ('r', 'a', 'rt', true, 0)")
    )
    for pid in ("p1", "p2"):
        conn.execute(
            sa.text(
                "INSERT INTO pipelines (id, account_id, runtime_id, name, yaml, yaml_file, variables, secrets,"
                " created_at, updated_at, approval_role, approval_requires_other)"
                " VALUES (:id, 'a', 'r', :id, '', 'codefresh.yml', '{}', '{}', 0, 0, 'developer', false)"
            ),
            {"id": pid},
        )
    for build_id, pipeline, created in [("b3", "p1", 30.0), ("b1", "p1", 10.0), ("c1", "p2", 5.0), ("b2", "p1", 20.0)]:
        conn.execute(
            sa.text(
                "INSERT INTO builds (id, account_id, pipeline_id, pipeline_name, runtime_id, status, yaml, yaml_file,"
                " variables, secrets, trigger, initiator, created_at, cancel_requested, requeues)"
                " VALUES (:id, 'a', :p, :p, 'r', 'success', '', 'codefresh.yml', '{}', '{}', 'build', '', :t,"
                " false, 0)"
            ),
            {"id": build_id, "p": pipeline, "t": created},
        )
        # a step of each build: what made a migration that copies the builds table fail on SQLite
        conn.execute(
            sa.text(
                "INSERT INTO steps (build_id, name, position, type, status, log_size)"
                " VALUES (:id, 'main', 0, 'freestyle', 'success', 0)"
            ),
            {"id": build_id},
        )


async def test_the_migration_numbers_existing_builds_in_creation_order(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_old_builds)
        await migrate(engine)
        async with engine.connect() as conn:
            numbers = {r[0]: r[1] for r in await conn.execute(sa.text("SELECT id, number FROM builds"))}
            counters = {r[0]: r[1] for r in await conn.execute(sa.text("SELECT id, last_build_number FROM pipelines"))}
    finally:
        await engine.dispose()
    assert numbers == {"b1": 1, "b2": 2, "b3": 3, "c1": 1}
    assert counters == {"p1": 3, "p2": 1}

"""Several control-plane replicas on one PostgreSQL, behind a real HAProxy, with real runners: every build runs once,
a replica killed mid-run loses nothing, work queued through one replica wakes polls held by another, the replicas
share one installation, cron fires once, and a log followed through one replica is byte-exact."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.components import free_port, haproxy
from tests.e2e.processes import ControlPlane, Process, eventually, launch_runner

pytestmark = pytest.mark.timeout(600)
KEY = Fernet.generate_key().decode()


def run_sql(base: str, database: str, sql: str) -> list[Any]:
    import asyncpg

    async def go() -> list[Any]:
        conn = await asyncpg.connect(base.replace("postgresql+asyncpg", "postgresql") + "/" + database)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture
def database(postgres_base: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own; yields its SQLAlchemy URL."""
    name = "r_" + uuid.uuid4().hex[:12]
    run_sql(postgres_base, "postgres", f"CREATE DATABASE {name}")
    yield f"{postgres_base}/{name}"
    run_sql(postgres_base, "postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def replica(tmp_path: Path, name: str, database: str, processes: list[Process], **env: str) -> ControlPlane:
    """A replica with its own data dir (tmp_path/NAME/cp) and port, not started yet."""
    (tmp_path / name).mkdir(exist_ok=True)
    # Replicas share the installation's secret key (docs/operations.md); each has its own data dir.
    cp = ControlPlane(tmp_path / name, port=free_port(), OUTPOST_DATABASE_URL=database, OUTPOST_SECRET_KEY=KEY, **env)
    cp.name = f"replica {name}"
    processes.append(cp)
    return cp


def via(cp: ControlPlane, url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def make_pipeline(api: httpx.Client, name: str, commands: list[str]) -> None:
    if not api.get("/runtimes").json():
        assert api.post("/runtimes", json={"name": "local"}).status_code == 201
    yaml = "version: '1.0'\nsteps:\n  main:\n    image: alpine\n    commands:\n"
    yaml += "".join(f"      - {json.dumps(c)}\n" for c in commands)
    r = api.post("/pipelines", json={"name": name, "yaml": yaml})
    assert r.status_code == 201, r.text


def queue(api: httpx.Client, pipeline: str) -> dict[str, Any]:
    r = api.post(f"/pipelines/{pipeline}/builds", json={})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def install_token(api: httpx.Client) -> str:
    if not any(r["name"] == "local" for r in api.get("/runtimes").json()):
        return str(api.post("/runtimes", json={"name": "local"}).json()["install_token"])
    return str(api.post("/runtimes/local/install-tokens").json()["install_token"])


def test_two_replicas_started_together_on_an_empty_database_share_one_admin_and_fire_cron_once(
    tmp_path: Path, database: str, postgres_base: str, processes: list[Process]
) -> None:
    a, b = replica(tmp_path, "a", database, processes), replica(tmp_path, "b", database, processes)
    for cp in (a, b):  # both at once: one migrates and bootstraps, the other waits its turn
        cp.args = ["server", "--port", str(cp.port), "--data-dir", str(cp.data_dir)]
        Process.start(cp)
    for cp in (a, b):

        def up(cp: ControlPlane = cp) -> bool:
            cp._died()  # raises, with its log, if it exited
            return "control plane on" in cp.output()

        eventually(up, timeout=60, what=f"{cp.name} up")
        cp.url = f"http://127.0.0.1:{cp.port}"
    tokens = [cp.data_dir / "admin-token" for cp in (a, b) if (cp.data_dir / "admin-token").exists()]
    passwords = [cp.data_dir / "admin-password" for cp in (a, b) if (cp.data_dir / "admin-password").exists()]
    assert len(tokens) == 1, "exactly one replica made the admin token"
    assert len(passwords) == 1, "exactly one replica made the admin's password"
    token = tokens[0].read_text().strip()
    database_name = database.rsplit("/", 1)[1]
    hash_before = run_sql(postgres_base, database_name, "SELECT password_hash FROM users WHERE username = 'admin'")

    # A third replica, with a data dir of its own, started later: it changes neither the password nor the token.
    c = replica(tmp_path, "c", database, processes)
    c.start()
    assert not (c.data_dir / "admin-token").exists()
    assert not (c.data_dir / "admin-password").exists()
    assert "the data dir of the replica that set up this installation" in c.output()
    hash_after = run_sql(postgres_base, database_name, "SELECT password_hash FROM users WHERE username = 'admin'")
    assert hash_after == hash_before, "a later replica reset the admin's password"
    superusers = run_sql(postgres_base, database_name, "SELECT count(*) FROM api_tokens WHERE is_superuser")
    assert superusers[0][0] == 1
    for cp in (a, b, c):  # one installation: the first start's token works on every replica
        with via(cp, cp.url, token) as api:
            assert api.get("/pipelines").status_code == 200

    # Cron, with three replicas running: the next minute fires exactly one build.
    with via(a, a.url, token) as api:
        make_pipeline(api, "tick", ["true"])
        r = api.post("/triggers", json={"pipeline": "tick", "cron": "* * * * *"})
        assert r.status_code == 201, r.text
        next_minute = (int(time.time()) // 60 + 1) * 60
        time.sleep(max(0.0, next_minute - time.time()) + 8)
        builds = api.get("/builds", params={"pipeline": "tick"}).json()
    rows = builds["builds"] if isinstance(builds, dict) else builds
    assert len([x for x in rows if x["trigger"] == "cron"]) == 1, rows


def test_a_build_queued_through_one_replica_is_claimed_by_a_runner_polling_another_before_its_poll_ends(
    tmp_path: Path, database: str, processes: list[Process]
) -> None:
    poll_wait = 30  # what the runner's poll waits on replica B; without a cross-replica wake-up the build waits it out
    a = replica(tmp_path, "a", database, processes, OUTPOST_POLL_TIMEOUT=str(poll_wait))
    b = replica(tmp_path, "b", database, processes, OUTPOST_POLL_TIMEOUT=str(poll_wait))
    a.start()
    b.start()
    token = a.token
    with via(a, a.url, token) as api_a:
        make_pipeline(api_a, "hello", ["echo hello"])
        launch_runner(processes, tmp_path, b.url, install_token(api_a), OUTPOST_POLL_TIMEOUT=str(poll_wait))
        first = queue(api_a, "hello")
        eventually(
            lambda: api_a.get(f"/builds/{first['id']}").json()["status"] == "success", timeout=60, what="a first build"
        )
        waits = []
        for _ in range(3):
            time.sleep(1.5)  # the runner's next poll is held by B by now
            build = queue(api_a, "hello")
            began = time.monotonic()

            def claimed(build: dict[str, Any] = build) -> bool:
                return api_a.get(f"/builds/{build['id']}").json()["status"] in ("running", "success")

            eventually(
                claimed,
                timeout=poll_wait,
                what="the build to be claimed through replica B",
                every=0.01,
            )
            waits.append(time.monotonic() - began)
    print(f"queued through A, running on B's runner after {[round(w * 1000) for w in waits]} ms")
    assert max(waits) < poll_wait / 3, waits


def test_500_builds_on_two_replicas_behind_haproxy_each_run_once_though_one_replica_is_killed(
    tmp_path: Path, database: str, processes: list[Process]
) -> None:
    env = {"OUTPOST_LEASE_TTL": "20", "OUTPOST_HEARTBEAT_INTERVAL": "2"}  # a loaded 2-core machine, 9 processes
    a, b = replica(tmp_path, "a", database, processes, **env), replica(tmp_path, "b", database, processes, **env)
    a.start()
    b.start()
    ran = tmp_path / "ran.txt"
    total = 500
    token = a.token
    with haproxy([a.port, b.port], tmp_path) as port:
        url = f"http://127.0.0.1:{port}"
        with via(a, url, token) as api:
            # O_APPEND writes of one short line each: concurrent runs never interleave within a line.
            make_pipeline(api, "once", [f'echo "$CF_BUILD_ID" >> {ran}'])
            for i in range(6):
                launch_runner(processes, tmp_path, url, install_token(api), name=f"runner{i}", **env)
            ids = [queue(api, "once")["id"] for _ in range(total // 2)]  # the other half once A is dead

            def finished() -> int:
                return sum(1 for line in ran.read_text().splitlines() if line) if ran.exists() else 0

            eventually(lambda: finished() >= 50, timeout=300, what="50 builds to run")
            # Mid-run, the replica that started first and so leads the jobs: builds claimed, running and queued
            # through it; its polls move to B, and B takes the jobs over.
            a.signal(signal.SIGKILL)
            a.wait(10)
            eventually(lambda: "now runs the background jobs" in b.output(), timeout=10, what="B to take the jobs over")
            ids += [queue(api, "once")["id"] for _ in range(total - len(ids))]

            eventually(lambda: finished() >= total, timeout=400, what=f"{total} builds to run", every=1)

            def statuses() -> dict[str, int] | None:
                counts: dict[str, int] = {}
                for build_id in ids:
                    status = api.get(f"/builds/{build_id}").json()["status"]
                    counts[status] = counts.get(status, 0) + 1
                return counts if set(counts) <= {"success", "error", "failed", "terminated"} else None

            final = eventually(statuses, timeout=60, what="every build to be finished", every=1)
    assert final == {"success": total}, final
    runs = [line for line in ran.read_text().splitlines() if line]
    assert sorted(runs) == sorted(ids), "a build ran twice, or not at all"


def test_a_log_followed_through_one_replica_is_byte_exact_while_another_takes_the_appends(
    tmp_path: Path, database: str, processes: list[Process]
) -> None:
    a, b = replica(tmp_path, "a", database, processes), replica(tmp_path, "b", database, processes)
    a.start()
    b.start()
    token = a.token
    script = "for i in $(seq 1 20000); do echo line-$i; [ $((i % 2000)) = 0 ] && sleep 0.2; done; echo end"
    expected = b"".join(f"line-{i}\n".encode() for i in range(1, 20001)) + b"end\n"
    with via(a, a.url, token) as api_a, via(b, b.url, token) as api_b:
        make_pipeline(api_a, "chatty", [script])
        launch_runner(processes, tmp_path, a.url, install_token(api_a))  # it appends through A only
        build = queue(api_a, "chatty")
        got: dict[str, bytearray] = {}
        cursor, deadline = 0, time.monotonic() + 120
        while time.monotonic() < deadline:
            page = api_b.get(f"/builds/{build['id']}/log", params={"after": cursor, "wait": 10}).json()
            for piece in page["pieces"]:
                data = base64.b64decode(piece["data"])
                step = got.setdefault(piece["step"], bytearray())
                assert piece["offset"] == len(step), "a piece was skipped or repeated"
                step += data
            cursor = page["cursor"]
            if page["finished"]:
                break
    assert bytes(got.get("main", b"")) == expected


def test_a_runner_that_dies_while_every_replica_is_restarted_in_turn_is_still_found_lost_within_its_ttl(
    tmp_path: Path, database: str, processes: list[Process]
) -> None:
    # Long enough for both restarts to fit in it: were a start a fresh TTL for live leases, the lease would outlive
    # the first restarted replica's start by a whole TTL, since the other is restarting when the lease expires.
    ttl = 20.0
    env = {"OUTPOST_LEASE_TTL": str(ttl), "OUTPOST_HEARTBEAT_INTERVAL": "1"}
    a, b = replica(tmp_path, "a", database, processes, **env), replica(tmp_path, "b", database, processes, **env)
    a.start()
    b.start()
    token = a.token
    pidfile = tmp_path / "step.pid"
    with via(b, b.url, token) as api_b:
        make_pipeline(api_b, "long", [f"sleep 120 & echo $! > {pidfile}; wait"])
        runner = launch_runner(processes, tmp_path, b.url, install_token(api_b), **env)
        build = queue(api_b, "long")
    eventually(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=60, what="the step to start")
    runner.signal(signal.SIGKILL)
    killed_at, killed_wall = time.monotonic(), time.time()
    for cp in (a, b):  # a rolling restart, the jobs' leader first: each stops cleanly (SIGTERM) and comes back
        cp.stop()
        cp.start()
    restarts_took = time.monotonic() - killed_at
    with via(a, a.url, token) as api_a:

        def ended() -> dict[str, Any] | None:
            body: dict[str, Any] = api_a.get(f"/builds/{build['id']}").json()
            return body if body["status"] not in ("claimed", "running") else None

        final = eventually(ended, timeout=2 * ttl + 30, what="the dead runner's build to end")
    found_after = datetime.fromisoformat(final["finished_at"]).timestamp() - killed_wall  # as the reaper ended it
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int(pidfile.read_text()), signal.SIGKILL)  # the step the killed runner left running
    assert (final["status"], final["message"]) == ("error", "runner lost")
    assert found_after < ttl + 3, f"found lost after {found_after:.1f}s (the restarts took {restarts_took:.1f}s)"

"""Runtimes, their install tokens and their runners (/api/v1/runtimes, /runners)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from outpost.server.api.deps import Access, AsAdmin, AsViewer, Svc
from outpost.server.api.schemas.runtimes import RunnerOut, RuntimeIn, RuntimeOut
from outpost.server.models import Build, Runner, Runtime
from outpost.server.presence import online_since
from outpost.server.services import Services
from outpost.server.store import audit, builds, runtimes

router = APIRouter(prefix="/api/v1", tags=["api"])


def runner_out(svc: Services, runner: Runner, runtime_name: str, held: Sequence[Build] = ()) -> RunnerOut:
    online = bool(runner.last_seen_at and runner.last_seen_at > online_since(svc.settings))
    drain = runtimes.drain_state(runner, len(held))
    return RunnerOut.read(runner, runtime=runtime_name, online=online, drain=drain, builds=[b.id for b in held])


def _with_install_token(svc: Services, runtime: Runtime, install: str) -> RuntimeOut:
    command = f"outpost runner start --url {svc.public_url} --token {install}"
    return RuntimeOut.read(runtime, install_token=install, install_command=command)


@router.post("/runtimes", status_code=201)
async def create_runtime(body: RuntimeIn, token: AsAdmin, svc: Svc) -> RuntimeOut:
    async with svc.as_caller(token) as (session, who):
        runtime = await runtimes.create_runtime(session, who, body.name)
        install = await runtimes.create_install_token(session, runtime)
    return _with_install_token(svc, runtime, install)


@router.get("/runtimes")
async def list_runtimes(token: AsViewer, svc: Svc) -> list[RuntimeOut]:
    async with svc.as_caller(token) as (session, who):
        all_runners = await runtimes.list_runners(session, who)
        held = await runtimes.held_builds(session, who)
        out = []
        for rt in await runtimes.list_runtimes(session, who):
            mine = [runner_out(svc, r, rt.name, held.get(r.id, [])) for r in all_runners if r.runtime_id == rt.id]
            out.append(RuntimeOut.read(rt, runners=mine))
        return out


@router.post("/runtimes/{name}/install-tokens", status_code=201)
async def create_install_token(name: str, token: AsAdmin, svc: Svc) -> RuntimeOut:
    async with svc.as_caller(token) as (session, who):
        runtime = await runtimes.get_runtime(session, who, name)
        install = await runtimes.create_install_token(session, runtime)
        await audit.record(session, who, "install_token.create", runtime.name)
    return _with_install_token(svc, runtime, install)


@router.get("/runners")
async def list_runners(token: AsViewer, svc: Svc) -> list[RunnerOut]:
    async with svc.as_caller(token) as (session, who):
        names = {rt.id: rt.name for rt in await runtimes.list_runtimes(session, who)}
        held = await runtimes.held_builds(session, who)
        return [
            runner_out(svc, r, names.get(r.runtime_id, ""), held.get(r.id, []))
            for r in await runtimes.list_runners(session, who)
        ]


async def set_drained(svc: Services, token: Access, runner_id: str, *, drained: bool) -> RunnerOut:
    async with svc.as_caller(token) as (session, who):
        runner = await runtimes.drain_runner(session, who, runner_id, drained=drained)
        runtime = await session.get_one(Runtime, runner.runtime_id)
        held = (await runtimes.held_builds(session, who)).get(runner.id, [])
        out = runner_out(svc, runner, runtime.name, held)
    svc.wakeups.runner(runner.id)  # its held polls look again: a drained one stops waiting for builds
    if not drained:
        svc.wakeups.work(runner.runtime_id)  # builds may have queued while it was drained
    return out


@router.post("/runners/{runner_id}/drain")
async def drain_runner(runner_id: str, token: AsAdmin, svc: Svc) -> RunnerOut:
    """The runner finishes the builds it holds and is handed no new one (cancels and approvals still reach it)."""
    return await set_drained(svc, token, runner_id, drained=True)


@router.post("/runners/{runner_id}/undrain")
async def undrain_runner(runner_id: str, token: AsAdmin, svc: Svc) -> RunnerOut:
    """The runner takes builds again."""
    return await set_drained(svc, token, runner_id, drained=False)


@router.delete("/runners/{runner_id}")
async def revoke_runner(runner_id: str, token: AsAdmin, svc: Svc) -> dict[str, str | list[str]]:
    """The runner's token and its job tokens are void at once, and its leases end in the same transaction."""
    async with svc.as_caller(token) as (session, who):
        runner = await runtimes.revoke_runner(session, who, runner_id)
        changed = await builds.end_leases_of(session, runner)
    svc.wakeups.runner(runner.id)  # its open poll answers 401
    for build in changed:
        svc.wakeups.build_changed(build)  # another runner claims a requeued one
    return {"id": runner.id, "status": "revoked", "builds": [b.id for b in changed]}

"""Hooks (`on_elected`, `on_success`, `on_fail`, `on_finish`) of a pipeline or a step: their `exec` commands
and `steps`, run in the stream of what they hook into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from outpost.engine.commands import Commands
from outpost.engine.reporting import Reporter
from outpost.engine.scopes import Scope
from outpost.engine.state import BuildState
from outpost.pipelines.spec import Location, Step


@dataclass
class HookJob:
    label: str  # the hook's name, then `/<step>` for one of its `steps`
    commands: list[str]
    environment: list[str]
    image: str | None


def hook_jobs(name: str, hook: dict[str, Any]) -> list[HookJob]:
    """What a hook runs, in order: its `exec` (a list of commands, or commands with an image), then its `steps`."""
    jobs: list[HookJob] = []
    spec = hook.get("exec")
    if isinstance(spec, list):
        jobs.append(HookJob(name, [str(c) for c in spec], [], None))
    elif isinstance(spec, dict):
        env = [str(e) for e in spec.get("environment") or []]
        jobs.append(HookJob(name, [str(c) for c in spec.get("commands") or []], env, spec.get("image")))
    for sub, fields in (hook.get("steps") or {}).items():
        if isinstance(fields, dict):
            env = [str(e) for e in fields.get("environment") or []]
            jobs.append(
                HookJob(f"{name}/{sub}", [str(c) for c in fields.get("commands") or []], env, fields.get("image"))
            )
    return jobs


async def run_hook(
    name: str, hook: Any, stream: str, scope: Scope, *, commands: Commands, state: BuildState, reporter: Reporter
) -> bool:
    """Runs a hook's `exec` commands or its `steps`, in the stream given. True if it succeeded
    or its failure is tolerated (`fail_fast: false`)."""
    if not isinstance(hook, dict):
        return True
    tolerant = not state.truthy(hook.get("fail_fast"), default=True)
    for job in hook_jobs(name, hook):
        await reporter.log(stream, f"[outpost] hook {job.label}: running\n".encode())
        fields = {"image": job.image} if job.image else {}
        fake = Step(name=stream, type="freestyle", fields=fields, location=Location(0, 0))
        result = await commands.run(fake, scope, job.commands, job.environment, {}, stream=stream)
        await reporter.log(stream, f"[outpost] hook {job.label}: {result.status}\n".encode())
        if result.status != "success":
            return tolerant
    return True

"""Pending-approval steps: the answers that come from outside (possibly before the step is reached), and the
wait for one, bounded by the step's `timeout`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from outpost.engine.reporting import Reporter
from outpost.engine.results import StepResult, duration
from outpost.engine.scopes import Scope
from outpost.engine.state import BuildState
from outpost.pipelines.spec import Step
from outpost.wire import StepUpdate

APPROVAL_DEFAULT_HOURS = 168.0
_UNITS = {"hours": 3600.0, "minutes": 60.0}


class Approvals:
    """The approvals of one build. `cancel` ends the build, for a step whose unanswered end is `terminated`."""

    def __init__(self, state: BuildState, reporter: Reporter, *, build_id: str, cancel: Callable[[str], None]) -> None:
        self.state = state
        self.reporter = reporter
        self.build_id = build_id
        self.cancel = cancel
        self._decisions: dict[str, asyncio.Future[tuple[str, str]]] = {}

    def decide(self, step: str, decision: str, by: str = "") -> bool:
        """An approval answer for a pending-approval step. True if it was new."""
        if decision not in ("approved", "denied"):
            return False
        future = self._decision(step)
        if future.done():
            return False
        future.set_result((decision, by))
        return True

    def _decision(self, step: str) -> asyncio.Future[tuple[str, str]]:
        if step not in self._decisions:
            self._decisions[step] = asyncio.get_running_loop().create_future()
        return self._decisions[step]

    async def wait(self, step: Step, scope: Scope) -> StepResult:
        """Waits for the step's answer, a stop of its scope, or its timeout (then its `finalState`)."""
        wait, final_state = _deadline(step)
        self.state.states[step.name] = "pending-approval"
        self.state.workflow = "pending-approval"
        await self.reporter.step(step.name, StepUpdate(status="pending-approval", title=step.title))
        await self.reporter.log(
            step.name,
            f"[outpost] waiting for approval (at most {duration(wait)}, then {final_state}): "
            f"outpost build approve {self.build_id} {step.name}\n".encode(),
        )
        decision = self._decision(step.name)
        stop: list[asyncio.Future[Any]] = [asyncio.ensure_future(e.wait()) for e in scope.events()]
        try:
            await asyncio.wait([decision, *stop], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for s in stop:
                s.cancel()
        self.state.workflow = "running"
        if decision.done():
            answer, by = decision.result()
            who = f" by {by}" if by else ""
            await self.reporter.log(step.name, f"[outpost] {answer}{who}\n".encode())
            return StepResult("approved" if answer == "approved" else "denied", message=f"{answer}{who}")
        if scope.stopped:
            return StepResult("terminated", message=scope.why)
        message = f"no answer within {duration(wait)}: {final_state}"
        if final_state == "terminated":
            self.cancel(f"step {step.name}: {message}")
            return StepResult("terminated", message=message)
        return StepResult("approved" if final_state == "approved" else "denied", message=message)


def _deadline(step: Step) -> tuple[float, str]:
    """How long the step waits, in seconds, and the state it takes when no answer comes."""
    spec = step.fields.get("timeout") if isinstance(step.fields.get("timeout"), dict) else {}
    hours = float(spec.get("duration", APPROVAL_DEFAULT_HOURS)) if spec else APPROVAL_DEFAULT_HOURS
    wait = hours * _UNITS.get(str(spec.get("timeUnit", "hours")) if spec else "hours", 3600.0)
    final_state = str(spec.get("finalState", "denied")) if spec else "denied"
    return wait, final_state

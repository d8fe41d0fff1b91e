"""What a running build knows: its variables, the state and members of its steps, the workflow result,
the values to mask, and where a step's working directory is."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outpost.engine import cfexport
from outpost.pipelines.spec import Step
from outpost.pipelines.variables import EXPORT_FILE, parse_export_file, substitute

VOLUME_ALIAS = "/codefresh/volume"


@dataclass
class BuildState:
    volume: Path  # stands in for /codefresh/volume
    branch: str | None = None  # what the build was asked to build, for `when.branch` without CF_BRANCH
    variables: dict[str, str] = field(default_factory=dict)
    states: dict[str, str] = field(
        default_factory=dict
    )  # step name -> its state, for `when.steps` and `steps.X.result`
    members: dict[str, str] = field(default_factory=dict)  # `steps.X.<member>` values for ${{...}} and conditions
    workflow: str = "running"
    masked: set[str] = field(default_factory=set)  # values masked in every log from now on
    main_clone: Path | None = None  # a `main_clone` checkout is where later steps start

    def scope_vars(self) -> dict[str, str]:
        """What `${{...}}` sees: variables, then step members and `workflow.result`."""
        return {**self.members, "workflow.result": self.workflow, **self.variables}

    def truthy(self, value: Any, *, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        resolved = substitute(str(value), self.variables).strip().lower()
        if resolved in ("true", "false"):
            return resolved == "true"
        return default

    def workdir(self, step: Step, variables: Mapping[str, str]) -> Path:
        raw = substitute(step.working_directory or "", variables).strip()
        volume = self.volume
        base = self.main_clone or volume
        if not raw or raw in (".", "./"):
            return base
        if raw == VOLUME_ALIAS or raw.startswith(VOLUME_ALIAS + "/"):
            return volume / raw[len(VOLUME_ALIAS) :].lstrip("/")
        path = Path(raw)
        return path if path.is_absolute() else base / path

    def record(self, step: Step, state: str) -> None:
        self.states[step.name] = state
        prefix = f"steps.{step.name}."
        self.members.update(
            {
                prefix + "name": step.name,
                prefix + "type": step.type,
                prefix + "description": step.description or "",
                prefix + "result": state,
                prefix + "workingDirectory": str(self.workdir(step, self.scope_vars())),
            }
        )

    def collect_exports(self) -> None:
        """Takes in what a step exported (`cf_export`), and the names it asked to mask."""
        volume = self.volume
        with contextlib.suppress(FileNotFoundError):
            self.variables.update(parse_export_file((volume / EXPORT_FILE).read_text(errors="replace")))
        with contextlib.suppress(FileNotFoundError):
            names = (volume / cfexport.MASK_FILE).read_text(errors="replace").split()
            self.masked.update(self.variables[n] for n in names if n in self.variables)

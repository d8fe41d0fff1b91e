"""The parsed form of a codefresh.yml file: what the engine plans and runs.

Parsing (`parsing.py`) turns YAML text into these objects after validation; every object keeps the
location it came from so later errors (at build start, say) can still point into the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from outpost.errors import Problem


@dataclass(frozen=True)
class Location:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Step:
    """One step of a pipeline.

    `fields` holds every field as written (anchors, aliases and merge keys resolved, `arguments` merged in);
    the common fields are lifted into attributes. `steps` holds the children of a `parallel` step.
    """

    name: str
    type: str
    fields: dict[str, Any]
    location: Location
    title: str | None = None
    description: str | None = None
    stage: str | None = None
    fail_fast: bool | str = True  # a `${{VAR}}` string is resolved at run time
    timeout: float | None = None  # seconds; None means no limit
    when: dict[str, Any] | None = None
    steps: list[Step] = field(default_factory=list)

    # Freestyle accessors; other step types read `fields` directly.
    @property
    def image(self) -> str | None:
        value = self.fields.get("image")
        return value if isinstance(value, str) else None

    @property
    def commands(self) -> list[str]:
        value = self.fields.get("commands") or []
        return [str(c) for c in value]

    @property
    def working_directory(self) -> str | None:
        value = self.fields.get("working_directory")
        return str(value) if value is not None else None

    @property
    def environment(self) -> list[str]:
        value = self.fields.get("environment") or []
        return [str(e) for e in value]

    @property
    def shell(self) -> str:
        return str(self.fields.get("shell") or "sh")


@dataclass
class Pipeline:
    version: str
    steps: list[Step]
    mode: str = "sequential"
    stages: list[str] = field(default_factory=list)
    fail_fast: bool | str = True
    strict_fail_fast: bool | str | None = None
    hooks: dict[str, Any] = field(default_factory=dict)
    file: str = "codefresh.yml"
    success_criteria: dict[str, Any] | None = None  # as for a parallel step, over the top-level steps
    services: dict[str, Any] = field(default_factory=dict)  # pipeline-wide sidecars, as written
    warnings: list[Problem] = field(default_factory=list)  # tolerated, probably typos: shown, never fatal

    def all_steps(self) -> list[Step]:
        """Every step, parents before their children, in file order."""
        out: list[Step] = []

        def walk(steps: list[Step]) -> None:
            for s in steps:
                out.append(s)
                walk(s.steps)

        walk(self.steps)
        return out

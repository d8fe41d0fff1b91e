"""Builds and their steps."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from outpost.server import models
from outpost.server.api.schemas.base import In, Out, Time, Variables


class BuildIn(In):
    variables: Variables = Field(default_factory=dict, max_length=500)
    branch: str | None = Field(default=None, max_length=255)
    sha: str | None = Field(default=None, max_length=64)


class RestartIn(In):
    from_failed: bool = False  # skip the steps that succeeded, where the runner still holds the build's volume


class StepOut(Out):
    name: str
    title: str | None
    stage: str | None
    type: str
    parent: str | None
    status: str
    exit_code: int | None
    message: str | None
    started_at: Time
    finished_at: Time
    log_size: int
    decision: str | None = None  # a pending-approval step's answer, once given
    decided_by: str | None = None


class BuildOut(Out):
    id: str
    pipeline: str = Field(validation_alias="pipeline_name")
    number: int  # per pipeline: "my-app#42"
    status: str
    message: str | None
    trigger: str
    initiator: str
    branch: str | None
    sha: str | None
    variables: Variables
    runner_id: str | None
    created_at: Time
    started_at: Time
    finished_at: Time
    duration: float | None
    cancel_requested: bool
    cancelled_by: str | None = None  # who asked, as the audit log names them
    # A webhook build's commit and pull request: provider, repo, event, message, author, commit_url, pr_number,
    # pr_title, pr_url, pr_target
    git_context: dict[str, Any] | None = None
    restarted_from: str | None = None  # the id of the build this one restarted
    resume_steps: list[str] | None = None  # a restart from the failed step: the steps it may skip
    url: str
    steps: list[StepOut] | None = None
    warnings: list[str] = Field(default_factory=list)
    trigger_id: str | None = None  # the trigger that started it, if one did
    yaml_repo: str | None = None  # YAML from the repository: read from there, at that commit
    yaml_file: str | None = None
    yaml_revision: str | None = None
    yaml: str | None = None  # the YAML the build ran (in `build show`)

    @classmethod
    def of(cls, b: models.Build, url: str, steps: list[models.Step] | None = None) -> BuildOut:
        end = b.finished_at
        return cls.read(
            b,
            url=url,
            duration=round(end - b.started_at, 3) if end and b.started_at else None,
            steps=[StepOut.model_validate(s) for s in steps] if steps is not None else None,
            yaml=(b.yaml or None) if steps is not None else None,
        )


class ArtifactOut(Out):
    id: str
    step: str
    path: str  # relative to the build volume
    size: int
    sha256: str
    created_at: Time
    expires_at: Time
    url: str  # where to download it with an API token


class AnnotationOut(Out):
    step: str
    suite: str
    classname: str
    name: str
    status: str  # failed | error | skipped | passed
    time: float | None
    message: str | None


class AnnotationsOut(Out):
    """A build's test cases, failures first, and how many of each status."""

    total: int
    failed: int  # failed and errors
    counts: dict[str, int]
    cases: list[AnnotationOut]

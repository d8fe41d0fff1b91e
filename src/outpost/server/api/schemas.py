"""What the public API answers with. Times are ISO 8601 in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from outpost.server import models


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if t else None


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


Variables = dict[str, str]


class AccountIn(In):
    name: str = Field(min_length=1, max_length=100)


class TokenIn(In):
    name: str = Field(min_length=1, max_length=100)


class RuntimeIn(In):
    name: str = Field(min_length=1, max_length=100)


class PipelineIn(In):
    name: str = Field(min_length=1, max_length=150)
    yaml: str = Field(max_length=512 * 1024)
    yaml_file: str = Field(default="codefresh.yml", max_length=255)
    runtime: str | None = Field(default=None, max_length=100)
    variables: Variables = Field(default_factory=dict, max_length=500)
    secrets: Variables = Field(default_factory=dict, max_length=500)


class PipelinePatch(In):
    yaml: str | None = Field(default=None, max_length=512 * 1024)
    yaml_file: str | None = Field(default=None, max_length=255)
    runtime: str | None = Field(default=None, max_length=100)
    variables: Variables | None = Field(default=None, max_length=500)
    secrets: Variables | None = Field(default=None, max_length=500)


class BuildIn(In):
    variables: Variables = Field(default_factory=dict, max_length=500)
    branch: str | None = Field(default=None, max_length=255)
    sha: str | None = Field(default=None, max_length=64)


class ValidateIn(In):
    yaml: str = Field(max_length=512 * 1024)
    file: str = Field(default="codefresh.yml", max_length=255)


class TokenOut(BaseModel):
    id: str
    name: str
    prefix: str
    superuser: bool
    created_at: str | None
    last_used_at: str | None
    revoked_at: str | None
    token: str | None = None  # only when just created

    @classmethod
    def of(cls, row: models.ApiToken, token: str | None = None) -> TokenOut:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            superuser=row.is_superuser,
            created_at=iso(row.created_at),
            last_used_at=iso(row.last_used_at),
            revoked_at=iso(row.revoked_at),
            token=token,
        )


class RunnerOut(BaseModel):
    id: str
    name: str
    runtime: str
    version: str
    executor: str
    concurrency: int
    hostname: str
    online: bool
    last_seen_at: str | None
    created_at: str | None


class RuntimeOut(BaseModel):
    name: str
    default: bool
    created_at: str | None
    runners: list[RunnerOut] = Field(default_factory=list)
    install_token: str | None = None
    install_command: str | None = None


class PipelineOut(BaseModel):
    id: str
    name: str
    runtime: str
    yaml_file: str
    yaml: str
    variables: Variables
    secrets: list[str]  # names only: values are never shown again
    created_at: str | None
    updated_at: str | None


class StepOut(BaseModel):
    name: str
    title: str | None
    stage: str | None
    type: str
    parent: str | None
    status: str
    exit_code: int | None
    message: str | None
    started_at: str | None
    finished_at: str | None
    log_size: int

    @classmethod
    def of(cls, s: models.Step) -> StepOut:
        return cls(
            name=s.name,
            title=s.title,
            stage=s.stage,
            type=s.type,
            parent=s.parent,
            status=s.status,
            exit_code=s.exit_code,
            message=s.message,
            started_at=iso(s.started_at),
            finished_at=iso(s.finished_at),
            log_size=s.log_size,
        )


class BuildOut(BaseModel):
    id: str
    pipeline: str
    status: str
    message: str | None
    trigger: str
    initiator: str
    branch: str | None
    sha: str | None
    variables: Variables
    runner_id: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    duration: float | None
    cancel_requested: bool
    url: str
    steps: list[StepOut] | None = None
    warnings: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, b: models.Build, url: str, steps: list[models.Step] | None = None) -> BuildOut:
        end = b.finished_at
        return cls(
            id=b.id,
            pipeline=b.pipeline_name,
            status=b.status,
            message=b.message,
            trigger=b.trigger,
            initiator=b.initiator,
            branch=b.branch,
            sha=b.sha,
            variables=b.variables,
            runner_id=b.runner_id,
            created_at=iso(b.created_at),
            started_at=iso(b.started_at),
            finished_at=iso(end),
            duration=round(end - b.started_at, 3) if end and b.started_at else None,
            cancel_requested=b.cancel_requested,
            url=url,
            steps=[StepOut.of(s) for s in steps] if steps is not None else None,
        )


class LogPiece(BaseModel):
    cursor: int
    step: str
    offset: int
    data: str  # base64: logs are bytes, not always UTF-8


class LogPage(BaseModel):
    build: str
    status: str
    finished: bool
    cursor: int
    pieces: list[LogPiece]


class ValidateOut(BaseModel):
    valid: bool
    problems: list[str]
    summary: str | None = None


class Health(BaseModel):
    status: str
    version: str


class WhoAmI(BaseModel):
    account: str
    token: str
    superuser: bool


class AccountOut(BaseModel):
    name: str
    token: str


def error_body(error: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": error, "message": message, **details}

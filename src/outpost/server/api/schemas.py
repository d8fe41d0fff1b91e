"""What the public API answers with. Times are ISO 8601 in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from outpost.server import models


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if t else None


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


Variables = dict[str, str]


class AccountIn(In):
    name: str = Field(min_length=1, max_length=100)


class TokenIn(In):
    """`role` defaults to the creator's; `pipeline` limits the token to reading and running that pipeline;
    `expires` is a duration such as 30d, 12h or 90m."""

    name: str = Field(min_length=1, max_length=100)
    role: str | None = Field(default=None, max_length=20)
    pipeline: str | None = Field(default=None, min_length=1, max_length=150)
    expires: str | None = Field(default=None, min_length=1, max_length=20)


class UserIn(In):
    name: str = Field(min_length=1, max_length=100)
    role: str = Field(max_length=20)
    password: str | None = Field(default=None, max_length=1000)  # none: one is generated and answered once


class UserOut(BaseModel):
    name: str
    role: str
    account: str
    created_at: str | None
    password: str | None = None  # only when generated


class AuditOut(BaseModel):
    id: int
    at: str | None
    account: str | None
    actor: str
    address: str | None
    action: str
    target: str
    details: dict[str, Any]


class RuntimeIn(In):
    name: str = Field(min_length=1, max_length=100)


class PipelineIn(In):
    """The YAML itself, or `repo` (+ `git`, `revision`): the runner reads `yaml_file` from the repository."""

    name: str = Field(min_length=1, max_length=150)
    yaml: str = Field(default="", max_length=512 * 1024)
    yaml_file: str = Field(default="codefresh.yml", max_length=255)
    runtime: str | None = Field(default=None, max_length=100)
    variables: Variables = Field(default_factory=dict, max_length=500)
    secrets: Variables = Field(default_factory=dict, max_length=500)
    repo: str | None = Field(default=None, max_length=500)
    git: str | None = Field(default=None, max_length=100)
    revision: str | None = Field(default=None, max_length=255)
    approval_role: str | None = Field(default=None, max_length=20)  # who may answer approvals (developer)
    approval_requires_other: bool | None = None  # nobody approves a build they started

    @model_validator(mode="after")
    def _yaml_or_repo(self) -> PipelineIn:
        if "yaml" not in self.model_fields_set and not self.repo:
            raise ValueError("give `yaml`, or `repo` to read the YAML from the repository")
        return self


class PipelinePatch(In):
    yaml: str | None = Field(default=None, max_length=512 * 1024)
    yaml_file: str | None = Field(default=None, max_length=255)
    runtime: str | None = Field(default=None, max_length=100)
    variables: Variables | None = Field(default=None, max_length=500)
    secrets: Variables | None = Field(default=None, max_length=500)
    repo: str | None = Field(default=None, max_length=500)
    git: str | None = Field(default=None, max_length=100)
    revision: str | None = Field(default=None, max_length=255)
    approval_role: str | None = Field(default=None, max_length=20)
    approval_requires_other: bool | None = None


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
    role: str = "admin"
    pipeline: str | None = None  # the one pipeline it may read and run (by name when known)
    expires_at: str | None = None

    @classmethod
    def of(cls, row: models.ApiToken, token: str | None = None, pipeline: str | None = None) -> TokenOut:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            superuser=row.is_superuser,
            created_at=iso(row.created_at),
            last_used_at=iso(row.last_used_at),
            revoked_at=iso(row.revoked_at),
            token=token,
            role=row.role,
            pipeline=pipeline or row.pipeline_id,
            expires_at=iso(row.expires_at),
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
    repo: str | None = None  # YAML from the repository: where, through which integration, at which revision
    git: str | None = None
    revision: str | None = None
    approval_role: str = "developer"
    approval_requires_other: bool = False


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
    decision: str | None = None  # a pending-approval step's answer, once given
    decided_by: str | None = None

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
            decision=s.decision,
            decided_by=s.decided_by,
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
    trigger_id: str | None = None  # the trigger that started it, if one did
    yaml_repo: str | None = None  # YAML from the repository: read from there, at that commit
    yaml_file: str | None = None
    yaml_revision: str | None = None
    yaml: str | None = None  # the YAML the build ran (in `build show`)

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
            trigger_id=b.trigger_id,
            yaml_repo=b.yaml_repo,
            yaml_file=b.yaml_file,
            yaml_revision=b.yaml_revision,
            yaml=(b.yaml or None) if steps is not None else None,
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
    role: str = "admin"
    pipeline: str | None = None  # a scoped token's one pipeline
    expires_at: str | None = None


class AccountOut(BaseModel):
    name: str
    token: str


def error_body(error: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": error, "message": message, **details}


# --- triggers (docs/triggers.md) -----------------------------------------------------------------

TriggerEvents = list[Annotated[str, Field(min_length=1, max_length=100)]]


class TriggerIn(In):
    """A git trigger (provider, repo, events, ...) or, with `cron`, a cron trigger."""

    pipeline: str = Field(min_length=1, max_length=150)
    name: str | None = Field(default=None, min_length=1, max_length=150)
    provider: str | None = Field(default=None, max_length=30)
    repo: str | None = Field(default=None, max_length=255)
    events: TriggerEvents = Field(default_factory=list, max_length=50)
    branch_regex: str | None = Field(default=None, max_length=2000)
    pr_target_regex: str | None = Field(default=None, max_length=2000)
    comment_regex: str | None = Field(default=None, max_length=2000)
    modified_files_glob: str | None = Field(default=None, max_length=2000)
    git: str | None = Field(default=None, min_length=1, max_length=100)  # integration for changed files
    allow_fork_events: bool = False
    variables: Variables = Field(default_factory=dict, max_length=500)
    disabled: bool = False
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    termination_policy: str = Field(default="none", max_length=50)
    cron: str | None = Field(default=None, min_length=1, max_length=100)
    branch: str | None = Field(default=None, max_length=255)
    message: str | None = Field(default=None, max_length=2000)


class TriggerPatch(In):
    """Only the fields given change; `null` clears an optional one."""

    name: str | None = Field(default=None, min_length=1, max_length=150)
    repo: str | None = Field(default=None, max_length=255)
    events: TriggerEvents | None = Field(default=None, max_length=50)
    branch_regex: str | None = Field(default=None, max_length=2000)
    pr_target_regex: str | None = Field(default=None, max_length=2000)
    comment_regex: str | None = Field(default=None, max_length=2000)
    modified_files_glob: str | None = Field(default=None, max_length=2000)
    git: str | None = Field(default=None, min_length=1, max_length=100)
    allow_fork_events: bool | None = None
    variables: Variables | None = Field(default=None, max_length=500)
    disabled: bool | None = None
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    termination_policy: str | None = Field(default=None, max_length=50)
    cron: str | None = Field(default=None, min_length=1, max_length=100)
    branch: str | None = Field(default=None, max_length=255)
    message: str | None = Field(default=None, max_length=2000)


class TriggerOut(BaseModel):
    id: str
    name: str
    pipeline: str
    kind: str
    provider: str | None
    repo: str | None
    events: list[str]
    branch_regex: str | None
    pr_target_regex: str | None
    comment_regex: str | None
    modified_files_glob: str | None
    git: str | None  # the git integration a runner computes changed files through (None: pipeline's or default)
    allow_fork_events: bool
    variables: Variables
    disabled: bool
    concurrency: int | None
    termination_policy: str
    cron: str | None
    branch: str | None
    message: str | None
    endpoint: str | None  # where the Git provider POSTs (git triggers)
    last_fired_at: str | None
    created_at: str | None
    updated_at: str | None
    secret: str | None = None  # only when created, rotated or explicitly revealed

    @classmethod
    def of(cls, t: models.Trigger, pipeline: str, endpoint: str | None, secret: str | None = None) -> TriggerOut:
        return cls(
            id=t.id,
            name=t.name,
            pipeline=pipeline,
            kind=t.kind,
            provider=t.provider,
            repo=t.repo,
            events=list(t.events),
            branch_regex=t.branch_regex,
            pr_target_regex=t.pr_target_regex,
            comment_regex=t.comment_regex,
            modified_files_glob=t.modified_files_glob,
            git=t.git,
            allow_fork_events=t.allow_fork_events,
            variables=t.variables,
            disabled=t.disabled,
            concurrency=t.concurrency,
            termination_policy=t.termination_policy,
            cron=t.cron,
            branch=t.branch,
            message=t.message,
            endpoint=endpoint,
            last_fired_at=iso(t.last_fired_at),
            created_at=iso(t.created_at),
            updated_at=iso(t.updated_at),
            secret=secret,
        )


class TriggerSecret(BaseModel):
    id: str
    secret: str


class DeliveryOut(BaseModel):
    id: str
    trigger: str
    received_at: str | None
    provider: str
    event: str | None
    delivery_id: str | None
    outcome: str  # build | filtered | ignored | rejected | pending (a runner computes the changed files)
    rule: str | None
    reason: str | None
    build: str | None
    status_code: int

    @classmethod
    def of(cls, d: models.Delivery) -> DeliveryOut:
        return cls(
            id=d.id,
            trigger=d.trigger_id,
            received_at=iso(d.received_at),
            provider=d.provider,
            event=d.event,
            delivery_id=d.delivery_id,
            outcome=d.outcome,
            rule=d.rule,
            reason=d.reason,
            build=d.build_id,
            status_code=d.status_code,
        )


# --- integrations and git queries (docs/git.md) ----------------------------------------------------

Tags = list[Annotated[str, Field(min_length=1, max_length=50)]]


class IntegrationIn(In):
    """`password` or `token` (the same thing to git: one credential), or `runner_secret`: the name of a secret
    kept only on the runners, so that the control plane holds no credential at all."""

    kind: str = Field(max_length=20)
    name: str = Field(min_length=1, max_length=100)
    provider: str | None = Field(default=None, max_length=30)
    url: str | None = Field(default=None, max_length=500)
    domain: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=10_000)
    token: str | None = Field(default=None, max_length=10_000)
    runner_secret: str | None = Field(default=None, max_length=255)
    behind_firewall: bool = False
    default: bool = False
    insecure: bool = False
    tags: Tags = Field(default_factory=list, max_length=20)


class IntegrationPatch(In):
    """Only the fields given change; `null` or "" clears an optional one."""

    provider: str | None = Field(default=None, max_length=30)
    url: str | None = Field(default=None, max_length=500)
    domain: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=10_000)
    token: str | None = Field(default=None, max_length=10_000)
    runner_secret: str | None = Field(default=None, max_length=255)
    behind_firewall: bool | None = None
    default: bool | None = None
    insecure: bool | None = None
    tags: Tags | None = Field(default=None, max_length=20)


class IntegrationOut(BaseModel):
    id: str
    kind: str
    name: str
    provider: str
    url: str | None
    domain: str | None
    username: str | None
    has_secret: bool  # a password or token is stored (sealed); it is never shown
    runner_secret: str | None
    behind_firewall: bool
    default: bool
    insecure: bool
    tags: list[str]
    created_at: str | None
    updated_at: str | None

    @classmethod
    def of(cls, i: models.Integration) -> IntegrationOut:
        return cls(
            id=i.id,
            kind=i.kind,
            name=i.name,
            provider=i.provider,
            url=i.url,
            domain=i.domain,
            username=i.username,
            has_secret=i.secret is not None,
            runner_secret=i.runner_secret,
            behind_firewall=i.behind_firewall,
            default=i.is_default,
            insecure=i.insecure,
            tags=list(i.tags),
            created_at=iso(i.created_at),
            updated_at=iso(i.updated_at),
        )


class ConnectionOut(BaseModel):
    ok: bool
    message: str


class BranchOut(BaseModel):
    name: str
    sha: str


class BranchesOut(BaseModel):
    repo: str
    branches: list[BranchOut]
    runner: str | None  # the runner that answered


class FileOut(BaseModel):
    repo: str
    path: str
    revision: str  # the commit SHA the file was read at
    size: int
    encoding: str  # utf-8, or base64 when the file is not text
    content: str
    runner: str | None


class ChangedFilesOut(BaseModel):
    repo: str
    base: str
    head: str
    files: list[str]
    truncated: bool
    runner: str | None

"""Runner protocol v1: the messages exchanged between runner and control plane.

Both sides import this module; the runner imports nothing else from the server. docs/protocol.md
describes every endpoint, message and status code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1
PREFIX = "/api/runner/v1"
LEASE_HEADER = "Outpost-Lease"

BuildStatus = Literal["queued", "claimed", "running", "success", "failure", "error", "terminated"]
FinalBuildStatus = Literal["success", "failure", "error", "terminated"]
FINAL_BUILD_STATUSES: frozenset[str] = frozenset({"success", "failure", "error", "terminated"})

StepStatus = Literal[
    "pending", "running", "pending-approval",
    "success", "failure", "skipped", "terminated", "error", "approved", "denied",
]  # fmt: skip
FINAL_STEP_STATUSES: frozenset[str] = frozenset(
    {"success", "failure", "skipped", "terminated", "error", "approved", "denied"}
)

SYSTEM_STREAM = "$system"  # the build's own log stream; `$` cannot appear in a step name
STREAM_PATTERN = r"^(\$system|[^.#$\[\]/]+)$"  # a step's name, or the build's own stream
StepName = Annotated[str, Field(min_length=1, max_length=150, pattern=r"^[^.#$\[\]/]+$")]
StreamName = Annotated[str, Field(min_length=1, max_length=150, pattern=STREAM_PATTERN)]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(Message):
    install_token: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=100)
    version: str = Field(default="", max_length=50)
    executor: str = Field(default="local", max_length=50)
    concurrency: int = Field(default=1, ge=1, le=256)
    hostname: str = Field(default="", max_length=255)


class RegisterResponse(Message):
    runner_id: str
    runner_token: str
    account: str
    runtime: str
    lease_ttl: float
    heartbeat_interval: float
    max_log_chunk: int


class PollRequest(Message):
    free_slots: int = Field(default=1, ge=0, le=256)
    running: list[str] = Field(default_factory=list, max_length=256)
    wait: float = Field(default=30.0, ge=0, le=60)


class RunBuildTask(Message):
    kind: Literal["run_build"] = "run_build"
    build_id: str
    lease_id: str
    lease_ttl: float
    job_token: str
    account: str
    pipeline: str
    yaml: str
    yaml_file: str = "codefresh.yml"
    variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)  # values to use and to mask in every log
    build_url: str = ""
    created_at: float = 0.0  # seconds since the epoch, control plane's clock
    trigger: str = "build"
    initiator: str = ""
    branch: str | None = None
    revision: str | None = None
    event: dict[str, Any] | None = None  # a webhook build's raw payload, written to <volume>/event.json


class CancelBuildTask(Message):
    kind: Literal["cancel_build"] = "cancel_build"
    build_id: str
    reason: str = "cancel requested"


class ApprovalDecision(Message):
    step: StepName
    decision: Literal["approved", "denied"]
    by: str = ""


class ApprovalTask(Message):
    """The answer to a pending-approval step of a build this runner runs."""

    kind: Literal["approval"] = "approval"
    build_id: str
    approval: ApprovalDecision


Task = Annotated[RunBuildTask | CancelBuildTask | ApprovalTask, Field(discriminator="kind")]


class PollResponse(Message):
    task: Task | None = None


class HeartbeatResponse(Message):
    lease_ttl: float
    cancel_requested: bool = False
    approvals: list[ApprovalDecision] = Field(default_factory=list)  # answers the build waits for


class StepPlan(Message):
    name: StepName
    title: str | None = None
    stage: str | None = None
    type: str = "freestyle"
    parent: str | None = None


class BuildStarted(Message):
    """Sent once when the runner begins the build; lists the steps it planned, in order."""

    steps: list[StepPlan] = Field(default_factory=list, max_length=2000)
    runner_time: float = 0.0


class StepUpdate(Message):
    status: StepStatus
    title: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    message: str | None = Field(default=None, max_length=10_000)


class BuildFinished(Message):
    status: FinalBuildStatus
    message: str | None = Field(default=None, max_length=10_000)
    finished_at: float | None = None


class LogAccepted(Message):
    size: int  # bytes of this step's log the control plane now holds


class LogAppend(Message):
    stream: StreamName
    offset: int = Field(ge=0)
    data: str  # base64 of the bytes


class StepReport(Message):
    name: StepName
    update: StepUpdate


class Report(Message):
    """Everything the runner has to say about a build at once: applied in one transaction, in order
    (log appends, then step updates, then the finish), or not at all."""

    logs: list[LogAppend] = Field(default_factory=list, max_length=500)
    steps: list[StepReport] = Field(default_factory=list, max_length=500)
    finish: BuildFinished | None = None


class ReportAccepted(Message):
    sizes: dict[str, int]  # for each stream of the report, the bytes the control plane now holds


class ErrorBody(BaseModel):
    error: str
    message: str
    expected_offset: int | None = None

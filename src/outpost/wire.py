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
# On a report's answer: how many reports of one build the control plane takes in flight at once (absent: one).
REPORTS_IN_FLIGHT_HEADER = "Outpost-Reports-In-Flight"

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
    # Set: the answer is `tasks`, up to this many (builds count against free_slots). Unset: one `task`.
    max_tasks: int | None = Field(default=None, ge=1, le=256)


class GitAccess(Message):
    """How a runner reaches one git integration. The control plane sends the credential in clear (it was
    sealed at rest), or only `runner_secret`: the name of a secret the runner holds (--secrets-file)."""

    name: str
    provider: str  # github | github-enterprise | gitlab | bitbucket-server | git
    url: str  # the provider's base URL: `owner/name` repositories are resolved against it
    username: str | None = None
    password: str | None = None
    runner_secret: str | None = None
    is_default: bool = False  # used by git-clone steps that name no `git`
    behind_firewall: bool = False


class RegistryAccess(Message):
    """How a runner logs in to one registry integration: the credential in clear (sealed at rest on the control
    plane), or only `runner_secret`, the name of a secret the runner holds. The runner contacts the registry;
    the control plane never does for one behind the firewall."""

    name: str
    domain: str  # HOST[:PORT], as in image references
    username: str | None = None
    password: str | None = None
    runner_secret: str | None = None
    insecure: bool = False  # plain HTTP
    is_default: bool = False  # where build steps push unless disable_push, and push steps with no `registry`
    behind_firewall: bool = False


class ClusterAccess(Message):
    """How a runner reaches one Kubernetes integration: the API server's URL and CA, and a credential in clear
    (a bearer token, or a client certificate and key; sealed at rest on the control plane), or only
    `runner_secret`, the name of a secret the runner holds with the bearer token. The runner contacts the cluster;
    the control plane never does for one behind the firewall. The service account is the integration's own,
    independent of the runner's privileges."""

    name: str
    server: str  # https://HOST:PORT of the API server
    ca_pem: str | None = None  # the cluster's CA (PEM); None = the system's trust store
    token: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    runner_secret: str | None = None
    namespace: str = "default"  # where deploy steps act unless they name one
    insecure: bool = False  # skip TLS verification (documented as unsafe)
    behind_firewall: bool = False


class PipelineSource(Message):
    """YAML from the repository: the runner reads `path` from `repo` at `revision` before the build starts."""

    repo: str  # owner/name (through `git`) or a full URL
    git: str | None = None  # the integration's name; its access is in RunBuildTask.integrations
    path: str = "codefresh.yml"
    revision: str | None = None  # branch, tag or SHA; None = the repository's default branch


class ResumeFrom(Message):
    """A restart from the failed step: the build it repeats and the steps that succeeded there. The runner skips
    them only if it still holds that build's volume as the build left it (docs/artifacts.md); else all run."""

    build_id: str
    number: int = 0  # "#41" in what the log says
    steps: list[StepName] = Field(default_factory=list, max_length=2000)


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
    integrations: dict[str, GitAccess] = Field(default_factory=dict)  # git integrations the build may use
    registries: dict[str, RegistryAccess] = Field(default_factory=dict)  # registry integrations, by name
    clusters: dict[str, ClusterAccess] = Field(default_factory=dict)  # kubernetes integrations it may use
    # The account's other kubernetes integrations, by name: a deploy step naming one fails at build start saying
    # the pipeline is not allowed to use it (rather than that it does not exist).
    clusters_refused: list[str] = Field(default_factory=list)
    source: PipelineSource | None = None  # set when the YAML is to be read from the repository (`yaml` is "")
    resume: ResumeFrom | None = None  # a restart from the failed step


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


GitQueryKind = Literal["branches", "file", "changed-files"]
MAX_QUERY_FILE = 1024 * 1024  # bytes of a file a git query may return


class GitQueryTask(Message):
    """A question about a repository, asked through the API; answered by POST /git-queries/{id}/answer."""

    kind: Literal["git_query"] = "git_query"
    query_id: str
    query: GitQueryKind
    repo: str  # owner/name (through `access`) or a full URL
    access: GitAccess
    path: str | None = None  # file
    revision: str | None = None  # file
    base: str | None = None  # changed-files
    head: str | None = None  # changed-files
    seconds: float = 20.0  # how long the asker waits: later answers are thrown away


class GitQueryAnswer(Message):
    """A runner's answer to a git query: `error` (with `error_kind`) or the fields of its kind."""

    error: str | None = Field(default=None, max_length=10_000)
    error_kind: Literal["not_found", "too_large", "failed"] | None = None
    branches: dict[str, str] | None = Field(default=None, max_length=100_000)  # name -> head SHA
    revision: str | None = None  # file: the commit SHA it was read at
    content: str | None = Field(default=None, max_length=(MAX_QUERY_FILE * 4) // 3 + 4)  # file: base64
    base: str | None = None  # changed-files: the SHAs compared
    head: str | None = None
    files: list[str] | None = Field(default=None, max_length=10_000)
    truncated: bool = False


class ClusterCheckTask(Message):
    """A kubernetes integration's connection test, asked through the API and answered by a runner, which asks
    the API server's /version with the integration's credential; answered by POST /cluster-checks/{id}/answer."""

    kind: Literal["cluster_check"] = "cluster_check"
    query_id: str
    access: ClusterAccess
    seconds: float = 20.0  # how long the asker waits: later answers are thrown away


class ClusterCheckAnswer(Message):
    """A runner's answer to a cluster check: what the API server said it runs, or why it could not be asked."""

    error: str | None = Field(default=None, max_length=10_000)
    git_version: str | None = Field(default=None, max_length=200)  # e.g. v1.30.2
    platform: str | None = Field(default=None, max_length=200)  # e.g. linux/amd64


Task = Annotated[
    RunBuildTask | CancelBuildTask | ApprovalTask | GitQueryTask | ClusterCheckTask, Field(discriminator="kind")
]


class PollResponse(Message):
    task: Task | None = None  # to a poll without max_tasks
    tasks: list[Task] | None = None  # to a poll with max_tasks (left out otherwise: older runners forbid it)

    def all(self) -> list[Task]:
        if self.tasks is not None:
            return self.tasks
        return [self.task] if self.task is not None else []


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
    # YAML from the repository: the file the runner read and the commit it read it at.
    yaml: str | None = Field(default=None, max_length=512 * 1024)
    yaml_revision: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")


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
    (`started`, log appends, step updates, the finish), or not at all. `started` rides the build's first
    report instead of an exchange of its own (docs/protocol.md)."""

    started: BuildStarted | None = None
    logs: list[LogAppend] = Field(default_factory=list, max_length=500)
    steps: list[StepReport] = Field(default_factory=list, max_length=500)
    finish: BuildFinished | None = None


REPORT_CONTENT_TYPE = "application/x-outpost-report"


class RawLogAppend(Message):
    stream: StreamName
    offset: int = Field(ge=0)
    size: int = Field(ge=0)  # bytes of this append in the report's tail


class ReportHead(Message):
    """A report whose log bytes travel raw (`REPORT_CONTENT_TYPE`): this head as one line of JSON, a newline,
    then the bytes of each append back to back, in the head's order. Saves base64 and a JSON string of the
    bytes on both sides, which were most of the cost of moving a log."""

    started: BuildStarted | None = None
    logs: list[RawLogAppend] = Field(default_factory=list, max_length=500)
    steps: list[StepReport] = Field(default_factory=list, max_length=500)
    finish: BuildFinished | None = None


class BadReport(ValueError):
    """A raw report whose tail does not match its head."""


def encode_report(
    logs: list[tuple[str, int, bytes]],
    steps: list[StepReport],
    finish: BuildFinished | None,
    started: BuildStarted | None = None,
) -> bytes:
    head = ReportHead(
        started=started,
        logs=[RawLogAppend(stream=s, offset=o, size=len(d)) for s, o, d in logs],
        steps=steps,
        finish=finish,
    )
    return b"".join([head.model_dump_json(exclude_none=True).encode(), b"\n", *(d for _, _, d in logs)])


def split_report(body: bytes) -> tuple[bytes, memoryview]:
    """The head's JSON and the tail of a raw report (BadReport without a newline)."""
    end = body.find(b"\n")
    if end < 0:
        raise BadReport("a raw report starts with one line of JSON and a newline; this one has no newline")
    return body[:end], memoryview(body)[end + 1 :]


def report_appends(head: ReportHead, tail: memoryview) -> list[tuple[str, int, bytes]]:
    """(stream, offset, bytes) of each append, cut from the tail by the sizes the head gives."""
    if sum(a.size for a in head.logs) != len(tail):
        raise BadReport(f"the head announces {sum(a.size for a in head.logs)} log bytes; {len(tail)} follow it")
    out, at = [], 0
    for a in head.logs:
        out.append((a.stream, a.offset, bytes(tail[at : at + a.size])))
        at += a.size
    return out


class LateLogs(Message):
    """Log bytes handed in by the holder of a build's expired lease (what ran until the runner's own
    lease deadline stopped it): appended like a report's, marked late, never changing a status."""

    logs: list[LogAppend] = Field(default_factory=list, max_length=500)


class ReportAccepted(Message):
    sizes: dict[str, int]  # for each stream of the report, the bytes the control plane now holds


MAX_TEST_CASES = 5000  # test cases one step may report (what its reports hold beyond is counted, not listed)
MAX_ARTIFACT_PATH = 1000


class JUnitCase(Message):
    """One test case of a step's JUnit reports, as the runner read them."""

    suite: str = Field(default="", max_length=500)
    classname: str = Field(default="", max_length=500)
    name: str = Field(min_length=1, max_length=1000)
    status: Literal["passed", "failed", "error", "skipped"]
    time: float | None = Field(default=None, ge=0, le=1e9)  # seconds
    message: str | None = Field(default=None, max_length=4000)


class JUnitReport(Message):
    """What a step's `junit` reports hold (POST /builds/{id}/annotations): it replaces what that step sent
    before, so a resend after a cut is harmless."""

    step: StepName
    cases: list[JUnitCase] = Field(default_factory=list, max_length=MAX_TEST_CASES)


class ArtifactAccepted(Message):
    """The answer to an artifact upload (PUT /artifacts/{build}?step=&path=, the raw bytes as the body)."""

    id: str
    size: int
    sha256: str


class ErrorBody(BaseModel):
    error: str
    message: str
    expected_offset: int | None = None

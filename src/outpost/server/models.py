"""The control plane's tables. Every row that belongs to a tenant carries its account_id.

Times are seconds since the epoch (floats): portable across SQLite and PostgreSQL and cheap to compare.
Tokens of every kind are stored only as SHA-256 hashes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


ID = String(32)
BIGINT = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER
HASH = String(64)


class Installation(Base):
    """The one row every control-plane replica shares: the installation's id, and a constant sealed with its secret
    key (`key_check`), which a replica started with another key cannot open."""

    __tablename__ = "installation"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    created_at: Mapped[float] = mapped_column(Double)
    key_check: Mapped[str] = mapped_column(Text)


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[float] = mapped_column(Double)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(HASH, unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double)
    last_used_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    # What the token may do in its account (viewer | developer | admin), optionally only for one pipeline
    # (no foreign key: a removed pipeline leaves a token that can do nothing), until it expires.
    role: Mapped[str] = mapped_column(String(20), default="admin")
    pipeline_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)  # who made it, as the audit log says


class Runtime(Base):
    __tablename__ = "runtimes"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double)


class InstallToken(Base):
    __tablename__ = "install_tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id"), index=True)
    token_hash: Mapped[str] = mapped_column(HASH, unique=True)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    used_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    runner_id: Mapped[str | None] = mapped_column(ID, nullable=True)


class Runner(Base):
    __tablename__ = "runners"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(HASH, unique=True)
    version: Mapped[str] = mapped_column(String(50), default="")
    executor: Mapped[str] = mapped_column(String(50), default="local")
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[float] = mapped_column(Double)
    last_seen_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    # Drained: it finishes what it runs and claims no new build until undrained (cancels, approvals still reach it).
    drained_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class Pipeline(Base):
    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id"))
    name: Mapped[str] = mapped_column(String(150))
    yaml: Mapped[str] = mapped_column(Text)
    yaml_file: Mapped[str] = mapped_column(String(255), default="codefresh.yml")
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # name -> ciphertext
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    # YAML from the repository: when `repo` is set, `yaml` is empty and the runner reads `yaml_file` from the
    # repository (owner/name through the git integration, or a full URL) at the build's revision.
    repo: Mapped[str | None] = mapped_column(String(500), nullable=True)
    git: Mapped[str | None] = mapped_column(String(100), nullable=True)  # a git integration's name
    revision: Mapped[str | None] = mapped_column(String(255), nullable=True)  # default branch, tag or SHA
    # Who may answer its approval steps: at least this role, and, when asked, not whoever started the build.
    approval_role: Mapped[str] = mapped_column(String(20), default="developer")
    approval_requires_other: Mapped[bool] = mapped_column(Boolean, default=False)
    # The number of its latest build: create_build takes the next one with one UPDATE … RETURNING, whose row
    # lock (PostgreSQL) or write lock (SQLite) makes concurrent builds take distinct numbers.
    last_build_number: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Its status badge's key (/badge/KEY/NAME.svg), when an admin turned the badge on: a public capability.
    badge_key: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True, index=True)


class Build(Base):
    __tablename__ = "builds"
    __table_args__ = (
        Index("ix_builds_dispatch", "runtime_id", "status", "created_at"),
        Index("ix_builds_account_created", "account_id", "created_at"),
        Index("uq_builds_pipeline_number", "pipeline_id", "number", unique=True),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"), index=True)
    pipeline_name: Mapped[str] = mapped_column(String(150))
    number: Mapped[int] = mapped_column(Integer)  # per pipeline, from 1: "my-app#42"
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id"))
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    yaml: Mapped[str] = mapped_column(Text)  # the exact YAML this build ran
    yaml_file: Mapped[str] = mapped_column(String(255), default="codefresh.yml")
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # merged: pipeline < run
    secrets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # name -> ciphertext, as run
    trigger: Mapped[str] = mapped_column(String(20), default="build")
    initiator: Mapped[str] = mapped_column(String(100), default="")
    initiator_id: Mapped[str | None] = mapped_column(String(100), nullable=True)  # "token:ID" | "user:ID"
    branch: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    claimed_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    runner_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    lease_id: Mapped[str | None] = mapped_column(ID, nullable=True)  # the current lease, if any
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancelled_by: Mapped[str | None] = mapped_column(String(200), nullable=True)  # as the audit log names them
    restarted_from: Mapped[str | None] = mapped_column(ID, nullable=True)  # the build a restart repeated
    # A restart from the failed step: the steps that succeeded in `restarted_from`, which the runner may skip
    # when it still holds that build's volume (docs/artifacts.md). None: every step runs.
    resume_steps: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    requeues: Mapped[int] = mapped_column(Integer, default=0)
    # The trigger that started it (no foreign key: a removed trigger leaves its builds), and a webhook's payload.
    trigger_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    event: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # What the Git event said of the commit and pull request (message, author, links), for pages and the CLI;
    # the raw payload above is kept for the build's event.json.
    git_context: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # YAML from the repository (copied from the pipeline): where the runner reads it, which ref it asked
    # for, and the commit SHA whose YAML ran (reported by the runner, with the YAML, at start).
    yaml_repo: Mapped[str | None] = mapped_column(String(500), nullable=True)
    yaml_git: Mapped[str | None] = mapped_column(String(100), nullable=True)
    yaml_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    yaml_revision: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Lease(Base):
    """One runner's claim on one build. Only the build's current lease may act on it (fencing)."""

    __tablename__ = "leases"
    __table_args__ = (Index("ix_leases_live", "ended_at", "expires_at"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    runner_id: Mapped[str] = mapped_column(ForeignKey("runners.id"))
    job_token_hash: Mapped[str] = mapped_column(HASH, unique=True)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(50), nullable=True)


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("build_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"))
    name: Mapped[str] = mapped_column(String(150))
    position: Mapped[int] = mapped_column(Integer, default=0)
    title: Mapped[str | None] = mapped_column(String(500), nullable=True)
    stage: Mapped[str | None] = mapped_column(String(150), nullable=True)
    type: Mapped[str] = mapped_column(String(150), default="freestyle")
    parent: Mapped[str | None] = mapped_column(String(150), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    log_size: Mapped[int] = mapped_column(BigInteger, default=0)
    # A pending-approval step's answer, given through the API; the runner waiting on it learns it by poll.
    decision: Mapped[str | None] = mapped_column(String(20), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    decision_sent_at: Mapped[float | None] = mapped_column(Double, nullable=True)  # handed to a poll


class LogChunk(Base):
    """An accepted piece of one step's log. `id` doubles as the build-wide cursor for followers."""

    __tablename__ = "log_chunks"
    __table_args__ = (Index("ix_log_chunks_build_cursor", "build_id", "id"),)
    id: Mapped[int] = mapped_column(BIGINT, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"))
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id"), index=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    # Set when a chunk is stored, so that a step added in the same transaction gets its id from the same flush
    # (one flush a report: the step's INSERT carries its final status and size). Never read through: it raises.
    step: Mapped[Step] = relationship(lazy="raise")


class Trigger(Base):
    """What starts a pipeline by itself: a Git provider's webhook (`git`) or a schedule (`cron`)."""

    __tablename__ = "triggers"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"), index=True)
    name: Mapped[str] = mapped_column(String(150))
    kind: Mapped[str] = mapped_column(String(10))  # "git" | "cron"
    provider: Mapped[str | None] = mapped_column(String(30), nullable=True)
    repo: Mapped[str | None] = mapped_column(String(255), nullable=True)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    branch_regex: Mapped[str | None] = mapped_column(Text, nullable=True)
    pr_target_regex: Mapped[str | None] = mapped_column(Text, nullable=True)
    comment_regex: Mapped[str | None] = mapped_column(Text, nullable=True)
    modified_files_glob: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The git integration a runner computes changed files through (else the pipeline's, else the default one).
    git: Mapped[str | None] = mapped_column(String(100), nullable=True)
    allow_fork_events: Mapped[bool] = mapped_column(Boolean, default=False)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    termination_policy: Mapped[str] = mapped_column(String(50), default="none")
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)  # sealed by the SecretBox: HMACs need it back
    cron: Mapped[str | None] = mapped_column(String(100), nullable=True)
    branch: Mapped[str | None] = mapped_column(String(255), nullable=True)  # a cron build's branch
    message: Mapped[str | None] = mapped_column(Text, nullable=True)  # a cron build's EVENT_MESSAGE
    last_fired_at: Mapped[float | None] = mapped_column(Double, nullable=True)  # the minute a cron last fired
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class Delivery(Base):
    """One webhook request to a trigger and what became of it. A provider's delivery id is unique per
    trigger, so a redelivery gets the stored answer instead of a second build."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("trigger_id", "delivery_id"),
        Index("ix_deliveries_trigger_received", "trigger_id", "received_at"),
        Index("ix_deliveries_pending_until", "pending_until"),  # few rows have one: finds stale pending ones
        Index("ix_deliveries_received", "received_at"),  # the oldest, removed past OUTPOST_DELIVERY_DAYS
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    trigger_id: Mapped[str] = mapped_column(ForeignKey("triggers.id"))
    received_at: Mapped[float] = mapped_column(Double)
    provider: Mapped[str] = mapped_column(String(30))
    event: Mapped[str | None] = mapped_column(String(100), nullable=True)  # the provider's event header
    delivery_id: Mapped[str | None] = mapped_column(String(255), nullable=True)  # None when not authenticated
    outcome: Mapped[str] = mapped_column(String(20))  # build | filtered | rejected | ignored | pending
    rule: Mapped[str | None] = mapped_column(String(30), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    build_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    status_code: Mapped[int] = mapped_column(Integer)
    answer: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the body answered, for redeliveries
    # A pending delivery waits for a runner to compute its changed files; past this time nobody will settle it.
    pending_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    # An authenticated delivery's body and the headers its provider's parser reads (no signature or token):
    # what "Redeliver" runs again. A redelivery names the delivery it repeated.
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    headers: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    redelivery_of: Mapped[str | None] = mapped_column(ID, nullable=True)


class Integration(Base):
    """A Git provider, registry or cluster an account's pipelines use. `secret` is sealed by the SecretBox;
    with `runner_secret` the credential lives only on the runners (by that name) and the control plane has
    none. The control plane never connects to one that is `behind_firewall`."""

    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("account_id", "kind", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # git | registry | cluster
    name: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(30))
    url: Mapped[str | None] = mapped_column(String(500), nullable=True)  # git, cluster
    domain: Mapped[str | None] = mapped_column(String(255), nullable=True)  # registry: host[:port]
    username: Mapped[str | None] = mapped_column(String(255), nullable=True)
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)  # sealed password or token
    runner_secret: Mapped[str | None] = mapped_column(String(255), nullable=True)
    behind_firewall: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    insecure: Mapped[bool] = mapped_column(Boolean, default=False)  # registry over plain HTTP
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    # Kubernetes (kind "cluster"): `url` is the API server, `secret` the sealed bearer token, or the sealed client
    # key when `client_cert_pem` is set. Only the pipelines allowed here get the cluster in their builds' tasks.
    namespace: Mapped[str | None] = mapped_column(String(253), nullable=True)
    ca_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    allowed_pipelines: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")  # pipeline ids
    all_pipelines: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class GitQuery(Base):
    """A question about a repository (branches, a file, changed files) that a runner of the runtime answers
    through its own poll: pending → sent (handed to a runner) → answered | failed | expired."""

    __tablename__ = "git_queries"
    __table_args__ = (Index("ix_git_queries_runtime_status", "runtime_id", "status", "created_at"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id"))
    integration_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    kind: Mapped[str] = mapped_column(String(20))  # branches | file | changed-files
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    runner_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    sent_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    answered_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class User(Base):
    """A person who logs in to the web UI, in one account. The password is stored as a salted scrypt hash;
    sessions are encrypted cookies, and every one issued before `sessions_after` (set by logging out) ends."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # scrypt$N$r$p$HEX
    salt: Mapped[str] = mapped_column(String(64))  # hex
    created_at: Mapped[float] = mapped_column(Double)
    sessions_after: Mapped[float | None] = mapped_column(Double, nullable=True)
    role: Mapped[str] = mapped_column(String(20), default="admin")  # viewer | developer | admin, in its account


class AuditEntry(Base):
    """One change, grant or secret read, kept for good: the store has no function that updates or deletes one.
    `actor` is "token NAME (ID)", "user NAME", "runner NAME (ID)" or "system"; `address` the client's IP."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_account_at", "account_id", "at"),)
    id: Mapped[int] = mapped_column(BIGINT, primary_key=True, autoincrement=True)
    account_id: Mapped[str | None] = mapped_column(ID, nullable=True)  # None: installation-wide (a new account)
    at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(50))  # e.g. pipeline.create, token.revoke, secret.read
    target: Mapped[str] = mapped_column(String(300), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Artifact(Base):
    """A file a step marked (`artifacts:`), uploaded by the runner after the step. The bytes live in the control
    plane's data folder (server/artifactfiles.py), the row says what and whose they are, and until when."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("build_id", "step", "path"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)  # also the file's name on disk
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    step: Mapped[str] = mapped_column(String(150))
    path: Mapped[str] = mapped_column(String(1000))  # relative to the build volume
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(HASH)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)


class Annotation(Base):
    """One test case of a step's JUnit reports (`junit:`), as the runner read it: a row of the build page's
    annotations."""

    __tablename__ = "annotations"
    id: Mapped[int] = mapped_column(BIGINT, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    step: Mapped[str] = mapped_column(String(150))
    position: Mapped[int] = mapped_column(Integer, default=0)  # in the reports' order
    suite: Mapped[str] = mapped_column(String(500), default="")
    classname: Mapped[str] = mapped_column(String(500), default="")
    name: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(10))  # passed | failed | error | skipped
    time: Mapped[float | None] = mapped_column(Double, nullable=True)  # seconds
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class RateBucket(Base):
    """One client's allowance on one rate-limited route (server/guards.py), shared by every replica on one
    PostgreSQL database: a token bucket, refilled from `at` at the limit's rate. Idle ones are removed by the cron."""

    __tablename__ = "rate_buckets"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)  # what is limited: login, token, webhook, …
    client: Mapped[str] = mapped_column(Text, primary_key=True)  # the client address
    tokens: Mapped[float] = mapped_column(Double)
    at: Mapped[float] = mapped_column(Double, index=True)  # wall clock of the last take
    allowed: Mapped[bool] = mapped_column(Boolean, default=True)  # whether the last take was allowed


class LoginFailure(Base):
    """Failed logins of one username from one client address (ui/lockout.py), shared by every replica on one
    PostgreSQL database."""

    __tablename__ = "login_failures"
    address: Mapped[str] = mapped_column(Text, primary_key=True)
    username: Mapped[str] = mapped_column(Text, primary_key=True)  # lower-cased
    count: Mapped[int] = mapped_column(Integer)
    until: Mapped[float] = mapped_column(Double)  # no try before this (wall clock)
    last: Mapped[float] = mapped_column(Double, index=True)

"""Settings read once at start-up from the environment (OUTPOST_*) and passed down explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outpost.errors import OutpostError


@dataclass(frozen=True)
class ServerSettings:
    database_url: str = "sqlite+aiosqlite:///.outpost/outpost.db"
    data_dir: Path = Path(".outpost")
    public_url: str = ""  # how users and runners reach us; defaults to the listening address
    lease_ttl: float = 45.0  # seconds a runner's lease lives without a heartbeat
    heartbeat_interval: float = 10.0  # seconds between a runner's heartbeats
    poll_timeout: float = 30.0  # longest a runner's poll is held open
    max_polls: int = 10_000  # polls held at once by this process; past it a poll gets 503 + Retry-After
    max_log_chunk: int = 4 * 1024 * 1024  # bytes in one log append
    max_request_body: int = 8 * 1024 * 1024  # bytes in any other request
    max_requeues: int = 3  # times a never-started build goes back to the queue before it errors
    changed_files_wait: float = 30.0  # seconds a webhook waits for a runner to compute its changed files (max 60)
    secret_key: str = ""  # Fernet key for secrets at rest; default: <data dir>/secret.key, made on first start
    # Requests per client address per rate_window (0: no limit); kept in memory by each server process.
    rate_window: float = 60.0  # seconds in which a client's allowance refills
    rate_login: int = 30  # login attempts (the UI's POST /login)
    rate_tokens: int = 60  # API and install tokens created (one allowance for both)
    rate_webhooks: int = 1200  # webhook deliveries
    rate_register: int = 30  # runner registrations
    login_free_failures: int = 5  # failed logins for one username from one address before delays begin
    login_delay: float = 1.0  # seconds of the first delay; each further failure doubles it
    login_max_delay: float = 900.0  # the longest delay
    metrics_token: str = ""  # a bearer token that may read /metrics and nothing else (the superuser token may too)
    artifact_days: float = 30.0  # days a build's artifacts are kept (then the cron removes them)
    delivery_days: float = 30.0  # days a webhook delivery (its body, headers and outcome) is kept
    max_artifact_bytes: int = 100 * 1024 * 1024  # bytes of one artifact file
    max_build_artifacts: int = 200  # artifact files of one build

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServerSettings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        fields = {
            "OUTPOST_DATABASE_URL": ("database_url", str),
            "OUTPOST_DATA_DIR": ("data_dir", Path),
            "OUTPOST_PUBLIC_URL": ("public_url", str),
            "OUTPOST_LEASE_TTL": ("lease_ttl", float),
            "OUTPOST_HEARTBEAT_INTERVAL": ("heartbeat_interval", float),
            "OUTPOST_POLL_TIMEOUT": ("poll_timeout", float),
            "OUTPOST_MAX_POLLS": ("max_polls", int),
            "OUTPOST_MAX_LOG_CHUNK": ("max_log_chunk", int),
            "OUTPOST_MAX_REQUEUES": ("max_requeues", int),
            "OUTPOST_CHANGED_FILES_WAIT": ("changed_files_wait", float),
            "OUTPOST_SECRET_KEY": ("secret_key", str),
            "OUTPOST_RATE_WINDOW": ("rate_window", float),
            "OUTPOST_RATE_LOGIN": ("rate_login", int),
            "OUTPOST_RATE_TOKENS": ("rate_tokens", int),
            "OUTPOST_RATE_WEBHOOKS": ("rate_webhooks", int),
            "OUTPOST_RATE_REGISTER": ("rate_register", int),
            "OUTPOST_LOGIN_FREE_FAILURES": ("login_free_failures", int),
            "OUTPOST_LOGIN_DELAY": ("login_delay", float),
            "OUTPOST_LOGIN_MAX_DELAY": ("login_max_delay", float),
            "OUTPOST_METRICS_TOKEN": ("metrics_token", str),
            "OUTPOST_ARTIFACT_DAYS": ("artifact_days", float),
            "OUTPOST_DELIVERY_DAYS": ("delivery_days", float),
            "OUTPOST_MAX_ARTIFACT_BYTES": ("max_artifact_bytes", int),
            "OUTPOST_MAX_BUILD_ARTIFACTS": ("max_build_artifacts", int),
        }
        for var, (name, kind) in fields.items():
            if var in env and env[var] != "":
                try:
                    values[name] = kind(env[var])
                except ValueError:
                    raise OutpostError(f"{var}={env[var]!r} is not a valid {kind.__name__}") from None
        values.update(overrides)
        if "database_url" not in values:  # by default the database lives in the data folder
            values["database_url"] = sqlite_url(Path(values.get("data_dir", cls.data_dir)))
        return cls(**values)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'outpost.db').as_posix()}"

"""The processes' own log lines (not builds' logs): text by default, or one JSON object per line
(`--log-format json`, OUTPOST_LOG_FORMAT=json) that names the build, runner and account a line concerns.

Who a line concerns travels in context variables: set once for a runner process, per task for a build the
runner runs, per request on the control plane. A record's own `extra={"build_id": ...}` wins over them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

FORMATS = ("text", "json")
ENV_VARIABLE = "OUTPOST_LOG_FORMAT"

BUILD_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("outpost_build_id", default=None)
RUNNER_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("outpost_runner_id", default=None)
ACCOUNT: contextvars.ContextVar[str | None] = contextvars.ContextVar("outpost_account", default=None)
CONTEXT = {"build_id": BUILD_ID, "runner_id": RUNNER_ID, "account": ACCOUNT}
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that say a line per HTTP call (httpx2: lightkube's, a line per Kubernetes API call).
NOISY = ("httpx", "httpx2", "alembic")


class JsonFormatter(logging.Formatter):
    """time (UTC, ISO 8601 with milliseconds), level, logger, message, then build_id, runner_id and account
    where known, and the traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in CONTEXT.items():
            value = getattr(record, key, None) or var.get()
            if value:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(file: Path | None = None, *, log_format: str = "text", level: int = logging.INFO) -> None:
    """The root logger writes to `file` when given (the terminal shows build logs then), else to stderr."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def context(**values: str | None) -> contextvars.Context:
    """A copy of the current context with these set (build_id=..., runner_id=..., account=...), for
    `asyncio.create_task(..., context=...)`: the task's lines carry them, the caller's do not."""
    ctx = contextvars.copy_context()
    for key, value in values.items():
        ctx.run(CONTEXT[key].set, value)
    return ctx

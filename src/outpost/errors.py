"""The one error tree of Outpost.

    OutpostError
    ├── PipelineError        a pipeline file is invalid (carries every problem, with file:line:column)
    ├── ExecutorError        a step could not be run by the executor
    ├── ProtocolError        the runner protocol was broken (by either side)
    │   └── LeaseLost        the control plane refused our lease: abandon the build
    └── StoreError           a store function refused a request
        ├── NotFound         no such object in this account (404)
        ├── Conflict         the object exists or is in the wrong state (409)
        ├── Unauthorized     unknown or revoked token (401)
        ├── Forbidden        the token may not do this (403)
        ├── Invalid          the request is well-formed but makes no sense (422)
        ├── TooLarge         the request (a body, a log chunk, an answer) is larger than allowed (413)
        └── Unavailable      the control plane is overloaded for now (503 with Retry-After)

The server maps StoreError subclasses to HTTP answers in one place (server/api/errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass


class OutpostError(Exception):
    """Base of every error Outpost raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline file, at a place in it."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PipelineError(OutpostError):
    """A pipeline file is invalid; `problems` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.column))
        super().__init__("\n".join(str(p) for p in self.problems))


class ExecutorError(OutpostError):
    """A step could not be run by the executor (not the step's own failure)."""


class ProtocolError(OutpostError):
    """The runner protocol was broken: an answer we cannot understand or act on."""


class LeaseLost(ProtocolError):
    """The control plane refused our lease (409): another runner owns the build or it ended."""


class StoreError(OutpostError):
    status_code = 400

    def __init__(self, message: str, **details: object) -> None:
        self.message = message
        self.details = details
        super().__init__(message)


class NotFound(StoreError):
    status_code = 404


class Conflict(StoreError):
    status_code = 409


class Unauthorized(StoreError):
    status_code = 401


class Forbidden(StoreError):
    status_code = 403


class Invalid(StoreError):
    status_code = 422


class TooLarge(StoreError):
    status_code = 413


class Unavailable(StoreError):
    """The control plane is overloaded for now: 503 with a Retry-After (details["retry_after"], seconds)."""

    status_code = 503

"""The body of every error answer: a machine-readable code and a sentence for people."""

from __future__ import annotations

from typing import Any


def error_body(error: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": error, "message": message, **details}

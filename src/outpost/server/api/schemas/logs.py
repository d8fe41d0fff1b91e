"""A page of a build's log, followed by cursor."""

from __future__ import annotations

from pydantic import BaseModel


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

"""Git queries a runner answers for the control plane: branches, a file, changed files (docs/git.md)."""

from __future__ import annotations

from pydantic import BaseModel


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

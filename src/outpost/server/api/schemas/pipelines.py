"""Pipelines, and validating a pipeline file."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from outpost.server.api.schemas.base import In, Out, Time, Variables


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


class PipelineOut(Out):
    id: str
    name: str
    runtime: str
    yaml_file: str
    yaml: str
    variables: Variables
    secrets: list[str]  # names only: values are never shown again
    created_at: Time
    updated_at: Time
    repo: str | None = None  # YAML from the repository: where, through which integration, at which revision
    git: str | None = None
    revision: str | None = None
    approval_role: str = "developer"
    approval_requires_other: bool = False


class ValidateIn(In):
    yaml: str = Field(max_length=512 * 1024)
    file: str = Field(default="codefresh.yml", max_length=255)


class ValidateOut(BaseModel):
    valid: bool
    problems: list[str]
    summary: str | None = None

"""The `outpost` command."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from outpost import __version__
from outpost.cli.api import Api, ApiError
from outpost.cli.config import resolve
from outpost.cli.following import describe, follow
from outpost.errors import OutpostError, PipelineError, Problem

P = ParamSpec("P")
R = TypeVar("R")


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turns our errors into a message on stderr and exit code 2 (1 is kept for failed builds); with --json,
    the error is also printed as JSON on stdout, so a script always has JSON to read."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except OutpostError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            if kwargs.get("as_json"):
                body = getattr(exc, "body", None)
                emit_json(body if isinstance(body, dict) else {"error": "cli", "message": str(exc)})
            sys.exit(2)

    return wrapper


def api_from(ctx: click.Context) -> Api:
    obj = ctx.ensure_object(dict)
    if "api" not in obj:
        obj["api"] = Api(resolve(obj.get("url"), obj.get("token")))
    api: Api = obj["api"]
    return api


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def parse_vars(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--var")
        out[key] = value
    return out


# Where each command group lives: imported only when that command runs (or help lists them all), so a
# command does not pay for the runner, the engine or the server it does not use.
LAZY = {
    "runtime": "admin",
    "runners": "admin",
    "token": "admin",
    "account": "admin",
    "user": "admin",
    "audit": "admin",
    "runner": "agent",
    "build": "builds",
    "open": "builds",
    "completion": "completion",
    "integration": "integrations",
    "git": "integrations",
    "trigger": "triggers",
    "up": "up",
    "server": "up",
}


# What `outpost --help` says of each lazy command (the first paragraph of its own help), so that listing them
# imports none of their modules; tests/cli/test_start.py checks each against the command's help.
SUMMARIES = {
    "runtime": "Runtimes: named groups of runners that run a pipeline's builds.",
    "runners": "Registered runners.",
    "token": "API tokens of this account.",
    "account": "Accounts (tenants); needs the installation's admin token.",
    "user": "People who log in to the web UI, in this account (needs the admin role).",
    "audit": "The account's audit log (needs the admin role).",
    "runner": "The runner: install it inside your network; it only connects out.",
    "build": "Inspect, follow and cancel builds.",
    "open": "Open BUILD's page in the web browser ($BROWSER, else the system's); print its address.",
    "completion": "Print the completion script for SHELL, to load from the shell's start-up file:",
    "integration": "Integrations: Git providers, registries and Kubernetes clusters, optionally behind the firewall.",
    "git": "Ask a repository through a runner: the control plane never connects to the Git server.",
    "trigger": "Git triggers (a provider's webhook) and cron triggers that start pipelines.",
    "up": "Control plane and a local runner on SQLite, with the example pipeline running.",
    "server": "The control plane alone (runners connect to it from their own networks).",
}


class LazyGroup(click.Group):
    """The top-level group: its modules register their commands on it when they are first imported."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            importlib.import_module(f"outpost.cli.{LAZY[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not loaded yet is described by SUMMARIES (its module is imported only
        when it has no summary there)."""
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name)
            if cmd is None:
                summary = SUMMARIES.get(name)
                cmd = click.Command(name, help=summary) if summary is not None else self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="outpost")
@click.option("--url", envvar="OUTPOST_URL", help="Control plane address (default: from `outpost up`).")
@click.option("--token", envvar="OUTPOST_TOKEN", help="API token (default: from `outpost up`).")
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Outpost CI: a control plane in one place, outbound-only runners behind the firewall."""
    ctx.ensure_object(dict).update(url=url, token=token)


# --- validate ------------------------------------------------------------------------------------


def _located(p: Problem) -> dict[str, object]:
    return {"file": p.file, "line": p.line, "column": p.column, "message": p.message}


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print {valid, summary, problems, warnings} as JSON.")
def validate(file: Path, as_json: bool) -> None:
    """Check a codefresh.yml offline: every problem as FILE:LINE:COL: message, and likely typos as
    FILE:LINE:COL: warning: message. Exit 1 on a problem; warnings alone exit 0."""
    from outpost.pipelines.parsing import load_pipeline, summary

    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        click.secho(f"{file}: cannot read: {exc.strerror}", fg="red", err=True)
        sys.exit(2)
    except UnicodeDecodeError as exc:
        text, problems = "", [Problem(str(file), 1, 1, f"the file is not UTF-8 ({exc.reason} at byte {exc.start})")]
    else:
        problems = []
    pipeline = None
    if not problems:
        try:
            pipeline = load_pipeline(text, str(file))
        except PipelineError as exc:
            problems = exc.problems
    warnings = pipeline.warnings if pipeline else []
    if as_json:
        emit_json(
            {
                "file": str(file),
                "valid": pipeline is not None,
                "summary": summary(pipeline) if pipeline else None,
                "problems": [_located(p) for p in problems],
                "warnings": [_located(w) for w in warnings],
            }
        )
        sys.exit(0 if pipeline else 1)
    for problem in problems:
        click.echo(str(problem))
    if pipeline is None:
        count = len(problems)
        click.secho(f"{count} problem{'s' if count != 1 else ''} in {file}", fg="red", err=True)
        sys.exit(1)
    for w in warnings:
        click.echo(f"{w.file}:{w.line}:{w.column}: warning: {w.message}")
    click.echo(f"{file}: valid: {summary(pipeline)}")


# --- pipelines and runs --------------------------------------------------------------------------


@main.group()
def pipeline() -> None:
    """Create and inspect pipelines."""


APPROVAL_ROLE = click.option(
    "--approval-role",
    type=click.Choice(["viewer", "developer", "admin"]),
    help="The role needed to answer its approval steps (default: developer).",
)
APPROVAL_OTHER = click.option(
    "--approval-requires-other/--approval-by-anyone",
    "approval_requires_other",
    default=None,
    help="Nobody approves a build they started themselves.",
)


@pipeline.command("update")
@click.argument("name")
@APPROVAL_ROLE
@APPROVAL_OTHER
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def pipeline_update(
    ctx: click.Context, name: str, approval_role: str | None, approval_requires_other: bool | None, as_json: bool
) -> None:
    """Change pipeline NAME's approval rules (its YAML and variables: `pipeline create --update`)."""
    patch = {"approval_role": approval_role, "approval_requires_other": approval_requires_other}
    result = api_from(ctx).request(
        "PATCH", f"/pipelines/{name}", json={k: v for k, v in patch.items() if v is not None}
    )
    if as_json:
        emit_json(result)
    else:
        other = ", not by whoever started the build" if result["approval_requires_other"] else ""
        click.echo(f"pipeline {result['name']}: approvals by {result['approval_role']} or above{other}")


@pipeline.command("create")
@click.argument("name")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Inline YAML.")
@click.option("--repo", help="YAML from the repository: OWNER/NAME (through --git) or a clone URL.")
@click.option("--git", "git", metavar="INTEGRATION", help="Git integration for --repo (default: the default one).")
@click.option("--path", "yaml_path", default="codefresh.yml", show_default=True, help="The YAML's path in --repo.")
@click.option("--revision", help="Branch, tag or SHA to read the YAML at when a build names none.")
@click.option("--runtime", help="Runtime whose runners run it (default: the account's default runtime).")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", help="A pipeline variable.")
@click.option(
    "--secret-var",
    "secrets",
    multiple=True,
    metavar="KEY=VALUE",
    help="A secret variable: stored encrypted, never shown again, masked in logs.",
)
@click.option("--update", is_flag=True, help="Replace the YAML and variables if the pipeline exists.")
@APPROVAL_ROLE
@APPROVAL_OTHER
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def pipeline_create(
    ctx: click.Context,
    name: str,
    file: Path | None,
    repo: str | None,
    git: str | None,
    yaml_path: str,
    revision: str | None,
    runtime: str | None,
    variables: tuple[str, ...],
    secrets: tuple[str, ...],
    update: bool,
    approval_role: str | None,
    approval_requires_other: bool | None,
    as_json: bool,
) -> None:
    """Create pipeline NAME from a codefresh.yml file (--file), or from one a runner reads from the repository at
    each build's revision (--repo, --git, --path)."""
    api = api_from(ctx)
    if (file is None) == (repo is None):
        raise click.UsageError("give --file FILE or --repo REPO")
    body: dict[str, object] = {"name": name, "runtime": runtime}
    if file is not None:
        body.update(yaml=file.read_text(), yaml_file=file.name)
    else:
        body.update(repo=repo, git=git, yaml_file=yaml_path, revision=revision)
    body["variables"] = parse_vars(variables)
    body["secrets"] = parse_vars(secrets)
    body.update(approval_role=approval_role, approval_requires_other=approval_requires_other)
    try:
        result = api.post("/pipelines", json=body)
    except ApiError as exc:
        if not (update and exc.status == 409):
            raise
        # Secrets are replaced only when given: they cannot be read back to be kept.
        patch = {k: v for k, v in body.items() if k != "name" and v is not None and (k != "secrets" or v)}
        result = api.request("PATCH", f"/pipelines/{name}", json=patch)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"pipeline {result['name']} ready (runtime {result['runtime']}); run it: outpost run {name}")


@pipeline.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def pipeline_list(ctx: click.Context, as_json: bool) -> None:
    """List the account's pipelines."""
    rows = api_from(ctx).get("/pipelines")
    if as_json:
        emit_json(rows)
        return
    for p in rows:
        click.echo(f"{p['name']:<30} runtime={p['runtime']:<16} updated {p['updated_at']}")


@pipeline.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def pipeline_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a pipeline and its YAML."""
    p = api_from(ctx).get(f"/pipelines/{name}")
    if as_json:
        emit_json(p)
        return
    click.echo(f"pipeline {p['name']}  runtime={p['runtime']}  file={p['yaml_file']}")
    for key, value in p["variables"].items():
        click.echo(f"  {key}={value}")
    for key in p.get("secrets", []):
        click.echo(f"  {key}=***** (secret)")
    if p.get("repo"):
        via = f" through git integration {p['git']}" if p.get("git") else ""
        at = f", by default at {p['revision']}" if p.get("revision") else ""
        click.echo(f"YAML from the repository: {p['yaml_file']} in {p['repo']}{via}{at}")
        return
    click.echo(p["yaml"])


@main.command()
@click.argument("name")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", help="A build variable.")
@click.option("--branch", help="Branch the build is for.")
@click.option("--sha", help="Commit the build is for.")
@click.option("--detach", "-d", is_flag=True, help="Start the build and return without following it.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the finished (or, with -d, new) build as JSON; the log goes to stderr.",
)
@click.pass_context
@friendly
def run(
    ctx: click.Context,
    name: str,
    variables: tuple[str, ...],
    branch: str | None,
    sha: str | None,
    detach: bool,
    as_json: bool,
) -> None:
    """Start a build of pipeline NAME and follow its log; exit 0 on success, 1 otherwise."""
    api = api_from(ctx)
    body = {"variables": parse_vars(variables), "branch": branch, "sha": sha}
    build = api.post(f"/pipelines/{name}/builds", json=body)
    for warning in build.get("warnings", []):
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if detach:
        emit_json(build) if as_json else click.echo(build["id"])
        return
    click.echo(f"build {build['id']} queued: {build['url']}", err=True)
    try:
        # With --json the log goes to stderr, so stdout is the build's JSON alone (a script can parse it).
        final = follow(api, build["id"], sys.stderr.buffer if as_json else sys.stdout.buffer)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the build goes on. Cancel it: outpost build cancel {build['id']}", err=True)
        sys.exit(130)
    if as_json:
        emit_json(final)
    click.echo(describe(final), err=True)
    sys.exit(0 if final["status"] == "success" else 1)

"""`outpost build ...`: list, show, logs, cancel, restart, approve, deny, artifacts; and `outpost open BUILD`."""

from __future__ import annotations

import sys
import webbrowser
from pathlib import Path
from urllib.parse import quote

import click

from outpost.cli import api_from, emit_json, friendly, main
from outpost.cli.api import Api
from outpost.cli.following import FINAL, describe, follow
from outpost.errors import OutpostError


@main.group()
def build() -> None:
    """Inspect, follow and cancel builds."""


BUILD_HELP = "BUILD is a build's id or PIPELINE#NUMBER (my-app#42)."


def build_id_of(api: Api, ref: str) -> str:
    """A build's id from its id or from `pipeline#number`, the way pages and lists name it."""
    pipeline, sep, number = ref.rpartition("#")
    if not sep:
        return ref
    if not pipeline or not number.isdigit():
        raise OutpostError(f"{ref!r} is not a build: expected its id or PIPELINE#NUMBER, e.g. my-app#42")
    found: str = api.get(f"/pipelines/{quote(pipeline, safe='')}/builds/{number}")["id"]
    return found


@build.command("list")
@click.option("--pipeline", help="Only builds of this pipeline.")
@click.option("--status", help="Only builds in this status.")
@click.option("--branch", help="Only builds of this branch.")
@click.option("--trigger", help="Only builds started so: build (by hand), webhook or cron.")
@click.option("--author", help="Only builds started by this user, token or Git actor.")
@click.option("--search", "-q", help="Builds whose pipeline, branch or commit message contains this.")
@click.option("--before", metavar="BUILD_ID", help="The page after this build (the last id of the previous page).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def build_list(ctx: click.Context, /, limit: int, as_json: bool, **filters: str | None) -> None:
    """The newest builds first; --before pages on to older ones."""
    names = {"search": "q"}
    params: dict[str, str | int] = {names.get(k, k): v for k, v in filters.items() if v}
    rows = api_from(ctx).get("/builds", params={**params, "limit": limit})
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no builds")
    for b in rows:
        duration = f"{b['duration']:.1f}s" if b["duration"] is not None else "-"
        name = f"{b['pipeline']}#{b['number']}"
        click.echo(f"{b['id']}  {b['status']:<10} {name:<30} {duration:>8}  {b['created_at']}")


@build.command("show", epilog=BUILD_HELP)
@click.argument("build_id", metavar="BUILD")
@click.option("--yaml", "show_yaml", is_flag=True, help="Also print the YAML the build ran.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def build_show(ctx: click.Context, build_id: str, show_yaml: bool, as_json: bool) -> None:
    """A build with its steps."""
    api = api_from(ctx)
    b = api.get(f"/builds/{build_id_of(api, build_id)}")
    if as_json:
        emit_json(b)
        return
    click.echo(f"{b['pipeline']}#{b['number']}: {describe(b)}")
    click.echo(f"  pipeline {b['pipeline']}  trigger {b['trigger']}  by {b['initiator']}  created {b['created_at']}")
    git = b.get("git_context") or {}
    if b.get("sha"):
        message = (git.get("message") or "").strip().splitlines()
        by = f" ({git['author']})" if git.get("author") else ""
        click.echo(f"  commit {b['sha']}{'  ' + message[0] if message else ''}{by}")
        if git.get("commit_url"):
            click.echo(f"    {git['commit_url']}")
    if git.get("pr_number"):
        title = f" {git['pr_title']}" if git.get("pr_title") else ""
        click.echo(f"  pull request #{git['pr_number']}{title}  {git.get('pr_url') or ''}".rstrip())
    if b.get("cancelled_by"):
        click.echo(f"  cancelled by {b['cancelled_by']}")
    if b.get("yaml_repo"):
        at = b.get("yaml_revision") or "(not read yet)"
        click.echo(f"  YAML {b['yaml_file']} from {b['yaml_repo']} at {at}")
    for s in b["steps"] or []:
        if s["name"].startswith("$"):
            continue
        code = f" exit {s['exit_code']}" if s["exit_code"] not in (None, 0) else ""
        note = f"  ({s['message']})" if s["message"] and s["status"] != "success" else ""
        answer = f"  ({s['decision']} by {s['decided_by']})" if s.get("decision") and s.get("decided_by") else ""
        click.echo(f"  {s['status']:<10} {s['name']}{code}{note}{answer}")
    if show_yaml and b.get("yaml"):
        click.echo(f"--- {b['yaml_file']}")
        click.echo(b["yaml"].rstrip("\n"))


@build.command("logs", epilog=BUILD_HELP)
@click.argument("build_id", metavar="BUILD")
@click.option("--step", help="Only this step's log, raw.")
@click.option("--follow", "-f", "follow_", is_flag=True, help="Keep printing until the build ends.")
@click.option("--json", "as_json", is_flag=True, help="Each step's log as JSON (no following).")
@click.pass_context
@friendly
def build_logs(ctx: click.Context, build_id: str, step: str | None, follow_: bool, as_json: bool) -> None:
    """Print a build's log (all steps, in order)."""
    api = api_from(ctx)
    build_id = build_id_of(api, build_id)
    out = sys.stdout.buffer
    if step:
        out.write(api.get(f"/builds/{build_id}/steps/{step}/log"))
        out.flush()
        return
    if as_json:
        b = api.get(f"/builds/{build_id}")
        emit_json(
            {
                s["name"]: api.get(f"/builds/{build_id}/steps/{s['name']}/log").decode(errors="replace")
                for s in b["steps"] or []
            }
        )
        return
    if follow_:
        final = follow(api, build_id, out)
        click.echo(describe(final), err=True)
        return
    from outpost.wire import SYSTEM_STREAM  # wire loads pydantic: only when a log is printed

    b = api.get(f"/builds/{build_id}")
    for s in sorted(b["steps"] or [], key=lambda s: s["name"] != SYSTEM_STREAM):
        if s["log_size"]:
            title = "outpost" if s["name"] == SYSTEM_STREAM else f"step: {s['name']}"
            out.write(f"── {title} ──\n".encode())
            data = api.get(f"/builds/{build_id}/steps/{s['name']}/log")
            out.write(data if data.endswith(b"\n") else data + b"\n")
    out.flush()


@build.command("cancel", epilog=BUILD_HELP)
@click.argument("build_id", metavar="BUILD")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the build has ended.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def build_cancel(ctx: click.Context, build_id: str, wait: bool, as_json: bool) -> None:
    """Cancel a build: a queued one ends at once; a running one's processes are stopped."""
    api = api_from(ctx)
    build_id = build_id_of(api, build_id)
    b = api.post(f"/builds/{build_id}/cancel")
    if wait and b["status"] not in FINAL:
        cursor = 0
        while True:
            page = api.get(f"/builds/{build_id}/log", params={"after": cursor, "wait": 20})
            cursor = page["cursor"]
            if page["finished"]:
                break
        b = api.get(f"/builds/{build_id}")
    if as_json:
        emit_json(b)
    else:
        click.echo(describe(b) if b["status"] in FINAL else f"build {build_id}: cancel requested")
    sys.exit(0)


@build.command("restart", epilog=BUILD_HELP)
@click.argument("build_id", metavar="BUILD")
@click.option(
    "--from-failed",
    is_flag=True,
    help="Skip the steps that succeeded (on the runner that still holds the build's volume; else all run).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def build_restart(ctx: click.Context, build_id: str, from_failed: bool, as_json: bool) -> None:
    """Run a finished build again: the same branch, commit and variables. Prints the new build."""
    api = api_from(ctx)
    old = build_id_of(api, build_id)
    b = api.post(f"/builds/{old}/restart", json={"from_failed": from_failed})
    if as_json:
        emit_json(b)
        return
    how = "from its failed step" if from_failed else "whole"
    click.echo(f"{b['pipeline']}#{b['number']} ({b['id']}) restarts {build_id} {how}: {b['url']}")
    for warning in b.get("warnings") or []:
        click.echo(f"warning: {warning}", err=True)


@build.command("artifacts", epilog=BUILD_HELP)
@click.argument("build_id", metavar="BUILD")
@click.option(
    "--download",
    "into",
    type=click.Path(file_okay=False, path_type=Path),
    help="Save every artifact under this folder, at its path in the build volume.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def build_artifacts(ctx: click.Context, build_id: str, into: Path | None, as_json: bool) -> None:
    """List the files a build's steps marked (`artifacts:`), or download them."""
    api = api_from(ctx)
    build_id = build_id_of(api, build_id)
    rows = api.get(f"/builds/{build_id}/artifacts")
    if into is not None:
        for a in rows:
            target = into.joinpath(*a["path"].split("/"))
            if ".." in a["path"].split("/") or not target.resolve().is_relative_to(into.resolve()):
                raise OutpostError(f"artifact path {a['path']!r} leads outside {into}: not saved")
            target.parent.mkdir(parents=True, exist_ok=True)
            api.download(f"/builds/{build_id}/artifacts/{a['id']}", target)
            a["saved_to"] = str(target)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no artifacts (or they expired)")
    for a in rows:
        saved = f"  -> {a['saved_to']}" if "saved_to" in a else ""
        click.echo(f"{a['size']:>12}  {a['step']:<20} {a['path']}{saved}")


@build.command("approve", epilog=BUILD_HELP)
@click.argument("build_id", metavar="BUILD")
@click.argument("step")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def build_approve(ctx: click.Context, build_id: str, step: str, as_json: bool) -> None:
    """Approve a pending-approval STEP of a running build: the build goes on at once."""
    _answer(ctx, build_id, step, "approve", as_json)


@build.command("deny", epilog=BUILD_HELP)
@click.argument("build_id", metavar="BUILD")
@click.argument("step")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def build_deny(ctx: click.Context, build_id: str, step: str, as_json: bool) -> None:
    """Deny a pending-approval STEP: it ends as `denied` (the build fails unless its fail_fast is false)."""
    _answer(ctx, build_id, step, "deny", as_json)


def _answer(ctx: click.Context, build_id: str, step: str, verb: str, as_json: bool) -> None:
    api = api_from(ctx)
    build_id = build_id_of(api, build_id)
    b = api.post(f"/builds/{build_id}/steps/{step}/{verb}")
    if as_json:
        emit_json(b)
    else:
        answered = next((s for s in b.get("steps") or [] if s["name"] == step), None)
        by = f" by {answered['decided_by']}" if answered and answered.get("decided_by") else ""
        click.echo(f"build {build_id}: step {step} {verb.replace('approve', 'approved').replace('deny', 'denied')}{by}")
    sys.exit(0)


@main.command("open", epilog=BUILD_HELP)
@click.argument("build_id", metavar="BUILD")
@click.option("--json", "as_json", is_flag=True, help="Print {id, url} instead of opening a browser.")
@click.pass_context
@friendly
def open_build(ctx: click.Context, build_id: str, as_json: bool) -> None:
    """Open BUILD's page in the web browser ($BROWSER, else the system's); print its address."""
    api = api_from(ctx)
    b = api.get(f"/builds/{build_id_of(api, build_id)}")
    if as_json:
        emit_json({"id": b["id"], "url": b["url"]})
        return
    click.echo(b["url"])
    if not webbrowser.open(b["url"]):
        click.echo("no web browser found: open the address above", err=True)

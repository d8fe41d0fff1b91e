"""`outpost integration ...` (Git providers, registries) and `outpost git ...` (git queries a runner answers)."""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from typing import Any

import click

from outpost.cli import api_from, emit_json, friendly, main

GIT_PROVIDERS = ("github", "github-enterprise", "gitlab", "bitbucket-server", "git")
KINDS = ("git", "registry", "cluster")


@main.group()
def integration() -> None:
    """Integrations: Git providers and registries, optionally behind the firewall."""


@integration.group("add")
def integration_add() -> None:
    """Add an integration."""


def _common(fn: Any) -> Any:
    options: list[Callable[[Any], Any]] = [
        click.option("--username", help="User name for the password or token."),
        click.option("--password", help="Password (stored encrypted; never shown again)."),
        click.option("--token", "token_", help="Access token (stored encrypted; never shown again)."),
        click.option(
            "--runner-secret",
            metavar="NAME",
            help="Keep the credential only on the runners, under this name in their --secrets-file.",
        ),
        click.option(
            "--behind-firewall", is_flag=True, help="Only runners can reach it: the control plane never connects."
        ),
        click.option("--default", "is_default", is_flag=True, help="The default integration of its kind."),
        click.option("--tag", "tags", multiple=True, help="A tag (repeatable)."),
        click.option("--json", "as_json", is_flag=True),
        click.pass_context,
        friendly,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _add(ctx: click.Context, body: dict[str, Any], as_json: bool) -> None:
    row = api_from(ctx).post("/integrations", json={k: v for k, v in body.items() if v not in (None, ())})
    if as_json:
        emit_json(row)
        return
    click.echo(f"{row['kind']} integration {row['name']} added{' (the default)' if row['default'] else ''}.")
    if row["behind_firewall"]:
        click.echo("It is behind the firewall: only runners reach it; the control plane never connects to it.")
    if row["runner_secret"]:
        click.echo(f"Runners need secret {row['runner_secret']} in their --secrets-file.")


@integration_add.command("git")
@click.argument("name")
@click.option("--provider", type=click.Choice(GIT_PROVIDERS), default="git", show_default=True)
@click.option("--url", required=True, help="The provider's base URL, e.g. https://git.corp (owner/name is added).")
@_common
def add_git(ctx: click.Context, name: str, provider: str, url: str, **options: Any) -> None:
    """Add git integration NAME."""
    _add(
        ctx,
        {"kind": "git", "name": name, "provider": provider, "url": url, **_credentials(options)},
        options["as_json"],
    )


@integration_add.command("registry")
@click.argument("name")
@click.option("--domain", required=True, metavar="HOST[:PORT]", help="The registry's address, without a scheme.")
@click.option("--provider", default="docker-registry", show_default=True)
@click.option("--insecure", is_flag=True, help="Plain HTTP instead of HTTPS.")
@_common
def add_registry(ctx: click.Context, name: str, domain: str, provider: str, insecure: bool, **options: Any) -> None:
    """Add registry integration NAME."""
    body = {"kind": "registry", "name": name, "provider": provider, "domain": domain, "insecure": insecure}
    _add(ctx, {**body, **_credentials(options)}, options["as_json"])


def _credentials(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "username": options["username"],
        "password": options["password"],
        "token": options["token_"],
        "runner_secret": options["runner_secret"],
        "behind_firewall": options["behind_firewall"],
        "default": options["is_default"],
        "tags": list(options["tags"]),
    }


@integration.command("list")
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def integration_list(ctx: click.Context, kind: str | None, as_json: bool) -> None:
    """The account's integrations."""
    rows = api_from(ctx).get("/integrations", params={"kind": kind} if kind else None)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no integrations")
    for i in rows:
        flags = [f for f, on in (("default", i["default"]), ("behind-firewall", i["behind_firewall"])) if on]
        where = i["url"] or i["domain"] or ""
        click.echo(f"{i['kind']:<9} {i['name']:<24} {i['provider']:<18} {where}  {' '.join(flags)}".rstrip())


def _locate(ctx: click.Context, name: str, kind: str | None) -> tuple[str, str]:
    """(kind, name): the kind given, or the only kind that has an integration of that name."""
    if kind:
        return kind, name
    kinds = [i["kind"] for i in api_from(ctx).get("/integrations") if i["name"] == name]
    if not kinds:
        raise click.ClickException(f"no integration {name!r}")
    if len(kinds) > 1:
        raise click.ClickException(f"integrations of several kinds are named {name!r}: give --kind")
    return kinds[0], name


@integration.command("show")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def integration_show(ctx: click.Context, name: str, kind: str | None, as_json: bool) -> None:
    """One integration (its secret is never shown)."""
    k, n = _locate(ctx, name, kind)
    i = api_from(ctx).get(f"/integrations/{k}/{n}")
    if as_json:
        emit_json(i)
        return
    for key in ("kind", "name", "provider", "url", "domain", "username", "runner_secret", "tags"):
        if i.get(key):
            click.echo(f"{key:<16} {i[key]}")
    click.echo(f"{'credential':<16} {'stored (encrypted)' if i['has_secret'] else 'none on the control plane'}")
    click.echo(f"{'behind firewall':<16} {'yes' if i['behind_firewall'] else 'no'}")
    click.echo(f"{'default':<16} {'yes' if i['default'] else 'no'}")


@integration.command("remove")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def integration_remove(ctx: click.Context, name: str, kind: str | None, as_json: bool) -> None:
    """Remove an integration."""
    k, n = _locate(ctx, name, kind)
    api_from(ctx).request("DELETE", f"/integrations/{k}/{n}")
    if as_json:
        emit_json({"kind": k, "name": n, "status": "removed"})
    else:
        click.echo(f"{k} integration {n} removed")


@integration.command("test")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def integration_test(ctx: click.Context, name: str, kind: str | None, as_json: bool) -> None:
    """Test the connection from the control plane (refused for integrations behind the firewall)."""
    k, n = _locate(ctx, name, kind)
    result = api_from(ctx).post(f"/integrations/{k}/{n}/test")
    emit_json(result) if as_json else click.echo(result["message"])
    sys.exit(0 if result["ok"] else 1)


# --- git queries ---------------------------------------------------------------------------------


@main.group("git")
def git_group() -> None:
    """Ask a repository through a runner: the control plane never connects to the Git server."""


def _query_options(fn: Any) -> Any:
    options: list[Callable[[Any], Any]] = [
        click.option("--git", "git", required=True, metavar="INTEGRATION", help="The git integration."),
        click.option("--repo", required=True, help="OWNER/NAME or a clone URL."),
        click.option("--runtime", help="Runtime whose runners answer (default: the account's default)."),
        click.option("--wait", default=20.0, show_default=True, help="Seconds to wait for a runner's answer."),
        click.option("--json", "as_json", is_flag=True),
        click.pass_context,
        friendly,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _ask(ctx: click.Context, git: str, what: str, params: dict[str, Any]) -> Any:
    query = {k: v for k, v in params.items() if v is not None}
    return api_from(ctx).get(f"/integrations/git/{git}/{what}", params=query)


@git_group.command("branches")
@_query_options
def git_branches(ctx: click.Context, git: str, repo: str, runtime: str | None, wait: float, as_json: bool) -> None:
    """The repository's branches and their head commits."""
    result = _ask(ctx, git, "branches", {"repo": repo, "runtime": runtime, "wait": wait})
    if as_json:
        emit_json(result)
        return
    for b in result["branches"]:
        click.echo(f"{b['sha']}  {b['name']}")


@git_group.command("file")
@click.option("--path", required=True, help="The file's path in the repository.")
@click.option("--revision", help="Branch, tag or SHA (default: the default branch).")
@_query_options
def git_file(
    ctx: click.Context,
    path: str,
    revision: str | None,
    git: str,
    repo: str,
    runtime: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """Print a file at a revision (1 MiB at most)."""
    params = {"repo": repo, "path": path, "revision": revision, "runtime": runtime, "wait": wait}
    result = _ask(ctx, git, "file", params)
    if as_json:
        emit_json(result)
        return
    content = result["content"]
    data = base64.b64decode(content) if result["encoding"] == "base64" else content.encode()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    click.echo(f"{path} at {result['revision']}", err=True)


@git_group.command("changed-files")
@click.option("--from", "base", required=True, help="The older revision.")
@click.option("--to", "head", required=True, help="The newer revision.")
@_query_options
def git_changed_files(
    ctx: click.Context,
    base: str,
    head: str,
    git: str,
    repo: str,
    runtime: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """The paths that differ between two revisions."""
    params = {"repo": repo, "from": base, "to": head, "runtime": runtime, "wait": wait}
    result = _ask(ctx, git, "changed-files", params)
    if as_json:
        emit_json(result)
        return
    for path in result["files"]:
        click.echo(path)
    if result["truncated"]:
        click.echo("(the list was cut)", err=True)

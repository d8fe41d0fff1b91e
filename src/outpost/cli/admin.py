"""`outpost runtime|runner|token|account|user|audit ...`: the platform engineer's commands."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from outpost.cli import api_from, emit_json, friendly, main


@main.group()
def runtime() -> None:
    """Runtimes: named groups of runners that run a pipeline's builds."""


def helm_command(install_command: str, install_token: str) -> str:
    """The `helm install` of deploy/helm/outpost-runner for a runner of the control plane `install_command` names."""
    words = shlex.split(install_command)
    url = words[words.index("--url") + 1]
    sets = f"--set controlPlane.url={shlex.quote(url)} --set installToken={shlex.quote(install_token)}"
    return f"helm install outpost-runner deploy/helm/outpost-runner {sets}"


@runtime.command("create")
@click.argument("name")
@click.option("--kubernetes", is_flag=True, help="Print the Helm command that installs its runner in a cluster.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def runtime_create(ctx: click.Context, name: str, kubernetes: bool, as_json: bool) -> None:
    """Create runtime NAME and print a one-time install token for its first runner."""
    rt = api_from(ctx).post("/runtimes", json={"name": name})
    if kubernetes:
        rt["install_command"] = helm_command(rt["install_command"], rt["install_token"])
    if as_json:
        emit_json(rt)
        return
    click.echo(f"runtime {rt['name']} created{' (the default)' if rt['default'] else ''}.")
    click.echo("One-time install token (shown once, valid 7 days):")
    click.echo(f"  {rt['install_token']}")
    where = (
        "In your cluster (the runner and its step pods in namespace outpost)"
        if kubernetes
        else "On the runner's machine, inside your network"
    )
    click.echo(f"{where}:")
    click.echo(f"  {rt['install_command']}")


@runtime.command("token")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def runtime_token(ctx: click.Context, name: str, as_json: bool) -> None:
    """A new one-time install token for another runner of runtime NAME."""
    rt = api_from(ctx).post(f"/runtimes/{name}/install-tokens")
    if as_json:
        emit_json(rt)
    else:
        click.echo(rt["install_token"])
        click.echo(f"  {rt['install_command']}", err=True)


@runtime.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def runtime_list(ctx: click.Context, as_json: bool) -> None:
    """Runtimes and their runners."""
    rows = api_from(ctx).get("/runtimes")
    if as_json:
        emit_json(rows)
        return
    for rt in rows:
        online = sum(r["online"] for r in rt["runners"])
        click.echo(f"{rt['name']}{' (default)' if rt['default'] else ''}: {online}/{len(rt['runners'])} online")
        for r in rt["runners"]:
            state = "online " if r["online"] else "offline"
            load = f"{len(r['builds'])}/{r['concurrency']}"
            drain = f" {r['drain']}" if r["drain"] else ""
            click.echo(f"  {state} {r['name']} {r['id']} {r['executor']} load {load} v{r['version']}{drain}")


@main.group("runners")
def runners() -> None:
    """Registered runners."""


@runners.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def runners_list(ctx: click.Context, as_json: bool) -> None:
    """Every runner of the account: online or not, drained, its runtime, load (builds / concurrency) and when it
    was last seen."""
    rows = api_from(ctx).get("/runners")
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        state = "online " if r["online"] else "offline"
        drain = f" {r['drain']}" if r["drain"] else ""
        load = f"{len(r['builds'])}/{r['concurrency']}"
        click.echo(
            f"{r['id']}  {state} {r['runtime']:<16} {r['name']} load {load}{drain} (last seen {r['last_seen_at']})"
        )


@runners.command("drain")
@click.argument("runner_id")
@click.option("--json", "as_json", is_flag=True, help="Print the runner as JSON.")
@click.pass_context
@friendly
def runners_drain(ctx: click.Context, runner_id: str, as_json: bool) -> None:
    """Drain a runner (admins): it finishes the builds it runs and takes no new one; cancels and approvals
    still reach it. `outpost runners undrain` gives it builds again."""
    r = api_from(ctx).post(f"/runners/{runner_id}/drain")
    if as_json:
        emit_json(r)
    else:
        running = len(r["builds"])
        still = f", finishing {running} build{'s' if running != 1 else ''}" if running else ""
        click.echo(f"runner {r['name']} ({r['id']}) {r['drain']}{still}: it takes no new build")


@runners.command("undrain")
@click.argument("runner_id")
@click.option("--json", "as_json", is_flag=True, help="Print the runner as JSON.")
@click.pass_context
@friendly
def runners_undrain(ctx: click.Context, runner_id: str, as_json: bool) -> None:
    """Undrain a runner (admins): it takes builds again."""
    r = api_from(ctx).post(f"/runners/{runner_id}/undrain")
    if as_json:
        emit_json(r)
    else:
        click.echo(f"runner {r['name']} ({r['id']}) takes builds again")


@runners.command("revoke")
@click.argument("runner_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def runners_revoke(ctx: click.Context, runner_id: str, as_json: bool) -> None:
    """Revoke a runner's token: its next call is refused, and the builds it ran are handed back."""
    result = api_from(ctx).request("DELETE", f"/runners/{runner_id}")
    if as_json:
        emit_json(result)
    else:
        click.echo(f"runner {runner_id} revoked")


@main.group()
def token() -> None:
    """API tokens of this account."""


ROLES = click.Choice(["viewer", "developer", "admin"])


@token.command("create")
@click.argument("name")
@click.option("--role", type=ROLES, help="What it may do (default: your own role; never more).")
@click.option("--pipeline", metavar="P", help="Only read and run pipeline P (a CI bot's token).")
@click.option("--expires", metavar="DURATION", help="Expire after e.g. 30d, 12h or 90m (default: never).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def token_create(
    ctx: click.Context, name: str, role: str | None, pipeline: str | None, expires: str | None, as_json: bool
) -> None:
    """A new API token of this account, shown once. It never gets more than the token that creates it."""
    body = {"name": name, "role": role, "pipeline": pipeline, "expires": expires}
    t = api_from(ctx).post("/tokens", json={k: v for k, v in body.items() if v is not None})
    if as_json:
        emit_json(t)
    else:
        click.echo(t["token"])
        scope = f", pipeline {t['pipeline']} only" if t["pipeline"] else ""
        until = f", expires {t['expires_at']}" if t["expires_at"] else ""
        click.echo(f"token {t['name']} ({t['id']}) created: {t['role']}{scope}{until}; shown only once", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def token_list(ctx: click.Context, as_json: bool) -> None:
    """The account's API tokens: role, scope, last use; never the tokens themselves."""
    rows = api_from(ctx).get("/tokens")
    if as_json:
        emit_json(rows)
        return
    for t in rows:
        state = f"revoked {t['revoked_at']}" if t["revoked_at"] else f"last used {t['last_used_at'] or 'never'}"
        role = "superuser" if t["superuser"] else t["role"] + (f" of {t['pipeline']}" if t["pipeline"] else "")
        click.echo(f"{t['id']}  {t['prefix']}…  {t['name']:<20} {role:<12} {state}")


@token.command("revoke")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def token_revoke(ctx: click.Context, token_id: str, as_json: bool) -> None:
    """Revoke API token TOKEN_ID (from `token list`): its very next call is refused."""
    result = api_from(ctx).request("DELETE", f"/tokens/{token_id}")
    if as_json:
        emit_json(result)
    else:
        click.echo(f"token {token_id} revoked")


@main.group()
def account() -> None:
    """Accounts (tenants); needs the installation's admin token."""


@account.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def account_create(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create account NAME and print its first admin token, shown only once."""
    a = api_from(ctx).post("/accounts", json={"name": name})
    if as_json:
        emit_json(a)
    else:
        click.echo(a["token"])
        click.echo(f"account {a['name']} created; above is its admin token, shown only once", err=True)


@main.group()
def user() -> None:
    """People who log in to the web UI, in this account (needs the admin role)."""


def _password(password_file: Path | None) -> str | None:
    """From the file, or asked for at a terminal; None lets the server generate one."""
    if password_file is not None:
        return password_file.read_text().rstrip("\n")
    if sys.stdin.isatty():
        typed: str = click.prompt(
            "Password (empty: generate one)", default="", hide_input=True, confirmation_prompt=True, show_default=False
        )
        return typed or None
    return None


@user.command("add")
@click.argument("name")
@click.option("--role", type=ROLES, required=True, help="viewer, developer or admin (not above your own).")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the password from this file (else asked for at a terminal, or generated and shown once).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def user_add(ctx: click.Context, name: str, role: str, password_file: Path | None, as_json: bool) -> None:
    """Add user NAME to this account with a role."""
    body = {"name": name, "role": role, "password": _password(password_file)}
    u = api_from(ctx).post("/users", json={k: v for k, v in body.items() if v is not None})
    if as_json:
        emit_json(u)
        return
    click.echo(f"user {u['name']} added to account {u['account']} as {u['role']}")
    if u.get("password"):
        click.echo(f"password (shown only once): {u['password']}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def user_list(ctx: click.Context, as_json: bool) -> None:
    """The account's users and their roles."""
    rows = api_from(ctx).get("/users")
    if as_json:
        emit_json(rows)
        return
    for u in rows:
        click.echo(f"{u['name']:<24} {u['role']:<10} since {u['created_at']}")


@user.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def user_remove(ctx: click.Context, name: str, as_json: bool) -> None:
    """Remove user NAME; their web UI sessions end at once."""
    u = api_from(ctx).request("DELETE", f"/users/{name}")
    if as_json:
        emit_json(u)
    else:
        click.echo(f"user {u['name']} removed")


@main.group()
def audit() -> None:
    """The account's audit log (needs the admin role)."""


@audit.command("list")
@click.option("--since", help="Entries since a duration ago (1h, 7d) or an ISO time.")
@click.option("--limit", type=click.IntRange(1, 1000), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def audit_list(ctx: click.Context, since: str | None, limit: int, as_json: bool) -> None:
    """Newest first: who changed, granted, revoked, approved, cancelled or read what, when and from where."""
    params: dict[str, str | int] = {"limit": limit}
    if since:
        params["since"] = since
    rows = api_from(ctx).get("/audit", params=params)
    if as_json:
        emit_json(rows)
        return
    for e in rows:
        where = f" from {e['address']}" if e["address"] else ""
        details = " ".join(f"{k}={v}" for k, v in e["details"].items())
        click.echo(f"{e['at']}  {e['action']:<22} {e['target']}  by {e['actor']}{where}  {details}".rstrip())

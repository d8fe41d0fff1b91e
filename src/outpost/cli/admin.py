"""`outpost runtime|runner|token|account ...`: the platform engineer's commands."""

from __future__ import annotations

import click

from outpost.cli import api_from, emit_json, friendly, main


@main.group()
def runtime() -> None:
    """Runtimes: named groups of runners that run a pipeline's builds."""


@runtime.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def runtime_create(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create runtime NAME and print a one-time install token for its first runner."""
    rt = api_from(ctx).post("/runtimes", json={"name": name})
    if as_json:
        emit_json(rt)
        return
    click.echo(f"runtime {rt['name']} created{' (the default)' if rt['default'] else ''}.")
    click.echo("One-time install token (shown once, valid 7 days):")
    click.echo(f"  {rt['install_token']}")
    click.echo("On the runner's machine, inside your network:")
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
            click.echo(f"  {state} {r['name']} {r['id']} {r['executor']} x{r['concurrency']} v{r['version']}")


@main.group("runners")
def runners() -> None:
    """Registered runners."""


@runners.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def runners_list(ctx: click.Context, as_json: bool) -> None:
    rows = api_from(ctx).get("/runners")
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        state = "online " if r["online"] else "offline"
        click.echo(f"{r['id']}  {state} {r['runtime']:<16} {r['name']} (last seen {r['last_seen_at']})")


@runners.command("revoke")
@click.argument("runner_id")
@click.pass_context
@friendly
def runners_revoke(ctx: click.Context, runner_id: str) -> None:
    """Revoke a runner's token: its next call is refused."""
    api_from(ctx).request("DELETE", f"/runners/{runner_id}")
    click.echo(f"runner {runner_id} revoked")


@main.group()
def token() -> None:
    """API tokens of this account."""


@token.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def token_create(ctx: click.Context, name: str, as_json: bool) -> None:
    t = api_from(ctx).post("/tokens", json={"name": name})
    if as_json:
        emit_json(t)
    else:
        click.echo(t["token"])
        click.echo(f"token {t['name']} ({t['id']}) created; it is shown only once", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def token_list(ctx: click.Context, as_json: bool) -> None:
    rows = api_from(ctx).get("/tokens")
    if as_json:
        emit_json(rows)
        return
    for t in rows:
        state = f"revoked {t['revoked_at']}" if t["revoked_at"] else f"last used {t['last_used_at'] or 'never'}"
        click.echo(f"{t['id']}  {t['prefix']}…  {t['name']:<20} {state}")


@token.command("revoke")
@click.argument("token_id")
@click.pass_context
@friendly
def token_revoke(ctx: click.Context, token_id: str) -> None:
    api_from(ctx).request("DELETE", f"/tokens/{token_id}")
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
    a = api_from(ctx).post("/accounts", json={"name": name})
    if as_json:
        emit_json(a)
    else:
        click.echo(a["token"])
        click.echo(f"account {a['name']} created; above is its admin token, shown only once", err=True)

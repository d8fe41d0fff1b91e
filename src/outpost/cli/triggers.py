"""`outpost trigger ...`: git (webhook) and cron triggers, their secrets and their deliveries."""

from __future__ import annotations

from typing import Any

import click

from outpost.cli import api_from, emit_json, friendly, main, parse_vars

PROVIDERS = ("github", "gitlab", "bitbucket-server")
SETUP = {
    "github": "GitHub: Settings → Webhooks → Add webhook: Payload URL = the endpoint, Content type = "
    "application/json, Secret = the secret, events: Pushes and Pull requests.",
    "gitlab": "GitLab: Settings → Webhooks → Add new webhook: URL = the endpoint, Secret token = the secret, "
    "triggers: Push events, Tag push events, Merge request events.",
    "bitbucket-server": "Bitbucket Server: Repository settings → Webhooks → Create webhook: URL = the endpoint, "
    "Secret = the secret, events: Repository push, Pull request opened, source branch updated, merged, declined.",
}


@main.group()
def trigger() -> None:
    """Git triggers (a provider's webhook) and cron triggers that start pipelines."""


@trigger.command("add")
@click.argument("pipeline")
@click.option("--provider", type=click.Choice(PROVIDERS), help="The Git provider that sends the webhook.")
@click.option("--repo", metavar="OWNER/NAME", help="The repository, as the provider spells it.")
@click.option("--events", default="push", show_default=True, help="Comma-separated: push, pullrequest, ...")
@click.option("--branch-regex", help="Only these branches (or tags): '/^main$/' or '/^release-/i'.")
@click.option("--pr-target-regex", help="Only pull requests into these branches.")
@click.option("--comment-regex", help="Only pull request comments matching this.")
@click.option("--modified-files", help="Only when a changed file matches: '{src/**,docs/*}', '!docs/**'.")
@click.option(
    "--git",
    "git",
    metavar="NAME",
    help="The git integration a runner computes changed files through, for --modified-files when the payload "
    "does not list them all (default: the pipeline's, else the default one).",
)
@click.option("--allow-forks", is_flag=True, help="Build pull requests from forks too.")
@click.option("--concurrency", type=click.IntRange(1, 1000), help="At most N builds at once; the rest wait.")
@click.option("--terminate-previous", is_flag=True, help="A new build stops older ones of the same branch.")
@click.option("--cron", "cron", metavar="EXPR", help="A cron trigger instead: '0 3 * * *' (UTC).")
@click.option("--branch", help="A cron trigger's branch (CF_BRANCH).")
@click.option("--message", help="A cron trigger's EVENT_MESSAGE.")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", help="A trigger variable.")
@click.option("--name", help="A name to recognise it by.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def trigger_add(
    ctx: click.Context,
    pipeline: str,
    provider: str | None,
    repo: str | None,
    events: str,
    branch_regex: str | None,
    pr_target_regex: str | None,
    comment_regex: str | None,
    modified_files: str | None,
    git: str | None,
    allow_forks: bool,
    concurrency: int | None,
    terminate_previous: bool,
    cron: str | None,
    branch: str | None,
    message: str | None,
    variables: tuple[str, ...],
    name: str | None,
    disabled: bool,
    as_json: bool,
) -> None:
    """Add a trigger to PIPELINE: a webhook (--provider, --repo) or a schedule (--cron)."""
    body: dict[str, Any] = {
        "pipeline": pipeline,
        "name": name,
        "variables": parse_vars(variables),
        "disabled": disabled,
        "concurrency": concurrency,
        "termination_policy": "terminate-previous-same-branch" if terminate_previous else "none",
    }
    if cron:
        body.update(cron=cron, branch=branch, message=message)
    else:
        if not provider or not repo:
            raise click.UsageError("a git trigger needs --provider and --repo (or give --cron for a schedule)")
        body.update(
            provider=provider,
            repo=repo,
            events=[e.strip() for e in events.split(",") if e.strip()],
            branch_regex=branch_regex,
            pr_target_regex=pr_target_regex,
            comment_regex=comment_regex,
            modified_files_glob=modified_files,
            git=git,
            allow_fork_events=allow_forks,
        )
    t = api_from(ctx).post("/triggers", json={k: v for k, v in body.items() if v is not None})
    if as_json:
        emit_json(t)
        return
    click.echo(f"trigger {t['id']} ({t['name']}) added to pipeline {t['pipeline']}")
    if t["kind"] == "cron":
        click.echo(f"  runs at '{t['cron']}' (UTC){' on branch ' + t['branch'] if t['branch'] else ''}")
        return
    click.echo(f"  endpoint: {t['endpoint']}")
    click.echo(f"  secret:   {t['secret']}")
    click.echo(SETUP[t["provider"]])
    click.echo(f"See what arrives: outpost trigger deliveries {t['id']}")


@trigger.command("list")
@click.argument("pipeline", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def trigger_list(ctx: click.Context, pipeline: str | None, as_json: bool) -> None:
    """The account's triggers (of PIPELINE only, if given)."""
    rows = api_from(ctx).get("/triggers", params={"pipeline": pipeline} if pipeline else None)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no triggers")
    for t in rows:
        state = "disabled" if t["disabled"] else "enabled"
        click.echo(f"{t['id']}  {t['pipeline']:<24} {state:<8}  {_summary(t)}")


def _summary(t: dict[str, Any]) -> str:
    if t["kind"] == "cron":
        return f"cron '{t['cron']}'" + (f" branch {t['branch']}" if t["branch"] else "")
    rules = [",".join(t["events"])]
    for key, label in (("branch_regex", "branch"), ("pr_target_regex", "target"), ("modified_files_glob", "files")):
        if t[key]:
            rules.append(f"{label} {t[key]}")
    return f"{t['provider']} {t['repo']} " + " ".join(rules)


@trigger.command("show")
@click.argument("trigger_id")
@click.option("--show-secret", is_flag=True, help="Also print the webhook secret.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def trigger_show(ctx: click.Context, trigger_id: str, show_secret: bool, as_json: bool) -> None:
    """A trigger's settings and endpoint."""
    api = api_from(ctx)
    t = api.get(f"/triggers/{trigger_id}")
    if show_secret:
        t["secret"] = api.get(f"/triggers/{trigger_id}/secret")["secret"]
    if as_json:
        emit_json(t)
        return
    click.echo(f"trigger {t['id']} ({t['name']})  pipeline {t['pipeline']}  {'disabled' if t['disabled'] else ''}")
    skip = {"id", "name", "pipeline", "secret", "disabled"}
    for key, value in t.items():
        if key not in skip and value not in (None, [], {}, False):
            click.echo(f"  {key}: {', '.join(value) if isinstance(value, list) else value}")
    if t.get("secret"):
        click.echo(f"  secret: {t['secret']}")


def _set_disabled(ctx: click.Context, trigger_id: str, disabled: bool, as_json: bool) -> None:
    t = api_from(ctx).request("PATCH", f"/triggers/{trigger_id}", json={"disabled": disabled})
    if as_json:
        emit_json(t)
    else:
        click.echo(f"trigger {t['id']} {'disabled' if t['disabled'] else 'enabled'}")


@trigger.command("disable")
@click.argument("trigger_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def trigger_disable(ctx: click.Context, trigger_id: str, as_json: bool) -> None:
    """Keep the trigger but start nothing: deliveries are recorded as filtered."""
    _set_disabled(ctx, trigger_id, True, as_json)


@trigger.command("enable")
@click.argument("trigger_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def trigger_enable(ctx: click.Context, trigger_id: str, as_json: bool) -> None:
    """Start builds from this trigger's deliveries again (after `trigger disable`)."""
    _set_disabled(ctx, trigger_id, False, as_json)


@trigger.command("remove")
@click.argument("trigger_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def trigger_remove(ctx: click.Context, trigger_id: str, as_json: bool) -> None:
    """Remove a trigger and its deliveries (its builds stay)."""
    result = api_from(ctx).request("DELETE", f"/triggers/{trigger_id}")
    if as_json:
        emit_json(result)
    else:
        click.echo(f"trigger {trigger_id} removed")


@trigger.command("rotate-secret")
@click.argument("trigger_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def trigger_rotate(ctx: click.Context, trigger_id: str, as_json: bool) -> None:
    """A new webhook secret, valid at once: put it into the Git provider."""
    t = api_from(ctx).post(f"/triggers/{trigger_id}/rotate-secret")
    if as_json:
        emit_json(t)
        return
    click.echo(f"new secret: {t['secret']}")
    click.echo("Deliveries signed with the old secret are refused from now on. " + SETUP[t["provider"]])


@trigger.command("deliveries")
@click.argument("trigger_id")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def trigger_deliveries(ctx: click.Context, trigger_id: str, limit: int, as_json: bool) -> None:
    """What each webhook delivery came to, newest first: the build, or the rule that refused it and why."""
    rows = api_from(ctx).get(f"/triggers/{trigger_id}/deliveries", params={"limit": limit})
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no deliveries yet")
    for d in rows:
        when = (d["received_at"] or "").replace("T", " ")[:19]
        if d["outcome"] == "build":
            what = f"build {d['build']}"
        elif d["outcome"] == "pending":
            what = f"{d['reason']} (ask again in a moment)"
        else:
            what = f"{d['rule']}: {d['reason']}" if d["rule"] else d["reason"] or ""
        if d.get("redelivery_of"):
            what += f" (redelivery of {d['redelivery_of']})"
        click.echo(f"{d['id']}  {when}  {d['event'] or '-':<26} {d['outcome']:<9} {d['status_code']}  {what}")


def _came_to(d: dict[str, Any]) -> str:
    if d["outcome"] == "build":
        return f"build {d['build']}"
    return f"{d['outcome']} ({d['rule']}: {d['reason']})" if d["rule"] else d["outcome"]


@trigger.command("test")
@click.argument("trigger_id")
@click.option("--json", "as_json", is_flag=True, help="Print the delivery as JSON.")
@click.pass_context
@friendly
def trigger_test(ctx: click.Context, trigger_id: str, as_json: bool) -> None:
    """Send a test delivery (admins): the provider's ping, signed with the trigger's secret, through the webhook's
    own path (GitHub, Bitbucket Server; GitLab has no ping: use its Test button, then `trigger redeliver`)."""
    d = api_from(ctx).post(f"/triggers/{trigger_id}/test-delivery")
    if as_json:
        emit_json(d)
    else:
        click.echo(f"delivery {d['id']}: {d['status_code']} {_came_to(d)}")


@trigger.command("redeliver")
@click.argument("trigger_id")
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True, help="Print the new delivery as JSON.")
@click.pass_context
@friendly
def trigger_redeliver(ctx: click.Context, trigger_id: str, delivery_id: str, as_json: bool) -> None:
    """Deliver a recorded delivery (its id from `trigger deliveries`) again (admins): decided under the trigger's
    rules as they are now, recorded as a new delivery marked as a redelivery."""
    d = api_from(ctx).post(f"/triggers/{trigger_id}/deliveries/{delivery_id}/redeliver")
    if as_json:
        emit_json(d)
    else:
        click.echo(f"delivery {d['id']} (redelivery of {d['redelivery_of']}): {d['status_code']} {_came_to(d)}")

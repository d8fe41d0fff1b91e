"""`outpost integration ...` (Git providers, registries, Kubernetes clusters) and `outpost git ...` (git queries a
runner answers)."""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from outpost.cli import api_from, emit_json, friendly, main

GIT_PROVIDERS = ("github", "github-enterprise", "gitlab", "bitbucket-server", "git")
KINDS = ("git", "registry", "cluster")


@main.group()
def integration() -> None:
    """Integrations: Git providers, registries and Kubernetes clusters, optionally behind the firewall."""


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
    if row["kind"] == "cluster":
        click.echo(_allowed_line(row))


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


@integration_add.command("kubernetes")
@click.argument("name")
@click.option("--server", metavar="URL", help="The API server, https://HOST:PORT.")
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path), help="The cluster's CA (PEM).")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="A service account's token ('-': standard input). Stored encrypted; never shown again.",
)
@click.option("--client-cert-file", type=click.Path(dir_okay=False, path_type=Path), help="A client certificate.")
@click.option("--client-key-file", type=click.Path(dir_okay=False, path_type=Path), help="Its key (encrypted).")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read server, CA, namespace and credential from a kubeconfig file instead.",
)
@click.option("--context", help="The kubeconfig's context (default: its current-context).")
@click.option("--namespace", help="Where deploy steps act unless they name one (default: the context's, or default).")
@click.option("--insecure", is_flag=True, help="Skip TLS verification of the API server (unsafe).")
@click.option(
    "--runner-secret",
    metavar="NAME",
    help="Keep the token only on the runners, under this name in their --secrets-file.",
)
@click.option("--behind-firewall", is_flag=True, help="Only runners can reach it: the control plane never connects.")
@click.option("--allow-pipeline", "allowed", multiple=True, metavar="PIPELINE", help="A pipeline that may use it.")
@click.option("--allow-all-pipelines", is_flag=True, help="Every pipeline of the account may use it.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def add_kubernetes(ctx: click.Context, /, name: str, **o: Any) -> None:
    """Add Kubernetes cluster NAME. No pipeline may use it until allowed (--allow-pipeline, --allow-all-pipelines,
    or later: outpost integration update NAME --allow-pipeline P)."""
    body: dict[str, Any] = {"kind": "cluster", "name": name, "provider": "kubernetes", **_cluster_fields(o)}
    body.update(
        runner_secret=o["runner_secret"],
        behind_firewall=o["behind_firewall"],
        allowed_pipelines=list(o["allowed"]),
        all_pipelines=o["allow_all_pipelines"],
        tags=list(o["tags"]),
    )
    if not body.get("url"):
        raise click.UsageError("give --server URL, or --kubeconfig FILE")
    _add(ctx, body, o["as_json"])


def _cluster_fields(o: dict[str, Any]) -> dict[str, Any]:
    """The API fields of --kubeconfig/--context, then of the explicit options, which win."""
    fields: dict[str, Any] = {}
    if o.get("kubeconfig"):
        from outpost.kubeconfigs import read

        found = read(o["kubeconfig"], o.get("context"))
        fields = {
            "url": found.server,
            "namespace": found.namespace,
            "ca_pem": found.ca_pem,
            "token": found.token,
            "client_cert_pem": found.client_cert_pem,
            "client_key_pem": found.client_key_pem,
            "insecure": found.insecure or None,
        }
    elif o.get("context"):
        raise click.UsageError("--context goes with --kubeconfig")
    explicit = {
        "url": o.get("server"),
        "namespace": o.get("namespace"),
        "ca_pem": _read(o.get("ca_file")),
        "token": _read(o.get("token_file"), strip=True),
        "client_cert_pem": _read(o.get("client_cert_file")),
        "client_key_pem": _read(o.get("client_key_file")),
        "insecure": o.get("insecure") or None,
    }
    if explicit["token"] or explicit["client_cert_pem"]:  # a credential given replaces the kubeconfig's
        fields.pop("token", None)
        fields.pop("client_cert_pem", None)
        fields.pop("client_key_pem", None)
    fields.update({k: v for k, v in explicit.items() if v})
    if o.get("runner_secret"):
        fields.pop("token", None)
    return {k: v for k, v in fields.items() if v is not None}


def _read(path: Path | None, *, strip: bool = False) -> str | None:
    if path is None:
        return None
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from None
    return text.strip() if strip else text


@integration.command("update")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--allow-pipeline", "allow", multiple=True, metavar="PIPELINE", help="Allow a pipeline (cluster).")
@click.option("--disallow-pipeline", "disallow", multiple=True, metavar="PIPELINE", help="Take a pipeline off.")
@click.option(
    "--allow-all-pipelines/--only-listed-pipelines",
    "all_pipelines",
    default=None,
    help="Every pipeline may use the cluster, or only those on its allow-list.",
)
@click.option("--server", metavar="URL", help="A cluster's API server.")
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path), help="A cluster's CA (PEM).")
@click.option(
    "--token-file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), help="A new token ('-': stdin)."
)
@click.option("--namespace", help="A cluster's namespace for deploy steps.")
@click.option("--behind-firewall/--reachable", "behind_firewall", default=None, help="Whether only runners reach it.")
@click.option("--default", "is_default", is_flag=True, default=None, help="Make it the default of its kind.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def integration_update(ctx: click.Context, /, name: str, kind: str | None, as_json: bool, **o: Any) -> None:
    """Change an integration: only what is given changes. A cluster's allow-list is changed by admins only."""
    k, n = _locate(ctx, name, kind)
    api = api_from(ctx)
    body: dict[str, Any] = {}
    if o["allow"] or o["disallow"]:
        current = api.get(f"/integrations/{k}/{n}")["allowed_pipelines"]
        allowed = [p for p in dict.fromkeys([*current, *o["allow"]]) if p not in o["disallow"]]
        body["allowed_pipelines"] = allowed
    if o["all_pipelines"] is not None:
        body["all_pipelines"] = o["all_pipelines"]
    changes = {
        "url": o["server"],
        "namespace": o["namespace"],
        "ca_pem": _read(o["ca_file"]),
        "token": _read(o["token_file"], strip=True),
        "behind_firewall": o["behind_firewall"],
        "default": o["is_default"],
    }
    body.update({key: value for key, value in changes.items() if value is not None})
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    row = api.request("PATCH", f"/integrations/{k}/{n}", json=body)
    if as_json:
        emit_json(row)
        return
    click.echo(f"{k} integration {n} updated")
    if k == "cluster":
        click.echo(_allowed_line(row))


def _allowed_line(row: dict[str, Any]) -> str:
    if row.get("all_pipelines"):
        return "Pipelines allowed to use it: all"
    names = row.get("allowed_pipelines") or []
    return f"Pipelines allowed to use it: {', '.join(names) if names else 'none yet'}"


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
        if i["kind"] == "cluster" and i["url"]:  # a viewer sees names only
            flags.append("all-pipelines" if i["all_pipelines"] else f"pipelines:{len(i['allowed_pipelines'])}")
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
    for key in ("kind", "name", "provider", "url", "domain", "namespace", "username", "runner_secret", "tags"):
        if i.get(key):
            click.echo(f"{key:<16} {i[key]}")
    stored = f"{i.get('credential') or 'secret'} stored (encrypted)" if i["has_secret"] else "none on the control plane"
    click.echo(f"{'credential':<16} {stored}")
    if i["kind"] == "cluster":
        click.echo(f"{'CA':<16} {'its own' if i['has_ca'] else 'the system trust store'}")
        allowed = "all" if i["all_pipelines"] else (", ".join(i["allowed_pipelines"]) or "none yet")
        click.echo(f"{'pipelines':<16} {allowed}")
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
@click.option("--runtime", help="A cluster: the runtime whose runner tests it (default: the account's default).")
@click.option("--wait", default=20.0, show_default=True, help="A cluster: seconds to wait for a runner's answer.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def integration_test(
    ctx: click.Context, name: str, kind: str | None, runtime: str | None, wait: float, as_json: bool
) -> None:
    """Test the connection: a Git provider or registry from the control plane (refused for those behind the
    firewall), a Kubernetes cluster from a runner, which prints the version its API server reports."""
    k, n = _locate(ctx, name, kind)
    if k == "cluster":
        params = {"wait": wait, **({"runtime": runtime} if runtime else {})}
        result = api_from(ctx).post(f"/integrations/cluster/{n}/check", params=params)
    else:
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

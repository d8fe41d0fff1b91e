"""The audit log: every change of configuration, grant, revocation, approval, cancel and secret handed to a
runner leaves an entry with who, when and from where; nothing changes or removes one."""

from __future__ import annotations

import inspect
import json
from typing import Any

from outpost.server.store import audit
from tests.server.test_approvals import gated_build
from tests.server.test_protocol import claim
from tests.server.test_triggers import outpost, serving
from tests.stack import Stack

HELLO = "version: '1.0'\nsteps:\n  main:\n    image: alpine\n    commands: [echo hi]\n"


async def entries(stack: Stack, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
    r = await stack.api("GET", "/audit", token=token, params=params)
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


async def test_each_kind_of_change_leaves_an_entry_with_who_and_from_where(stack: Stack) -> None:
    ok = {200, 201, 204}

    async def call(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        r = await stack.api(method, path, **kwargs)
        assert r.status_code in ok, r.text
        return r.json() if r.content else {}

    await call("POST", "/pipelines", json={"name": "app", "yaml": HELLO, "secrets": {"API_KEY": "k-123456"}})
    await call("PATCH", "/pipelines/app", json={"variables": {"A": "1"}})
    git = {"kind": "git", "name": "corp", "url": "https://git.corp", "behind_firewall": True}
    await call("POST", "/integrations", json=git)
    await call("PATCH", "/integrations/git/corp", json={"default": True})
    await call("DELETE", "/integrations/git/corp")
    hook = await call(
        "POST", "/triggers", json={"pipeline": "app", "provider": "github", "repo": "o/r", "events": ["push"]}
    )
    await call("PATCH", f"/triggers/{hook['id']}", json={"disabled": True})
    await call("POST", f"/triggers/{hook['id']}/rotate-secret")
    await call("DELETE", f"/triggers/{hook['id']}")
    await call("POST", "/runtimes", json={"name": "corp-k8s"})
    await call("POST", "/runtimes/corp-k8s/install-tokens")
    runner = await stack.register()
    await call("DELETE", f"/runners/{runner.runner_id}")
    made = await call("POST", "/tokens", json={"name": "ci-bot", "role": "developer"})
    await call("DELETE", f"/tokens/{made['id']}")
    await call("POST", "/users", json={"name": "ann", "role": "viewer"})
    await call("DELETE", "/users/ann")
    await call("POST", "/accounts", json={"name": "acme"})
    build = await stack.run("app")
    await call("POST", f"/builds/{build['id']}/cancel")

    rows = await entries(stack)
    actions = [e["action"] for e in reversed(rows)]
    for expected in (
        "pipeline.create",
        "pipeline.update",
        "integration.create",
        "integration.update",
        "integration.delete",
        "trigger.create",
        "trigger.update",
        "trigger.rotate_secret",
        "trigger.remove",
        "runtime.create",
        "install_token.create",
        "runner.register",
        "runner.revoke",
        "token.create",
        "token.revoke",
        "user.add",
        "user.remove",
        "account.create",
        "build.cancel",
    ):
        assert expected in actions, f"no {expected} entry in {actions}"
    created = next(e for e in rows if e["action"] == "pipeline.create")
    assert created["target"] == "app"
    assert created["actor"].startswith("token admin (")
    assert created["address"] == "127.0.0.1"
    assert created["details"] == {"secrets": ["API_KEY"]}
    assert "k-123456" not in json.dumps(rows)  # names only, never values
    grant = next(e for e in rows if e["action"] == "token.create")
    assert grant["details"]["role"] == "developer"


async def test_a_runner_handed_a_builds_secrets_is_recorded_with_the_build_the_names_and_the_runner(
    stack: Stack,
) -> None:
    await stack.pipeline("app", HELLO, secrets={"API_KEY": "k-123456", "DB_PASSWORD": "p-654321"})
    build = await stack.run("app")
    runner = await stack.register()
    await claim(stack, runner.runner_token)
    read = [e for e in await entries(stack) if e["action"] == "secret.read"]
    assert len(read) == 1
    assert read[0]["target"] == f"build {build['id']}"
    assert read[0]["actor"] == f"runner t ({runner.runner_id})"
    assert read[0]["details"]["secrets"] == ["API_KEY", "DB_PASSWORD"]
    assert "k-123456" not in json.dumps(read)


async def test_a_runner_handed_integrations_credentials_is_recorded_with_their_names_never_the_credentials(
    stack: Stack,
) -> None:
    body = {"kind": "registry", "name": "main", "domain": "main.corp", "username": "ci", "password": "reg-pw-42"}
    assert (await stack.api("POST", "/integrations", json=body)).status_code == 201  # the default: every build's
    await stack.pipeline("app", HELLO)
    runner = await stack.register()
    first = await stack.run("app")
    assert (await claim(stack, runner.runner_token)).registries["main"].password == "reg-pw-42"
    read = [e for e in await entries(stack) if e["action"] == "credential.read"]
    assert len(read) == 1
    assert read[0]["target"] == f"build {first['id']}"
    assert read[0]["actor"] == f"runner t ({runner.runner_id})"
    assert (read[0]["details"]["registries"], read[0]["details"]["git"]) == (["main"], [])
    assert "reg-pw-42" not in json.dumps(read)
    # Once the runner holds the credential itself, nothing is handed over, and nothing is recorded.
    r = await stack.api("PATCH", "/integrations/registry/main", json={"runner_secret": "MAIN_PW"})
    assert r.status_code == 200, r.text
    await stack.run("app")
    assert (await claim(stack, runner.runner_token)).registries["main"].password is None
    assert len([e for e in await entries(stack) if e["action"] == "credential.read"]) == 1


async def test_approvals_and_denials_are_recorded(stack: Stack) -> None:
    build_id = await gated_build(stack, started_by=stack.admin_token)
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/deny")
    assert r.status_code == 200, r.text
    denied = [e for e in await entries(stack) if e["action"].startswith("approval.")]
    assert [(e["action"], e["target"]) for e in denied] == [("approval.denied", f"build {build_id} step gate")]


async def test_a_refused_change_leaves_no_entry(stack: Stack) -> None:
    r = await stack.api("POST", "/pipelines", json={"name": "bad", "yaml": "version: '1.0'\nsteps: 5\n"})
    assert r.status_code == 422
    viewer = (await stack.api("POST", "/tokens", json={"name": "v", "role": "viewer"})).json()["token"]
    assert (await stack.api("POST", "/runtimes", token=viewer, json={"name": "x"})).status_code == 403
    actions = [e["action"] for e in await entries(stack)]
    assert "pipeline.create" not in actions
    assert actions.count("runtime.create") == 1  # the bootstrap's local runtime only


async def test_the_log_is_read_by_admins_of_the_account_since_a_time(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    acme = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    assert [e["action"] for e in await entries(stack, acme)] == []  # another account's entries are not theirs
    assert await entries(stack, since="1h")
    assert await entries(stack, since="2999-01-01T00:00") == []
    r = await stack.api("GET", "/audit", params={"since": "last tuesday"})
    assert r.status_code == 422
    dev = (await stack.api("POST", "/tokens", json={"name": "d", "role": "developer"})).json()["token"]
    r = await stack.api("GET", "/audit", token=dev)
    assert r.status_code == 403
    assert r.json()["message"] == "this needs the admin role; your token has developer"


def test_the_audit_store_has_no_function_that_changes_or_removes_an_entry() -> None:
    functions = {name for name, f in inspect.getmembers(audit, inspect.isfunction) if f.__module__ == audit.__name__}
    assert functions == {"record", "secrets_read", "credentials_read", "_handed", "runner_registered", "entries"}
    source = inspect.getsource(audit)
    assert "delete(" not in source
    assert "update(" not in source


async def test_the_cli_lists_the_audit_log_as_text_and_json(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    async with serving(stack) as url:
        code, out, err = await outpost(url, stack.admin_token, "audit", "list", "--since", "1h", "--json")
        assert code == 0, err
        assert "pipeline.create" in [e["action"] for e in json.loads(out)]
        code, out, err = await outpost(url, stack.admin_token, "audit", "list")
        assert code == 0, err
        assert "pipeline.create" in out
        assert "app  by token admin" in out
        code, out, err = await outpost(url, stack.admin_token, "audit", "list", "--since", "yesterday-ish")
        assert code != 0
        assert "--since is a duration" in err

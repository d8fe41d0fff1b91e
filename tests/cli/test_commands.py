"""Every `outpost` command explains itself with --help, and every command that answers (not the long-running
processes) prints JSON with --json, as the README promises; all through the real command, against a real
control plane and runner."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from outpost.cli import main
from tests.e2e.processes import ControlPlane, RunnerProcess, outpost_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
PROCESSES = {("up",), ("server",), ("runner", "start")}  # they run until stopped: no JSON answer to give
HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hello]\n"
GATED = "version: '1.0'\nsteps:\n  gate:\n    type: pending-approval\n"
SLOW = "version: '1.0'\nsteps:\n  wait:\n    image: alpine\n    commands: [sleep 120]\n"


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # as help lists them: the top level loads its modules lazily
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


EVERY = [path for path, _ in commands()]


def outpost(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outpost", *args],
        capture_output=True,
        text=True,
        env=env or outpost_env(),
        timeout=60,
        cwd=cwd,
    )


@pytest.mark.parametrize("path", EVERY, ids=" ".join)
def test_every_command_says_what_it_does_with_help(path: tuple[str, ...]) -> None:
    shown = outpost(*path, "--help")
    assert shown.returncode == 0, shown.stderr
    usage, _, rest = shown.stdout.partition("\n\n")
    assert usage.startswith(f"Usage: python -m outpost {' '.join(path)}")
    description = rest.split("\n\n", 1)[0].strip()
    assert description, f"`outpost {' '.join(path)} --help` has no description"
    assert not description.startswith("Options:"), f"`outpost {' '.join(path)} --help` has no description"


def test_a_command_loads_neither_the_runner_nor_the_engine_nor_the_server() -> None:
    """What kept `outpost` slow to start: every command imported all three."""
    probe = (
        "import sys\n"
        "from outpost.cli import main\n"
        "for args in (['build', 'list', '--help'], ['validate', '--help'], ['token', 'list', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('outpost.runner', 'outpost.engine', 'outpost.server')\n"
        "print(sorted({m for m in sys.modules if m.startswith(heavy)}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=outpost_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_command_but_the_long_running_processes_takes_json() -> None:
    missing = [
        " ".join(path)
        for path, command in commands()
        if path not in PROCESSES and not any("--json" in getattr(p, "opts", ()) for p in command.params)
    ]
    assert missing == []


@pytest.fixture
def cli(control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]) -> Callable[..., Any]:
    start_runner()

    def run_json(*args: str, ok: tuple[int, ...] = (0,)) -> Any:
        done = control_plane.cli(*args, "--json")
        assert done.returncode in ok, f"outpost {' '.join(args)} --json: {done.returncode}\n{done.stderr}"
        return json.loads(done.stdout)

    return run_json


def test_every_answering_command_prints_json_with_json(
    cli: Callable[..., Any], control_plane: ControlPlane, tmp_path: Path
) -> None:
    covered: set[tuple[str, ...]] = set()

    def j(*args: str, ok: tuple[int, ...] = (0,)) -> Any:
        covered.add(next(path for path in EVERY if args[: len(path)] == path))
        return cli(*args, ok=ok)

    for name, text in (("hello.yml", HELLO), ("gated.yml", GATED), ("slow.yml", SLOW)):
        (tmp_path / name).write_text(text)
    assert j("validate", str(tmp_path / "hello.yml"))["valid"] is True
    (tmp_path / "broken.yml").write_text("version: '1.0'\nsteps: {}\n")
    assert j("validate", str(tmp_path / "broken.yml"), ok=(1,))["problems"]
    j("pipeline", "create", "hello", "--file", str(tmp_path / "hello.yml"), "--secret-var", "KEY=v")
    j("pipeline", "create", "gated", "--file", str(tmp_path / "gated.yml"))
    j("pipeline", "create", "slow", "--file", str(tmp_path / "slow.yml"))
    assert j("pipeline", "update", "hello", "--approval-role", "admin")["approval_role"] == "admin"
    assert [p["name"] for p in j("pipeline", "list")] == ["gated", "hello", "slow"]
    assert j("pipeline", "show", "hello")["secrets"] == ["KEY"]
    shown = control_plane.cli("pipeline", "show", "hello").stdout
    assert "KEY=***** (secret)" in shown  # the text names secret variables too, never their values

    build = j("run", "hello")
    assert build["status"] == "success"
    assert j("build", "list")[0]["id"] == build["id"]
    assert j("build", "show", build["id"])["status"] == "success"
    assert j("open", build["id"])["url"].endswith(f"/builds/{build['id']}")
    assert "_OUTPOST_COMPLETE" in j("completion", "bash")["script"]
    assert "hello" in json.dumps(j("build", "logs", build["id"]))
    waiting = j("run", "gated", "--detach")
    control_plane.wait_for(waiting["id"], {"running"}, timeout=30)
    j("build", "approve", waiting["id"], "gate")
    control_plane.wait_for(waiting["id"], {"success"}, timeout=30)
    denied = j("run", "gated", "--detach")
    control_plane.wait_for(denied["id"], {"running"}, timeout=30)
    j("build", "deny", denied["id"], "gate")
    slow = j("run", "slow", "--detach")
    j("build", "cancel", slow["id"])
    assert j("build", "restart", build["id"])["restarted_from"] == build["id"]
    assert j("build", "artifacts", build["id"]) == []

    j("runtime", "create", "corp")
    j("runtime", "token", "corp")
    assert {r["name"] for r in j("runtime", "list")} == {"corp", "local"}
    runner_id = j("runners", "list")[0]["id"]
    made = j("token", "create", "bot", "--role", "viewer")
    assert any(t["id"] == made["id"] for t in j("token", "list"))
    assert j("token", "revoke", made["id"])["revoked_at"]
    j("user", "add", "ann", "--role", "developer")
    assert "ann" in json.dumps(j("user", "list"))
    j("user", "remove", "ann")
    assert j("audit", "list")
    j("account", "create", "other")

    j("integration", "add", "git", "corp-git", "--url", "https://git.corp.invalid", "--behind-firewall")
    j("integration", "add", "registry", "corp-reg", "--domain", "registry.corp.invalid:5000", "--behind-firewall")
    assert {i["name"] for i in j("integration", "list")} == {"corp-git", "corp-reg"}
    assert j("integration", "show", "corp-git")["behind_firewall"] is True
    j("integration", "test", "corp-git", ok=(1, 2))  # refused: behind the firewall
    cluster = ("prod-eu", "--server", "https://k8s.corp.invalid:6443", "--behind-firewall", "--allow-pipeline", "hello")
    assert j("integration", "add", "kubernetes", *cluster)["allowed_pipelines"] == ["hello"]
    assert j("integration", "update", "prod-eu", "--allow-all-pipelines")["all_pipelines"] is True
    assert j("integration", "remove", "corp-reg")["status"] == "removed"

    trigger = j("trigger", "add", "hello", "--provider", "github", "--repo", "acme/app")
    assert [t["id"] for t in j("trigger", "list")] == [trigger["id"]]
    j("trigger", "show", trigger["id"])
    assert j("trigger", "disable", trigger["id"])["disabled"] is True
    assert j("trigger", "enable", trigger["id"])["disabled"] is False
    j("trigger", "rotate-secret", trigger["id"])
    assert j("trigger", "deliveries", trigger["id"]) == []
    ping = j("trigger", "test", trigger["id"])
    assert (ping["event"], ping["outcome"]) == ("ping", "ignored")
    assert j("trigger", "redeliver", trigger["id"], ping["id"])["redelivery_of"] == ping["id"]
    assert [d["redelivery_of"] for d in j("trigger", "deliveries", trigger["id"])] == [ping["id"], None]
    assert j("trigger", "remove", trigger["id"])["status"] == "removed"

    assert j("runners", "drain", runner_id)["drain"] in ("draining", "drained")  # the cancelled build may linger
    assert "drain" in control_plane.cli("runners", "list").stdout
    assert j("runners", "undrain", runner_id)["drain"] == ""
    assert j("runner", "drain", runner_id)["drain"] in ("draining", "drained")  # the same, next to runner start
    assert j("runner", "undrain", runner_id)["drain"] == ""
    assert j("runners", "revoke", runner_id)["status"] == "revoked"

    git_queries = {("git", "branches"), ("git", "file"), ("git", "changed-files")}  # need a Git server: tests/e2e
    assert set(EVERY) - PROCESSES - git_queries - covered == set()

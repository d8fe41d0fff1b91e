"""The rooms keep their walls: the runner never loads control-plane code or its dependencies; the control plane
never loads runner-side code (the engine, executors, the runner, the container engines' clients); the Git room
loads neither; and the store only talks to its database."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "outpost"

PROBE = """
import sys
import outpost.cli
import outpost.cli.agent
import outpost.runner.agent
import outpost.executors.local
heavy = ('fastapi', 'sqlalchemy', 'uvicorn', 'alembic', 'starlette')
loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('outpost.server'))
print(','.join(loaded))
"""

# Runner-side code: what runs builds. The pure helpers about image references in outpost.containers (images,
# auth, registries) are allowed; the clients of Docker, buildah and compose are not.
RUNNER_SIDE = (
    "outpost.engine",
    "outpost.executors",
    "outpost.runner",
    "outpost.containers.dockerapi",
    "outpost.containers.buildah",
    "outpost.containers.compose",
    "outpost.containers.buildcontext",
)

SERVER_PROBE = """
import sys
from outpost.server.app import create_app
import outpost.server.cron
import outpost.server.connections
runner_side = {runner_side!r}
print(','.join(sorted(m for m in sys.modules if m.startswith(runner_side))))
"""

GIT_PROBE = """
import sys
import outpost.git.access, outpost.git.clone, outpost.git.remote, outpost.git.urls
print(','.join(sorted(m for m in sys.modules if m.startswith(('outpost.server', 'outpost.cli') + {runner_side!r}))))
"""

# Modules (and their packages) through which Python code reaches the network or runs programs.
NETWORK = ("subprocess", "socket", "ssl", "httpx", "urllib.request", "http.client", "asyncio.subprocess", "outpost.git")
NETWORK_CALLS = ("create_subprocess_exec", "create_subprocess_shell", "open_connection", "getaddrinfo")


def _probe(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_the_runner_and_its_command_load_no_server_code() -> None:
    assert _probe(PROBE) == ""


def test_the_control_plane_loads_no_runner_side_code() -> None:
    assert _probe(SERVER_PROBE.format(runner_side=RUNNER_SIDE)) == ""


def test_the_git_room_loads_neither_the_control_plane_nor_runner_side_code() -> None:
    assert _probe(GIT_PROBE.format(runner_side=RUNNER_SIDE)) == ""


def _network_uses(path: Path) -> list[str]:
    """What in the module could reach the network: an import of a network module, or a call by the name of one
    of their entry points (whatever it was imported as)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and node.attr in NETWORK_CALLS:
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        found += [f"{path.name}:{node.lineno}: {n}" for n in names if _is_module(n)]
    return found


def _is_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in NETWORK)


def test_the_store_only_talks_to_its_database() -> None:
    modules = sorted((SRC / "server" / "store").glob("*.py"))
    assert len(modules) > 5
    assert [use for path in modules for use in _network_uses(path)] == []


def test_the_store_check_finds_a_module_that_reaches_the_network() -> None:
    # The check itself: server/connections.py runs git and an HTTP GET, and is found out.
    uses = _network_uses(SRC / "server" / "connections.py")
    assert any("httpx" in u for u in uses)
    assert any("outpost.git" in u for u in uses)

"""The rooms keep their walls: the runner never loads control-plane code or its dependencies; the control plane
never loads runner-side code (the engine, executors, the runner, the container engines' clients); the Git room
loads neither; the store only talks to its database and imports neither the API nor the UI above it; and no module
imports itself back through others."""

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
    "outpost.deploy",  # the control plane never talks to a cluster: a runner answers its connection tests
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


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every import in the module, lazy ones too, as (line, name); `from a import b` names both `a` and `a.b`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _network_uses(path: Path) -> list[str]:
    """What in the module could reach the network: an import of a network module, or a call by the name of one
    of their entry points (whatever it was imported as)."""
    found = [f"{path.name}:{line}: {name}" for line, name in _imports(path) if _is_module(name, NETWORK)]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in NETWORK_CALLS:
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def _is_module(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


ABOVE_THE_STORE = ("outpost.server.api", "outpost.server.ui")


def _upward_imports(path: Path) -> list[str]:
    return [f"{path.name}:{line}: {name}" for line, name in _imports(path) if _is_module(name, ABOVE_THE_STORE)]


def test_the_store_only_talks_to_its_database() -> None:
    modules = sorted((SRC / "server" / "store").glob("*.py"))
    assert len(modules) > 5
    assert [use for path in modules for use in _network_uses(path)] == []


def test_the_store_imports_neither_the_api_nor_the_ui() -> None:
    modules = sorted((SRC / "server" / "store").glob("*.py"))
    assert len(modules) > 5
    assert [use for path in modules for use in _upward_imports(path)] == []


def test_the_store_check_finds_an_import_of_the_ui_or_the_api(tmp_path: Path) -> None:
    module = tmp_path / "users.py"
    module.write_text(
        "from outpost.server.ui import users as passwords\n"
        "import outpost.server.api.deps\n"
        "from outpost.server import models\n"
        "def f():\n"
        "    from outpost.server.api.schemas.users import UserOut\n"
    )
    assert [use.split(": ")[1] for use in _upward_imports(module)] == [
        "outpost.server.ui",  # `from outpost.server.ui import users`: the package, then its module
        "outpost.server.ui.users",
        "outpost.server.api.deps",
        "outpost.server.api.schemas.users",
        "outpost.server.api.schemas.users.UserOut",
    ]


def _module_imports() -> dict[str, set[str]]:
    """Each module of src/outpost and the modules of ours it imports when it is loaded: module-level imports, not
    those inside functions (a deliberate lazy import) or under `if` (TYPE_CHECKING). `from package import module`
    counts as importing that module, not the package's __init__."""
    names = {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in SRC.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        wanted: set[str] = set()
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Import):
                wanted |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                members = {f"{node.module}.{alias.name}" for alias in node.names}
                wanted |= members & names.keys()
                if members - names.keys():  # a name defined in the module itself
                    wanted.add(node.module)
        graph[name] = {w for w in wanted if w in names and w != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach each other through imports (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            if group:
                found.append(sorted([node, *group]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    graph = _module_imports()
    assert len(graph) > 100
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_store_check_finds_a_module_that_reaches_the_network() -> None:
    # The check itself: server/connections.py runs git and an HTTP GET, and is found out.
    uses = _network_uses(SRC / "server" / "connections.py")
    assert any("httpx" in u for u in uses)
    assert any("outpost.git" in u for u in uses)

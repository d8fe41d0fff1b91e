"""`outpost --help` starts fast because it imports no command group's module: it lists them from SUMMARIES.
Behaviour, not timing (the figures are bench/cli_start.py's, in docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

from click.testing import CliRunner

from outpost.cli import LAZY, SUMMARIES, main
from tests.e2e.processes import outpost_env

HEAVY = (
    "outpost.runner",
    "outpost.engine",
    "outpost.executors",
    "outpost.server",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
)


def test_outpost_help_imports_neither_the_runner_the_engine_the_server_fastapi_sqlalchemy_nor_alembic() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "outpost", "--help"],
        capture_output=True,
        text=True,
        env=outpost_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "outpost.cli" in imported  # the probe sees our imports at all
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY or m.startswith(HEAVY)) == []


def test_help_lists_every_command_as_it_would_with_every_module_loaded() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "outpost", "--help"],
        capture_output=True,
        text=True,
        env=outpost_env(COLUMNS="80"),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for module in set(LAZY.values()):
        importlib.import_module(f"outpost.cli.{module}")
    # click formats 80 columns as 78
    loaded = CliRunner().invoke(main, ["--help"], prog_name="python -m outpost", terminal_width=78)
    assert done.stdout == loaded.output
    assert all(f"  {name} " in done.stdout for name in LAZY)


def test_every_lazy_command_has_its_own_helps_first_paragraph_as_its_summary() -> None:
    for module in set(LAZY.values()):
        importlib.import_module(f"outpost.cli.{module}")
    for name in LAZY:
        command = main.commands[name]
        own = " ".join(inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0].split())
        assert SUMMARIES.get(name) == own, f"SUMMARIES[{name!r}] in src/outpost/cli/__init__.py"

"""The runner is a room of its own: it never loads control-plane code or its dependencies."""

from __future__ import annotations

import subprocess
import sys

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


def test_the_runner_and_its_command_load_no_server_code() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

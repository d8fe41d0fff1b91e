"""Start-up: a control plane answers nobody before its installation is bootstrapped."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.components import free_port
from tests.e2e.processes import Process, outpost_env

pytestmark = pytest.mark.timeout(120)


def first_answer(port: int, proc: Process, token_file: Path, timeout: float = 60) -> bool:
    """Asks for a page as fast as it can until the first HTTP answer comes; then says whether the admin token
    was on disk, complete, at that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.running(), f"{proc.name} exited:\n{proc.output()[-3000:]}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"GET /no-such-page HTTP/1.1\r\nHost: outpost\r\nConnection: close\r\n\r\n")
                answer = conn.recv(64)
        except OSError:  # not listening yet (refused), or reset while it starts
            continue
        if answer.startswith(b"HTTP/"):
            return token_file.exists() and token_file.read_text().strip().startswith("opt_")
    raise AssertionError(f"{proc.name} never answered on port {port}")


@pytest.mark.parametrize("command", ["server", "up"])
def test_the_first_http_answer_comes_only_once_the_admin_token_is_written(
    command: str, tmp_path: Path, processes: list[Process]
) -> None:
    port, data = free_port(), tmp_path / "data"
    args = [command, "--port", str(port), "--data-dir", str(data)]
    if command == "up":
        args.append("--no-example")
    proc = Process(f"outpost {command}", args, tmp_path / f"{command}.log", outpost_env(), cwd=tmp_path)
    processes.append(proc)
    proc.start()

    assert first_answer(port, proc, data / "admin-token"), "an HTTP answer came before admin-token was written"

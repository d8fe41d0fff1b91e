"""Real components the tests start: PostgreSQL, HAProxy, and the rule for when one is missing.

A test that needs a missing component skips locally with the reason and fails under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


MISSING = "missing component: "  # the prefix of a skip's reason that the end-of-run summary counts


def need(condition: bool, reason: str) -> None:
    if condition:
        return
    if in_ci():
        pytest.fail(f"missing component under CI=true: {reason}")
    pytest.skip(MISSING + reason)


def missing_components(skipped: list[pytest.TestReport]) -> dict[str, int]:
    """The reasons of the skips that `need` caused, each with how many tests it skipped."""
    counts: dict[str, int] = {}
    for report in skipped:
        longrepr = report.longrepr
        text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _, found, reason = text.partition(MISSING)
        if found:
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def sleeping(seconds: str) -> list[str]:
    """The pids of `sleep <seconds>` processes on this host (a step's, run by any executor): tests give each step a
    sleep no other test runs, to see that it is gone."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", seconds.encode()]:
                found.append(proc.name)
        except OSError:
            continue
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on loopback; yields its base URL (no database name)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    need(bool(initdb and pg_ctl), "PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    assert initdb
    assert pg_ctl
    # Not under pytest's private temporary folder: the postgres user must be able to reach it.
    folder = Path(tempfile.mkdtemp(prefix="outpost-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        need(shutil.which("runuser") is not None, "runuser is needed to start PostgreSQL as root")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
        check=True,
        **quiet,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=200"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start"],
        check=True,
        **quiet,
    )
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], check=False, **quiet)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def haproxy(backends: list[int], folder: Path) -> Iterator[int]:
    """Debian's HAProxy in the foreground on a loopback port, balancing HTTP over the given local ports (one
    control-plane replica each); yields its port. Long polls and log follows are held up to a minute, a dead
    backend is seen within a second and a request refused by one is sent to another."""
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    need(binary is not None, "haproxy is not installed (Debian package haproxy)")
    assert binary
    port = free_port()
    servers = "".join(
        f"    server r{i} 127.0.0.1:{backend} check inter 300ms fall 2 rise 1\n" for i, backend in enumerate(backends)
    )
    config = folder / "haproxy.cfg"
    config.write_text(
        "global\n    maxconn 4096\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 90s\n    timeout server 90s\n"
        "    retries 3\n    option redispatch 1\n"
        f"frontend outpost\n    bind 127.0.0.1:{port}\n    default_backend replicas\n"
        "backend replicas\n    balance roundrobin\n    option httpchk GET /api/v1/health\n" + servers
    )
    log = open(folder / "haproxy.log", "wb")  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (folder / "haproxy.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "haproxy did not listen within 10 s"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()

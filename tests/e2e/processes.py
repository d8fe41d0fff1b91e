"""Real processes for end-to-end tests: the control plane and runners, each its own `python -m outpost`.

Every process a test starts is stopped by the fixture that started it; logs go to files that are
printed when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

FAST = {
    "OUTPOST_LEASE_TTL": "3",
    "OUTPOST_HEARTBEAT_INTERVAL": "0.5",
    "OUTPOST_POLL_TIMEOUT": "5",
}


def outpost_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    env.update(FAST)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def eventually(check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Process:
    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> None:
        self.name, self.args, self.log, self.env, self.cwd = name, args, log, env, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            out.write(f"\n=== start {self.name}: {' '.join(self.args)}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "outpost", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.running():
            return
        self.signal(signal.SIGTERM)
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class ControlPlane(Process):
    def __init__(self, folder: Path, port: int = 0, **env: str) -> None:
        self.folder = folder
        self.data_dir = folder / "cp"
        self.port = port
        super().__init__("control plane", [], folder / "control-plane.log", outpost_env(**env))

    def start(self) -> None:
        self.args = ["server", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        seen = len(self.output())
        super().start()
        match = eventually(
            lambda: re.search(r"control plane on (http://[\d.]+:(\d+))", self.output()[seen:]) or self._died(),
            timeout=30,
            what="the control plane to start",
        )
        self.url, self.port = match.group(1), int(match.group(2))

    def _died(self) -> None:
        if not self.running():
            raise AssertionError(f"the control plane exited:\n{self.output()[-3000:]}")

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {token or self.token}"}, timeout=30
        )

    def deliver_github_pull_request(self, pipeline: str) -> tuple[httpx.Response, str]:
        """GitHub's recorded `pull_request` (opened) payload, signed and sent to a new trigger of `pipeline`;
        the answer and the payload's head SHA. Needs ../shared/fixtures."""
        from tests.server.test_webhooks import event_header, fixture, signed

        with self.api() as api:
            trigger = api.post(
                "/triggers",
                json={
                    "pipeline": pipeline,
                    "provider": "github",
                    "repo": "Codertocat/Hello-World",
                    "events": ["pullrequest"],
                },
            ).json()
        raw = fixture("github", "pull_request-opened")
        headers = {"Content-Type": "application/json", **event_header("github", "pull_request-opened", raw)}
        headers.update(signed("github", raw, trigger["secret"]))
        path = trigger["endpoint"][trigger["endpoint"].index("/", len("http://")) :]
        answer = httpx.post(self.url + path, content=raw, headers=headers, timeout=30)
        return answer, json.loads(raw)["pull_request"]["head"]["sha"]

    def cli_env(self) -> dict[str, str]:
        return outpost_env(OUTPOST_URL=self.url, OUTPOST_TOKEN=self.token)

    def cli(self, *args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "outpost", *args],
            capture_output=True,
            text=True,
            env=self.cli_env(),
            timeout=timeout,
            cwd=cwd,
        )

    def install_token(self, runtime: str = "local") -> str:
        with self.api() as api:
            if not any(r["name"] == runtime for r in api.get("/runtimes").json()):
                return str(api.post("/runtimes", json={"name": runtime}).json()["install_token"])
            return str(api.post(f"/runtimes/{runtime}/install-tokens").json()["install_token"])

    def build(self, build_id: str) -> dict[str, Any]:
        with self.api() as api:
            body: dict[str, Any] = api.get(f"/builds/{build_id}").json()
            return body

    def wait_for(self, build_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            build = self.build(build_id)
            return build if build["status"] in statuses else None

        return eventually(reached, timeout=timeout, what=f"build {build_id} to reach {statuses}")


class RunnerProcess(Process):
    def __init__(self, folder: Path, url: str, token: str, *extra: str, name: str = "runner", **env: str) -> None:
        self.data_dir = folder / name
        args = ["runner", "start", "--url", url, "--token", token, "--data-dir", str(self.data_dir), *extra]
        super().__init__(name, args, folder / f"{name}.log", outpost_env(**env))

    def build_folders(self) -> Iterator[Path]:
        yield from (self.data_dir / "builds").glob("*")


def launch_runner(
    processes: list[Process], folder: Path, url: str, token: str, *extra: str, name: str = "runner", **env: str
) -> RunnerProcess:
    """Starts a runner process that the test's `processes` fixture will stop."""
    runner = RunnerProcess(folder, url, token, *extra, name=name, **env)
    processes.append(runner)
    runner.start()
    return runner


def listening_inodes() -> set[str]:
    """Socket inodes in LISTEN state (TCP over IPv4 and IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes

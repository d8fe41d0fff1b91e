"""The firewall proof: the control plane in an `internet` network namespace; the runner and a Git server (smart
HTTP, basic auth) in a `corp` namespace whose firewall drops every inbound connection. A pipeline whose YAML
lives in the internal repository clones and runs there, a git query is answered, and the firewall's counter of
new inbound connections shows that nothing ever tried to connect into `corp`.

Needs root, `ip` and `iptables` (recipes/real-components.md): skipped locally without them, failed under CI=true.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.components import need
from tests.e2e.processes import Process, eventually, outpost_env
from tests.gitserver import standard_upstream

pytestmark = pytest.mark.timeout(240)

REPO_ROOT = Path(__file__).resolve().parents[2]
CORP_IP, INTERNET_IP = "10.200.0.1", "10.200.0.2"
GIT_PORT, CP_PORT = 8080, 8000
USER, PASSWORD = "robot", "s3cr3t-Pa55word"
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
PIPELINE = """version: '1.0'
steps:
  main_clone:
    type: git-clone
    repo: acme/app
    git: corp
    revision: ${{CF_BRANCH}}
  inside:
    image: alpine
    commands:
      - cat README.md
      - echo "built $CF_SHORT_REVISION of $CF_REPO_OWNER/$CF_REPO_NAME behind the firewall"
"""
GIT_SERVER = """
import sys, threading
from pathlib import Path
from tests.gitserver import GitHttpServer
GitHttpServer(Path(sys.argv[1]), auth=(sys.argv[2], sys.argv[3]), port=int(sys.argv[4])).start()
print("git server ready", flush=True)
threading.Event().wait()
"""


@dataclass(frozen=True)
class Namespaces:
    corp: str
    internet: str

    def run(self, netns: str, *command: str, timeout: float = 30, check: bool = True) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", netns, *command], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} in {netns} failed: {done.stderr}")
        return done.stdout

    def new_inbound(self) -> int:
        """Packets of new connections that came into corp from outside (counted by our rule before the drop)."""
        table = self.run(self.corp, "iptables", "-L", "INPUT", "-v", "-n", "-x")
        for line in table.splitlines():
            if "ctstate NEW" in line:
                return int(line.split()[0])
        raise AssertionError(f"the counting rule is missing:\n{table}")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    need(os.geteuid() == 0, "network namespaces need root")
    need(shutil.which("ip") is not None, "`ip` is not installed (apt-get install iproute2)")
    need(shutil.which("iptables") is not None, "`iptables` is not installed (apt-get install iptables)")
    pid = os.getpid()
    ns = Namespaces(corp=f"op-corp-{pid}", internet=f"op-inet-{pid}")
    veth_corp, veth_inet = f"opc{pid}", f"opi{pid}"  # interface names: 15 characters at most
    try:
        _ip("netns", "add", ns.corp)
        _ip("netns", "add", ns.internet)
        _ip("link", "add", veth_corp, "type", "veth", "peer", "name", veth_inet)
        _ip("link", "set", veth_corp, "netns", ns.corp)
        _ip("link", "set", veth_inet, "netns", ns.internet)
        _ip("-n", ns.corp, "addr", "add", f"{CORP_IP}/24", "dev", veth_corp)
        _ip("-n", ns.internet, "addr", "add", f"{INTERNET_IP}/24", "dev", veth_inet)
        for name, veth in ((ns.corp, veth_corp), (ns.internet, veth_inet)):
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", veth, "up")
        firewall = [
            ["-P", "INPUT", "DROP"],
            ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
            ["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
            ["-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"],  # counts what we prove absent
        ]
        for rule in firewall:
            ns.run(ns.corp, "iptables", *rule)
        yield ns
    finally:
        for name in (ns.corp, ns.internet):  # deleting a namespace removes its veth end and the pair
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)


class InNamespace(Process):
    """A process started inside a network namespace (`ip netns exec` execs it: the pid is the process's own)."""

    def __init__(self, netns: str, name: str, command: list[str], log: Path, env: dict[str, str]) -> None:
        super().__init__(name, command, log, env, cwd=REPO_ROOT)
        self.netns = netns

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )

    def wait_for_output(self, text: str, timeout: float = 30) -> re.Match[str]:
        def seen() -> re.Match[str] | None:
            if not self.running():
                raise AssertionError(f"{self.name} exited:\n{self.output()[-3000:]}")
            return re.search(text, self.output())

        return eventually(seen, timeout=timeout, what=f"{self.name} to say {text!r}")


def direct_env(**extra: str) -> dict[str, str]:
    """No proxy: inside the namespaces there is nothing but the two hosts."""
    return {k: v for k, v in outpost_env(**extra).items() if k not in PROXIES}


def test_a_runner_behind_a_firewall_that_drops_every_inbound_connection_runs_yaml_from_the_internal_repo(
    tmp_path: Path, namespaces: Namespaces, processes: list[Process]
) -> None:
    ns = namespaces
    upstream = standard_upstream(tmp_path / "srv")
    yaml_sha = upstream.commit("pipeline", files={"codefresh.yml": PIPELINE})
    upstream.push("main")

    git_server = InNamespace(
        ns.corp,
        "git server (corp)",
        [sys.executable, "-c", GIT_SERVER, str(tmp_path / "srv"), USER, PASSWORD, str(GIT_PORT)],
        tmp_path / "git-server.log",
        {**direct_env(), "PYTHONPATH": str(REPO_ROOT)},
    )
    processes.append(git_server)
    git_server.start()
    git_server.wait_for_output("git server ready")

    data = tmp_path / "cp"
    control_plane = InNamespace(
        ns.internet,
        "control plane (internet)",
        [
            sys.executable,
            "-m",
            "outpost",
            "server",
            "--host",
            INTERNET_IP,
            "--port",
            str(CP_PORT),
            "--data-dir",
            str(data),
        ],
        tmp_path / "control-plane.log",
        direct_env(),
    )
    processes.append(control_plane)
    control_plane.start()
    url = control_plane.wait_for_output(r"control plane on (http://[\d.:]+)").group(1)
    cli_env = direct_env(OUTPOST_URL=url, OUTPOST_TOKEN=(data / "admin-token").read_text().strip())

    def cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """The CLI, run from the internet side (the only side that reaches the control plane's address)."""
        return subprocess.run(
            ["ip", "netns", "exec", ns.internet, sys.executable, "-m", "outpost", *args],
            capture_output=True,
            text=True,
            env=cli_env,
            timeout=timeout,
            cwd=REPO_ROOT,
        )

    runtime = cli("runtime", "create", "corp", "--json")
    assert runtime.returncode == 0, runtime.stderr
    install = json.loads(runtime.stdout)["install_token"]
    added = cli(
        "integration", "add", "git", "corp",
        "--provider", "git",
        "--url", f"http://127.0.0.1:{GIT_PORT}",  # corp's own loopback: an address only the corp side has
        "--username", USER,
        "--runner-secret", "CORP_GIT",
        "--behind-firewall",
        "--default",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    refused = cli("integration", "test", "corp")
    assert refused.returncode != 0
    assert "the control plane cannot reach integrations behind the firewall" in refused.stderr
    created = cli("pipeline", "create", "app", "--repo", "acme/app", "--git", "corp", "--path", "codefresh.yml")
    assert created.returncode == 0, created.stderr

    secrets = tmp_path / "runner-secrets"
    secrets.write_text(f"CORP_GIT={PASSWORD}\n")
    secrets.chmod(0o600)
    runner = InNamespace(
        ns.corp,
        "runner (corp)",
        [sys.executable, "-m", "outpost", "runner", "start", "--url", url, "--token", install,
         "--data-dir", str(tmp_path / "runner"), "--secrets-file", str(secrets)],
        tmp_path / "runner.log",
        direct_env(),
    )  # fmt: skip
    processes.append(runner)
    runner.start()
    runner.wait_for_output("registered in runtime corp")

    run = cli("run", "app", "--json", timeout=150)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    build_id = json.loads(run.stdout)["id"]  # with --json, stdout holds the build and stderr its log
    assert f"built {yaml_sha[:7]} of acme/app behind the firewall" in run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    shown = json.loads(cli("build", "show", build_id, "--json").stdout)
    assert (shown["yaml_revision"], shown["yaml"]) == (yaml_sha, PIPELINE)

    branches = cli("git", "branches", "--git", "corp", "--repo", "acme/app", "--json")
    assert branches.returncode == 0, branches.stderr
    assert {"name": "main", "sha": yaml_sha} in json.loads(branches.stdout)["branches"]

    # Nothing ever tried to open a connection into corp: not the control plane, not anything else.
    assert ns.new_inbound() == 0
    # And the counter does count: a connection attempt from the internet side is dropped and counted.
    with contextlib.suppress(subprocess.TimeoutExpired):
        attempt = ns.run(
            ns.internet,
            sys.executable, "-c",
            f"import socket; socket.create_connection(('{CORP_IP}', {GIT_PORT}), timeout=2)",
            timeout=10, check=False,
        )  # fmt: skip
        assert "timed out" not in attempt  # the traceback goes to stderr; nothing connected
    assert ns.new_inbound() >= 1

"""The firewall proof for deploys: a Kubernetes cluster (the test cluster: API server emulator, Deployment
controller, fake kubelets running pods on the tests' Docker engine) whose API endpoint lives in the `corp` network
namespace, behind the firewall that drops every inbound connection; the control plane in `internet`. The runner in
`corp` runs a pipeline whose freestyle step uses kubectl with the integration's context and whose deploy step rolls
out a new image. The firewall's counter of new inbound connections stays 0, and the integration's token never shows
in a log, in the build volume, in any file the runner or the control plane keep, or in any process's command line.

Needs root, `ip`, `iptables`, a Docker engine and kubectl: skipped locally without them, failed under CI=true.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests import containers
from tests.components import need
from tests.e2e.processes import Process
from tests.e2e.test_firewall import CP_PORT, INTERNET_IP, REPO_ROOT, InNamespace, Namespaces, direct_env, namespaces

__all__ = ["namespaces"]

dockerd, busybox_image = containers.dockerd, containers.busybox_image

pytestmark = pytest.mark.timeout(240)

TOKEN = "prod-eu-sa-token-6f1d0c9be27a44d1"  # the integration's service account
CLUSTER = """
import json, signal, sys, threading
from pathlib import Path
from tests.kube.cluster import Cluster
folder, socket, token, image = sys.argv[1:5]
cluster = Cluster(Path(folder), socket).start()
rules = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list"]},
]
cluster.store.roles[Path(token).read_text().strip()] = ("default", rules)
web = {"containers": [{"name": "web", "image": image, "command": ["sleep", "3600"]}]}
labels = {"app": "shop"}
spec = {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": web}}
deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"}, "spec": spec}
async def create():
    await cluster.store.create("deployments", "default", deployment)
cluster.call(create)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
print(f"cluster ready on {cluster.url}", flush=True)
stop.wait()
cluster.stop()
"""
PIPELINE = """version: '1.0'
steps:
  look:
    image: alpine
    commands:
      - kubectl config current-context
      - kubectl get deploy shop
      - cat "$KUBECONFIG"
  ship:
    type: deploy
    kind: kubernetes
    cluster: prod-eu
    service: shop
    candidate:
      image: ${{IMAGE}}
    timeout: '90'
"""


class Script(InNamespace):
    """A Python script (not `python -m outpost`) in a network namespace."""

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-c", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )


class CommandLines:
    """Reads every process's command line, over and over, while the build runs: the token must never be on one."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if TOKEN in text:
                    self.seen.append(text)
            self.looks += 1
            self._stop.wait(0.05)


def files_holding(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_runner_behind_the_firewall_deploys_to_an_internal_cluster_the_control_plane_never_reaches(
    tmp_path: Path, namespaces: Namespaces, processes: list[Process], dockerd: Any, busybox_image: str
) -> None:
    need(shutil.which("kubectl") is not None, "kubectl is not installed (apt-get install kubernetes-client)")
    ns = namespaces
    dockerd.cli("tag", busybox_image, "outpost-shop:2")
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    token_file = secrets / "token"
    token_file.write_text(TOKEN)
    cluster = Script(
        ns.corp,
        "test cluster (corp)",
        [CLUSTER, str(tmp_path / "cluster"), str(dockerd.socket), str(token_file), busybox_image],
        tmp_path / "cluster.log",
        {**direct_env(), "PYTHONPATH": str(REPO_ROOT)},
    )
    processes.append(cluster)
    cluster.start()
    cluster_url = cluster.wait_for_output(r"cluster ready on (http://[\d.:]+)", timeout=60).group(1)

    data = tmp_path / "cp"
    control_plane = InNamespace(
        ns.internet,
        "control plane (internet)",
        [sys.executable, "-m", "outpost", "server", "--host", INTERNET_IP, "--port", str(CP_PORT),
         "--data-dir", str(data)],
        tmp_path / "control-plane.log",
        direct_env(),
    )  # fmt: skip
    processes.append(control_plane)
    control_plane.start()
    url = control_plane.wait_for_output(r"control plane on (http://[\d.:]+)").group(1)
    admin = (data / "admin-token").read_text().strip()
    cli_env = direct_env(OUTPOST_URL=url, OUTPOST_TOKEN=admin)

    def cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns.internet, sys.executable, "-m", "outpost", *args],
            capture_output=True, text=True, env=cli_env, timeout=timeout, cwd=REPO_ROOT,
        )  # fmt: skip

    runtime = cli("runtime", "create", "corp", "--json")
    assert runtime.returncode == 0, runtime.stderr
    install = json.loads(runtime.stdout)["install_token"]
    (tmp_path / "k8s.yml").write_text(PIPELINE)
    created = cli("pipeline", "create", "app", "--file", str(tmp_path / "k8s.yml"))
    assert created.returncode == 0, created.stderr
    # The integration as an admin adds it, the token read from a file (never on a command line): sealed at rest,
    # handed to the runner in the build's task only.
    added = cli(
        "integration", "add", "kubernetes", "prod-eu", "--server", cluster_url, "--token-file", str(token_file),
        "--namespace", "default", "--behind-firewall", "--allow-pipeline", "app",
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr

    runner_data = tmp_path / "runner"
    runner = InNamespace(
        ns.corp,
        "runner (corp)",
        [sys.executable, "-m", "outpost", "runner", "start", "--url", url, "--token", install,
         "--data-dir", str(runner_data)],
        tmp_path / "runner.log",
        direct_env(),
    )  # fmt: skip
    processes.append(runner)
    runner.start()
    runner.wait_for_output("registered in runtime corp")

    with CommandLines() as cmdlines:
        run = cli("run", "app", "--json", "--var", "IMAGE=outpost-shop:2", timeout=180)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    log = run.stderr  # with --json, stdout holds the build and stderr its log
    assert "prod-eu" in log.splitlines()
    assert any(line.split()[:1] == ["shop"] for line in log.splitlines())  # kubectl get's row of the deployment
    assert 'deployment "shop" rolled out: revision 2' in log
    assert "token: *****" in log  # the step printed its kubeconfig: the token is masked

    # The token: nowhere but where it belongs.
    assert TOKEN not in run.stdout + run.stderr
    build_id = json.loads(run.stdout)["id"]
    shown = cli("build", "logs", build_id)
    assert TOKEN not in shown.stdout + shown.stderr
    for process in (control_plane, runner, cluster):
        assert TOKEN not in process.output(), process.name
    assert files_holding(runner_data, TOKEN) == []  # build volumes, outbox, scratch: the runner's every file
    assert files_holding(data, TOKEN) == []  # the control plane's database holds it sealed
    assert cmdlines.looks > 10
    assert cmdlines.seen == []

    # Nothing ever tried to open a connection into corp: the control plane never reached for the cluster.
    assert ns.new_inbound() == 0

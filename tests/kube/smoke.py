"""`make k8s-smoke KUBECONFIG=…`: the Kubernetes runner end to end against a real cluster (none can run on the
machines this project is developed on, so this has never run: it is the check for someone who has one).

It installs the Helm chart (rendered by Helm's own engine, applied server-side) in a namespace of its own with an
install token from `outpost runtime create --kubernetes`, waits for the runner pod to register, then runs through
the control plane: a two-step pipeline whose steps share the build volume (every output line exactly once, last
words kept), the same pipeline again (the volume reused: the second build sees the first one's file), and a failing
pipeline (the build fails with the step's exit code). Every build's engine runs in an engine pod (the chart's default,
`engine.enabled`, with the runner's image): the smoke checks that one was made, and then deletes the runner pod in
the middle of a slow build (an upgrade, a node drain): the StatefulSet starts it again, the new runner adopts the
engine pod, and the build completes with every line exactly once. It deletes the namespace at the end, whatever
happened.

Needs, in the environment: KUBECONFIG (may create a namespace, Roles and a StatefulSet), OUTPOST_URL and OUTPOST_TOKEN
(a control plane reachable from the cluster's pods, and an admin API token), OUTPOST_SMOKE_IMAGE (the runner image,
an image with `outpost` as its entry point that the cluster can pull); optionally OUTPOST_SMOKE_STEP_IMAGE (default
busybox:1.36) and OUTPOST_SMOKE_STORAGE_CLASS (the runner claim's class; default: the cluster's). Both images must
be pullable without credentials (the namespace is new: it holds no pull secret).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "outpost-runner"
NEEDED = ("KUBECONFIG", "OUTPOST_URL", "OUTPOST_TOKEN", "OUTPOST_SMOKE_IMAGE")
STEPS = """version: '1.0'
steps:
  write:
    image: {image}
    commands:
      - echo "build $CF_BUILD_ID" >> /codefresh/volume/builds
      - for i in $(seq 1 300); do echo "line $i"; done
  read:
    image: {image}
    commands:
      - cat /codefresh/volume/builds
      - printf 'last words'
"""
FAILING = "version: '1.0'\nsteps:\n  broken:\n    image: {image}\n    commands: [echo about to fail, exit 5]\n"
# Slow enough for the runner pod to be deleted and started again while it runs (a minute and a half).
SLOW = """version: '1.0'
steps:
  slow:
    image: {image}
    commands:
      - for i in $(seq 1 90); do echo "line $i"; sleep 1; done
  after:
    image: {image}
    commands:
      - printf 'last words'
"""
ENGINE_LABEL = "outpost.io/engine"  # on engine pods, the build's id (executors/kubernetes/objects.py)


def main() -> int:
    missing = [name for name in NEEDED if not os.environ.get(name)]
    if missing:
        print(f"k8s-smoke needs {', '.join(missing)} (see tests/kube/smoke.py and docs/kubernetes.md)", file=sys.stderr)
        return 2
    suffix = uuid.uuid4().hex[:6]
    namespace, runtime = f"outpost-smoke-{suffix}", f"smoke-{suffix}"
    step_image = os.environ.get("OUTPOST_SMOKE_STEP_IMAGE", "busybox:1.36")
    token = install_token(runtime)
    objects = render(namespace, token)
    from lightkube import Client
    from lightkube.codecs import from_dict
    from lightkube.resources.core_v1 import Namespace

    with Client(field_manager="outpost-smoke") as client:
        try:
            for body in objects:
                client.apply(from_dict(body), force=True)
                print(f"applied {body['kind']} {body['metadata']['name']}")
            pod = next(b for b in objects if b["kind"] == "StatefulSet")["metadata"]["name"] + "-0"
            wait_for_runner(pod)
            for name, text in (("smoke", STEPS), ("smoke-failing", FAILING), ("smoke-slow", SLOW)):
                file = Path(f"/tmp/{namespace}-{name}.yml")
                file.write_text(text.format(image=step_image))
                cli("pipeline", "create", f"{name}-{suffix}", "--file", str(file), "--runtime", runtime)
            first, second = run(f"smoke-{suffix}", 0), run(f"smoke-{suffix}", 0)
            for out in (first, second):
                numbered = [line for line in out.splitlines() if line.startswith("line ")]
                check(numbered == [f"line {i}" for i in range(1, 301)], "every line exactly once, in order")
                check("last words" in out, "the step's last words (no newline) are in the log")
            check(second.count("build ") >= first.count("build ") + 1, "the second build sees the first one's file")
            failed = run(f"smoke-failing-{suffix}", 1)
            check("about to fail" in failed, "the failing step's output is in the log")
            adopted(client, namespace, pod, f"smoke-slow-{suffix}")
            print("k8s-smoke: passed")
            return 0
        finally:
            client.delete(Namespace, namespace)
            print(f"deleted namespace {namespace} (runtime {runtime} stays on the control plane)")


def adopted(client: Any, namespace: str, runner_pod: str, pipeline: str) -> None:
    """A slow build in an engine pod outlives its runner pod: deleted mid-build, started again by the StatefulSet,
    the new runner adopts the engine pod and the build completes, every line once, in the one engine pod."""
    from lightkube.resources.core_v1 import Pod

    following = subprocess.Popen(
        [sys.executable, "-m", "outpost", "run", pipeline], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        engines = wait_for(lambda: list(client.list(Pod, namespace=namespace, labels={ENGINE_LABEL: None})), 300,
                           "the build's engine pod to run")  # fmt: skip
        engine = engines[0].metadata
        print(f"the build runs in engine pod {engine.name}; deleting the runner pod {runner_pod}")
        time.sleep(10)  # well into the slow step
        before = client.get(Pod, runner_pod, namespace=namespace).metadata.uid
        client.delete(Pod, runner_pod, namespace=namespace)

        def restarted() -> bool:
            from lightkube import ApiError

            try:
                again = client.get(Pod, runner_pod, namespace=namespace)
            except ApiError:  # between the deletion and the StatefulSet's new pod
                return False
            return bool(again.metadata.uid != before and again.status and again.status.phase == "Running")

        wait_for(restarted, 300, "the StatefulSet to start the runner pod again")
        wait_for_runner(runner_pod)
        if following.poll() is None:  # the build still runs: in the engine pod it started in, adopted
            uids = [p.metadata.uid for p in client.list(Pod, namespace=namespace, labels={ENGINE_LABEL: None})]
            check(uids in ([engine.uid], []), f"the build's one engine pod {engine.name} carried on ({uids})")
        out, err = following.communicate(timeout=900)
    finally:
        if following.poll() is None:
            following.kill()
            following.wait()
    check(following.returncode == 0, f"outpost run {pipeline} exits 0 across the runner pod's restart: {out}{err}")
    numbered = [line for line in out.splitlines() if line.startswith("line ")]
    check(numbered == [f"line {i}" for i in range(1, 91)], "every line exactly once, in order, across the restart")
    check("last words" in out, "the step after the restart ran")
    print(f"the build in engine pod {engine.name} completed across the runner pod's restart")


def wait_for(found: Any, within: float, what: str) -> Any:
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        if result := found():
            return result
        time.sleep(2)
    raise SystemExit(f"k8s-smoke: waited {within:g}s for {what}")


def install_token(runtime: str) -> str:
    printed = cli("runtime", "create", runtime, "--kubernetes")
    line = next(line for line in printed.splitlines() if line.strip().startswith("helm install"))
    words = shlex.split(line)
    sets = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--set")
    return sets["installToken"]


def render(namespace: str, token: str) -> list[dict[str, Any]]:
    import helm_python
    import yaml

    repository, _, tag = os.environ["OUTPOST_SMOKE_IMAGE"].rpartition(":")
    values: dict[str, Any] = {
        "controlPlane": {"url": os.environ["OUTPOST_URL"]},
        "installToken": token,
        "image": {"repository": repository or tag, "tag": tag if repository else "latest"},
        "namespace": {"create": True, "name": namespace},
        "engine": {"enabled": True},  # the default, said here: the builds' engines run in engine pods of this image
    }
    if os.environ.get("OUTPOST_SMOKE_STORAGE_CLASS"):
        values["data"] = {"storageClassName": os.environ["OUTPOST_SMOKE_STORAGE_CLASS"]}
    with helm_python.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="outpost-smoke", namespace=namespace, is_install=True)
    texts = [text for path, text in manifests.items() if path.endswith(".yaml")]  # not NOTES.txt
    found = [doc for text in texts for doc in yaml.safe_load_all(text) if doc]
    order = ["Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap", "StatefulSet"]
    return sorted((d for d in found if d["kind"] in order), key=lambda d: order.index(d["kind"]))


def wait_for_runner(name: str, within: float = 300) -> None:
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        runners = json.loads(cli("runners", "list", "--json"))
        if any(r["name"] == name and r["online"] for r in runners):
            print(f"runner {name} registered")
            return
        time.sleep(5)
    raise SystemExit(f"k8s-smoke: the runner pod {name} did not register within {within:g}s (kubectl logs it)")


def run(pipeline: str, expected: int) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "outpost", "run", pipeline], capture_output=True, text=True, timeout=900, check=False
    )
    check(done.returncode == expected, f"outpost run {pipeline} exits {expected}: {done.stdout}{done.stderr}")
    return done.stdout


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "outpost", *args], capture_output=True, text=True, timeout=120)
    check(done.returncode == 0, f"outpost {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"k8s-smoke failed: {what}")


if __name__ == "__main__":
    sys.exit(main())

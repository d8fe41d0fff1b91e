"""The engine of one build in its engine pod (`--engine-image`): today's BuildJob, run by
`python -m outpost.runner.enginepod --folder F --task T --settings S` in a pod the runner created.

It talks to the control plane itself (outbound, with the build's job token: reports, the first carrying `started`,
and heartbeats; the claim's time is the runner's, so a heartbeat goes first and starts the pod's lease deadline) and
to the Kubernetes API with the pod's own service account (it creates the step pods). Its build folder, outbox included,
is on the work claim at the path the runner has it, so a runner that restarts finds the outbox there, and one that
sees this pod fail delivers what the outbox holds. The process ends 0 once the build was delivered, or given up
because the control plane refused its lease (the lost lease is said in the build's log): either way nothing is left
for the runner to do but remove the pod. Any other end (a crash, a kill) leaves the outbox for the runner.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from outpost import logformat
from outpost.executors.kubernetes.executor import KubernetesExecutor
from outpost.runner import enginemail, volumes
from outpost.runner.client import ProtocolClient
from outpost.runner.job import BuildJob
from outpost.runner.supervisor import DELIVERED_FILE, ENGINE_LOG
from outpost.wire import RunBuildTask

log = logging.getLogger("outpost.runner.engine")


def _stop_now() -> None:
    """SIGTERM: the pod is being deleted (from outside, a drain, its deadline). The engine stops where it is, between
    two callbacks of its loop (never in the middle of an outbox write), without finishing the build: the runner
    sees the pod end and finishes the build with the reason. As PID 1 of its container, without this handler the
    process would ignore SIGTERM and the build would wait the grace period for its SIGKILL."""
    log.warning("SIGTERM: the engine stops here; the runner finishes the build")
    logging.shutdown()
    os._exit(143)


def take_network_settings(settings: dict[str, Any], folder: Path) -> None:
    """The runner's proxy variables and CA bundle (`outbound_settings`), for this process's own connections to the
    control plane: set in its environment before the client is made (httpx reads them from there)."""
    for name, value in dict(settings.get("proxy") or {}).items():
        os.environ[str(name)] = str(value)
    if bundle := settings.get("ca_bundle"):
        path = folder / "ca-bundle.pem"
        path.write_text(str(bundle))
        os.environ["SSL_CERT_FILE"] = str(path)


async def run(folder: Path, task: RunBuildTask, settings: dict[str, Any]) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _stop_now)
    take_network_settings(settings, folder)
    async with ProtocolClient(str(settings["url"])) as client:
        options = {str(k): str(v) for k, v in dict(settings["executor_options"]).items()}
        # The build volume's claim, which the runner took for the build, mounted at the folder's `volume`.
        claimed = settings.get("claim_volume")
        volume = volumes.of_claim(folder / "volume", kept=claimed.get("kept") is True) if claimed else None
        job = BuildJob(
            task,
            client,
            folder=folder,
            executor="kubernetes",
            heartbeat_interval=float(settings["heartbeat_interval"]),
            max_chunk=int(settings["max_chunk"]),
            runner=str(settings.get("runner", "")),
            runner_secrets={str(k): str(v) for k, v in dict(settings.get("runner_secrets") or {}).items()},
            executor_options=options,
            volumes=Path(settings["volumes"]) if settings.get("volumes") else None,
            volume=volume,
            max_freeze=float(settings["max_freeze"]),
            lease_written=True,
        )
        if isinstance(runs := job.engine.executor, KubernetesExecutor):  # what a step printed, should this die
            runs.last_words_key = task.job_token
        mail = asyncio.create_task(enginemail.deliver(folder, job))
        done = asyncio.create_task(_say_delivered(folder, job))
        try:
            await job.run()
        finally:
            mail.cancel()
            done.cancel()
    if job.revoked is not None:
        log.warning("build %s: the control plane refused its job token (%s)", task.build_id, job.revoked)


async def _say_delivered(folder: Path, job: BuildJob) -> None:
    """Once the build's end was taken, a build of the same pipeline on this runner waits for its volume to be given
    back (seconds) instead of taking a fresh one (claims.claim's `ending`)."""
    await job.delivered.wait()
    with contextlib.suppress(OSError):
        (folder / DELIVERED_FILE).touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outpost.runner.enginepod", description=__doc__)
    parser.add_argument("--folder", required=True, type=Path, help="the build folder, on the work claim")
    parser.add_argument("--task", required=True, type=Path, help="the build's RunBuildTask as JSON")
    parser.add_argument("--settings", required=True, type=Path, help="the runner's settings for this build, as JSON")
    args = parser.parse_args(argv)
    logformat.configure(None, log_format=os.environ.get(logformat.ENV_VARIABLE, "text"))
    # Also beside the build: a runner that sees this pod fail shows the engine's last lines in its own log (it
    # cannot read pod logs: its Role has no pods/log, and the pod may be gone).
    with contextlib.suppress(OSError):
        kept = logging.FileHandler(args.folder / ENGINE_LOG)
        kept.setFormatter(logging.Formatter(logformat.TEXT))
        logging.getLogger().addHandler(kept)
    try:
        task = RunBuildTask.model_validate_json(args.task.read_text())
        settings = json.loads(args.settings.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the build's task or settings: {exc}", file=sys.stderr)
        return 2
    logformat.BUILD_ID.set(task.build_id)
    log.info("build %s: engine pod %s started", task.build_id, os.environ.get("OUTPOST_ENGINE_POD", "?"))
    try:
        asyncio.run(run(args.folder, task, settings))
    except Exception:
        log.exception("build %s: the engine failed", task.build_id)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

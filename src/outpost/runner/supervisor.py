"""A build whose engine runs in an engine pod (`--engine-image`), as the runner sees it: it starts the pod, follows
it, and finishes the build itself only when the pod could not.

The engine pod delivers the build (reports, heartbeats) with the build's job token; its outbox is on the work claim.
The runner keeps the outbox's lease file (the job token sealed with the runner token, as the Outbox does) so that it
can reopen that outbox whatever happens to the pod. The pod's end decides:
- `Succeeded`: the engine delivered the build (or gave it up because the control plane refused its lease): the pod,
  its Secret and the build folder go.
- anything else (failed, OOMKilled, evicted, deleted from outside, its node lost, its image unpullable, never
  scheduled): the pod and the build's step pods go, then the runner delivers what the outbox holds (exactly once:
  the acknowledged offsets are in it) and finishes the build `error` with the reason, in its message and log.

A runner that stops (SIGTERM) or crashes leaves engine pods running: the next runner with the same data folder
adopts them (`adopt`) and the builds go on.

With `--volume-reuse pipeline|branch` the runner takes the build volume's claim before it creates the engine pod
(`claims.claim`: the pipeline's, or a fresh one when a build holds it) and gives it back when it has finished with
the build (whatever ended it); the claim is in `engine.json`, so a runner that adopts the build gives it back too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from outpost.errors import ExecutorError, LeaseLost, OutpostError, ProtocolError
from outpost.runner import enginemail, sealing
from outpost.runner.client import ProtocolClient, Revoked, Unreachable
from outpost.runner.outbox import Outbox, read_lease, write_lease
from outpost.wire import SYSTEM_STREAM, ApprovalDecision, BuildFinished, RunBuildTask

log = logging.getLogger("outpost.runner.supervisor")
DELIVERY_DEADLINE = 60.0  # seconds to deliver what a failed engine pod's outbox holds
DELIVERED_FILE = "engine.delivered"  # in the build folder: the build's end was accepted; its volume is given back soon
ENGINE_LOG = "engine.log"  # in the build folder: the engine process's own log lines (not the build's log)
LAST_WORDS = 4096  # bytes of a failed engine's own log shown in the runner's log
DEFAULT_TIMEOUTS = {"pull_timeout": 30.0, "pending_timeout": 120.0, "node_lost_timeout": 60.0}


class EngineSupervisor:
    """One build's engine pod: launched (`task` given) or adopted (a folder an earlier run of this runner left)."""

    def __init__(
        self,
        folder: Path,
        client: ProtocolClient,
        *,
        runner_token: str,
        max_chunk: int,
        executor_options: dict[str, str],
        task: RunBuildTask | None = None,
        settings: dict[str, Any] | None = None,
        heartbeat_interval: float = 10.0,
        volume_reuse: str = "none",
    ) -> None:
        self.folder = folder
        self.client = client
        self.runner_token = runner_token
        self.max_chunk = max_chunk
        self.options = executor_options
        self.task = task
        self.settings = settings
        self.heartbeat_interval = heartbeat_interval
        self.build_id = task.build_id if task is not None else folder.name
        self.cancelling = False
        self.revoked: Revoked | None = None  # the agent reads it as a BuildJob's; the engine pod meets any refusal
        self.pod = ""
        self._node_lost = False  # the engine pod's node stopped answering: its deletion cannot wait for the kubelet
        self.volume_reuse = volume_reuse
        self.claimed: Any = None  # the build volume's claim (claims.Claimed), held until the build is over

    def cancel(self, reason: str) -> None:
        """Forwarded at once (the engine's own heartbeat would bring it up to a beat later)."""
        self.cancelling = True
        with contextlib.suppress(OSError):
            enginemail.post_cancel(self.folder, reason)

    def approve(self, approval: ApprovalDecision) -> None:
        with contextlib.suppress(OSError):
            enginemail.post_approval(self.folder, approval)

    async def run(self) -> None:
        """Until the engine pod ends (or this runner stops: cancelled, it leaves the pod running)."""
        from outpost.executors.kubernetes import claims
        from outpost.executors.kubernetes.engines import ENGINE_MARKER, EnginePods

        adopting = self.task is None
        try:
            pods = EnginePods(self.options)
        except ExecutorError as exc:
            await self._deliver_error(f"the engine pod could not be created: {exc}")
            return
        try:
            if adopting:
                marker = json.loads((self.folder / ENGINE_MARKER).read_text())
                self.pod = str(marker["pod"])
                if marker.get("claim"):
                    self.claimed = claims.Claimed(str(marker["claim"]), kept=marker.get("kept") is True)
                log.info("build %s: adopting its engine pod %s", self.build_id, self.pod)
            else:
                self.pod = await self._launch(pods, ENGINE_MARKER)
            # The runner renews the lease too, all the while it follows the pod: until the engine has announced the
            # build (a slow image pull must not give it back to the queue), and after, because an engine whose node
            # was lost stops renewing long before the node is judged lost (the node controller's 40 s, then
            # `node_lost_timeout`), and the lease (45 s) must not end the build as "runner lost" meanwhile.
            keeping = asyncio.create_task(self._keep_lease())
            try:
                why = await self._follow(pods, adopting=adopting)
            finally:
                keeping.cancel()
            if why is None:
                log.info("build %s: its engine pod %s delivered it", self.build_id, self.pod)
                # Its engine has ended (and removed its step pods): nothing writes to the volume or the folder (the
                # engine leaves the folder to us when a claim is mounted in it).
                await self._give_volume_back(pods)
                await _remove(self.folder)
                await pods.remove(self.build_id, self.pod)
                return
            log.warning("build %s: %s%s", self.build_id, why, self._last_words())
            # The engine's heartbeats stopped with it: the lease is ours to keep until the build is delivered.
            keeping = asyncio.create_task(self._keep_lease())
            try:
                await pods.remove(self.build_id, self.pod, node_lost=self._node_lost)
                await self._give_volume_back(pods)
                await self._deliver_error(why)
            finally:
                keeping.cancel()
        except ExecutorError as exc:
            if not self.pod:
                await self._give_volume_back(pods)
                await self._deliver_error(f"the engine pod could not be created: {exc}")
                return
            log.error("build %s: cannot follow its engine pod %s (%s); the next runner start adopts it",
                      self.build_id, self.pod, exc)  # fmt: skip
        except (OSError, ValueError, KeyError) as exc:
            await self._deliver_error(f"the engine pod's folder is damaged ({exc})")
        finally:
            await asyncio.shield(pods.close())

    async def _launch(self, pods: Any, marker: str) -> str:
        assert self.task is not None
        assert self.settings is not None
        from outpost.executors.kubernetes.engines import VOLUME_IN_FOLDER, engine_options, pod_name

        name = pod_name(self.build_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_lease(self.folder / "outbox", self.task, self.runner_token)
        said: dict[str, Any] = {"pod": name, "build_id": self.build_id}
        options = engine_options(self.options, pods.namespace, name)
        settings = dict(self.settings)
        if self.volume_reuse in ("pipeline", "branch"):
            branch = (self.task.branch or "") if self.volume_reuse == "branch" else None
            builds = self.folder.parent
            self.claimed = await pods.take_volume(
                self.task.account,
                self.task.pipeline,
                self.build_id,
                branch,
                ending=lambda holder: (builds / holder / DELIVERED_FILE).exists(),
            )
            said |= {"claim": self.claimed.name, "kept": self.claimed.kept}
            options["volume_claim"] = self.claimed.name
            settings["claim_volume"] = {"kept": self.claimed.kept}
            # Made here, the runner's: the mount point the claim is mounted on in the engine pod.
            (self.folder / VOLUME_IN_FOLDER).mkdir(exist_ok=True)
            log.info("build %s: build volume %s (%s)", self.build_id, self.claimed.name,
                     "the pipeline's" if self.claimed.kept else "a fresh one: the pipeline's is held")  # fmt: skip
        (self.folder / marker).write_text(json.dumps(said))
        settings["executor_options"] = options
        files = {"task.json": self.task.model_dump_json(), "settings.json": json.dumps(settings)}
        volume_claim = self.claimed.name if self.claimed is not None else None
        launched = str(await pods.launch(self.build_id, self.folder, files, volume_claim))
        log.info("build %s of %s: started in engine pod %s", self.build_id, self.task.pipeline, launched)
        return launched

    async def _give_volume_back(self, pods: Any) -> None:
        """The build is over (its engine pod gone): its kept volume released, its fresh one deleted."""
        if self.claimed is None:
            return
        try:
            await pods.give_back(self.claimed, self.build_id)
        except ExecutorError as exc:  # the janitor gives back what a build of this runner no longer has
            log.warning("build %s: its volume %s was not given back (%s)", self.build_id, self.claimed.name, exc)
            return
        log.info("build %s: build volume %s %s", self.build_id, self.claimed.name,
                 "released" if self.claimed.kept else "deleted")  # fmt: skip
        self.claimed = None

    async def _keep_lease(self) -> None:
        """Renews the build's lease (with the job token the runner kept) until cancelled or refused."""
        try:
            task = read_lease(self.folder / "outbox", self.runner_token)
        except (OSError, ValueError):
            return
        while True:
            try:
                await self.client.heartbeat(task)
            except Unreachable:
                pass
            except ProtocolError:  # lost or refused: the delivery says so in its own way
                return
            await asyncio.sleep(min(self.heartbeat_interval, task.lease_ttl / 3))

    async def _follow(self, pods: Any, *, adopting: bool) -> str | None:
        """None once the engine pod succeeded; else why the build cannot go on."""
        timeouts = {k: float(self.options.get(k, v)) for k, v in DEFAULT_TIMEOUTS.items()}
        image = self.options.get("engine_image", "?")
        name = self.pod
        loop = asyncio.get_running_loop()
        began, pull_failing_since, silent_since = loop.time(), None, None
        async with pods.watch(name) as watch:
            while True:
                reading = watch.reading
                if watch.gone and reading is None and adopting:
                    return f"the engine pod {name} was gone when the runner started again"
                if watch.gone or (reading is not None and reading.deleting):
                    return f"the engine pod {name} was deleted from outside"
                if reading is not None:
                    if reading.phase == "Succeeded" or (reading.exit_code == 0 and not reading.failure()):
                        return None
                    if reading.phase == "Failed" or reading.exit_code is not None:
                        return reading.failure("the engine's") or (
                            f"the engine pod {name} failed (exit code {reading.exit_code})"
                        )
                    silent_since = (silent_since or loop.time()) if reading.not_ready else None
                    if silent_since is not None and loop.time() - silent_since >= timeouts["node_lost_timeout"]:
                        self._node_lost = True
                        return (
                            f"the node {reading.node} running the engine pod {name} stopped answering for "
                            f"{timeouts['node_lost_timeout']:g}s (node lost)"
                        )
                    if reading.hopeless:
                        return f"the engine image {image}: {reading.waiting_message or reading.waiting_reason}"
                    if reading.pull_failing:
                        pull_failing_since = pull_failing_since or loop.time()
                        if loop.time() - pull_failing_since >= timeouts["pull_timeout"]:
                            return (
                                f"the engine image {image} could not be pulled for {timeouts['pull_timeout']:g}s "
                                f"({reading.waiting_reason}: {reading.waiting_message})"
                            )
                    if reading.phase == "Pending" and loop.time() - began >= timeouts["pending_timeout"]:
                        return f"the engine pod {name} did not start within {timeouts['pending_timeout']:g}s" + (
                            f": {reading.unschedulable}" if reading.unschedulable else ""
                        )
                await watch.changed(0.5)

    def _last_words(self) -> str:
        try:
            with open(self.folder / ENGINE_LOG, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - LAST_WORDS))
                tail = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "; the engine's last log lines:\n" + tail.rstrip() if tail.strip() else ""

    async def _copy_last_words(self, box: Outbox) -> None:
        """What the build's step pods printed after the engine's last read of their output files (`pods.note_copied`
        says how far it got), into the build's log: a step's last lines before an engine crash are often the ones
        that tell why. Masked as the engine masked them: the values are beside the record, sealed under the build's
        job token, which the reopened outbox has from its lease. The step pods' folders are in the build
        folder's `scratch`, on the work claim (executor.STEPS_IN_SCRATCH); their pods are gone by now."""
        from outpost.executors.kubernetes.executor import STEPS_IN_SCRATCH
        from outpost.executors.kubernetes.pods import COPIED_FILE, MASKED_FILE
        from outpost.masking import Masker

        for record in sorted((self.folder / "scratch" / STEPS_IN_SCRATCH).glob(f"*/{COPIED_FILE}")):
            step = record.parent
            try:
                noted = json.loads(record.read_text())
                stream, offset = str(noted["stream"]), int(noted["offset"])
                size = (step / "output").stat().st_size
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if size <= offset:
                continue
            try:
                masked = json.loads(sealing.unseal((step / MASKED_FILE).read_text(), box.task.job_token, step.name))
            except (OSError, ValueError) as exc:  # sealing.Unsealable is a ValueError
                log.warning("build %s: the last output of its step pod %s is not copied (%s)", self.build_id,
                            step.name, exc)  # fmt: skip
                await box.log(stream, f"\n[outpost] the last {size - offset} bytes this step printed are not shown: "
                                      "the values to mask in them cannot be read\n".encode())  # fmt: skip
                continue
            masker = Masker(str(value) for value in masked)
            with (step / "output").open("rb") as f:
                f.seek(offset)
                while chunk := f.read(1 << 16):
                    await box.log(stream, masker.feed(chunk))
            await box.log(stream, masker.flush())
            log.info("build %s: %d bytes its step pod %s printed after the engine's last read went to the log",
                     self.build_id, size - offset, step.name)  # fmt: skip

    async def _deliver_error(self, why: str) -> None:
        """What the outbox holds goes out, then the build ends `error` with `why` (unless the engine had finished
        it). The pod is gone by now: nothing else writes to the outbox."""
        outbox = self.folder / "outbox"
        try:
            (outbox / "logs").mkdir(parents=True, exist_ok=True)
            box = Outbox.reopen(outbox, self.client, self.max_chunk, runner_token=self.runner_token)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("build %s: %s; its outbox cannot be delivered (%s)", self.build_id, why, exc)
            await _remove(self.folder)
            return
        if not box.has_finish:
            await self._copy_last_words(box)
            await box.log(SYSTEM_STREAM, f"\n[outpost] {why}: the build stops here\n".encode())
            box.finish(BuildFinished(status="error", message=why, finished_at=time.time()))
        box.close()
        try:
            async with asyncio.timeout(DELIVERY_DEADLINE):  # not wait_for: on 3.11 it can swallow a cancel
                await box.pump()
            log.info("build %s: delivered what its engine pod left, ended error", self.build_id)
        except LeaseLost:
            with contextlib.suppress(OutpostError, TimeoutError):
                async with asyncio.timeout(DELIVERY_DEADLINE):
                    await box.deliver_late()
        except (OutpostError, TimeoutError) as exc:
            log.warning("build %s: what its engine pod left was not delivered (%s)", self.build_id, exc)
        await _remove(self.folder)


def adoptable_folders(builds: Path) -> list[Path]:
    from outpost.executors.kubernetes.engines import ENGINE_MARKER

    return sorted(f for f in builds.glob("*") if (f / ENGINE_MARKER).is_file())


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


def outbound_settings() -> dict[str, Any]:
    """How this runner reaches the control plane, for its engine pods to do the same: its proxy variables, and the
    CA bundle it trusts (SSL_CERT_FILE's contents: the file is the runner's, not the pod's)."""
    found: dict[str, Any] = {"proxy": {name: os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)}}
    if path := os.environ.get("SSL_CERT_FILE"):
        with contextlib.suppress(OSError):
            found["ca_bundle"] = Path(path).read_text()
    return found


def needed_secrets(task: RunBuildTask, runner_secrets: dict[str, str]) -> dict[str, str]:
    """The runner secrets the build's integrations name: the only ones its engine pod's Secret carries."""
    names = {
        access.runner_secret
        for accesses in (task.integrations, task.registries, task.clusters)
        for access in accesses.values()
        if access.runner_secret
    }
    return {name: value for name, value in runner_secrets.items() if name in names}


async def _remove(folder: Path) -> None:
    await asyncio.shield(asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True))

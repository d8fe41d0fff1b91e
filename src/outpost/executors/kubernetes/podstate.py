"""What a step pod's status says, read as one verdict: still coming, ended with an exit code, or failed for a reason
a user understands. Pure: the executor adds the clock (how long a pull or scheduling may fail before it gives up)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from lightkube.resources.core_v1 import Pod

from outpost.executors.kubernetes.objects import STEP_CONTAINER

# Waiting reasons that will not mend by waiting.
HOPELESS = {"InvalidImageName", "ErrImageNeverPull"}
PULLING_FAILED = {"ErrImagePull", "ImagePullBackOff"}


@dataclass(frozen=True)
class Reading:
    """One look at a pod. `exit_code` is set once the step's container has terminated."""

    phase: str
    deleting: bool = False
    exit_code: int | None = None
    terminated_reason: str = ""
    waiting_reason: str = ""
    waiting_message: str = ""
    unschedulable: str = ""  # the scheduler's message while it cannot place the pod
    pod_reason: str = ""  # Evicted, DeadlineExceeded, NodeLost, ...
    pod_message: str = ""
    node: str = ""
    not_ready: bool = False  # Ready=False while the step still runs: step pods have no probes, so the node is gone

    @property
    def pull_failing(self) -> bool:
        return self.waiting_reason in PULLING_FAILED

    @property
    def hopeless(self) -> bool:
        return self.waiting_reason in HOPELESS

    def failure(self, of: str = "the step's") -> str | None:
        """Why the step (or, with `of`, another pod: "the engine's") failed, when the pod itself says so (not the
        container's own exit code)."""
        if self.terminated_reason == "OOMKilled":
            return f"{of} container was killed for using more memory than its limit (OOMKilled)"
        if self.pod_reason == "DeadlineExceeded":
            return f"{of} pod passed its deadline and was stopped (DeadlineExceeded: {self.pod_message})"
        if self.pod_reason == "NodeLost":
            return f"the node {self.node} running {of} pod was lost: {self.pod_message}"
        if self.pod_reason == "Evicted":
            return f"{of} pod was evicted from its node: {self.pod_message}"
        if self.phase == "Failed" and self.exit_code is None:
            return f"{of} pod failed: {self.pod_reason or 'no reason given'} {self.pod_message}".rstrip()
        return None


def read(pod: Pod, container_name: str = STEP_CONTAINER) -> Reading:
    status, meta = pod.status, pod.metadata
    deleting = bool(meta is not None and meta.deletionTimestamp)
    if status is None:
        return Reading(phase="Pending", deleting=deleting)
    unschedulable, not_ready = "", False
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
            unschedulable = condition.message or "no node can take the pod"
        if condition.type == "Ready" and condition.status == "False":
            not_ready = True
    reading = Reading(
        phase=status.phase or "Pending",
        deleting=deleting,
        unschedulable=unschedulable,
        node=(pod.spec.nodeName if pod.spec else None) or "",
        pod_reason=status.reason or "",
        pod_message=status.message or "",
    )
    for container in status.containerStatuses or []:
        if container.name != container_name or container.state is None:
            continue
        state = container.state
        if state.running is not None:
            return replace(reading, not_ready=not_ready)
        if state.terminated is not None:
            return replace(
                reading, exit_code=state.terminated.exitCode, terminated_reason=state.terminated.reason or ""
            )
        if state.waiting is not None:
            return replace(
                reading, waiting_reason=state.waiting.reason or "", waiting_message=state.waiting.message or ""
            )
    return reading

"""What the runner hands an engine pod besides the task: its way out to the control plane (proxy, CA bundle) and,
through files in the build folder, cancels and approvals from its poll."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from outpost.runner import enginemail
from outpost.runner.enginepod import take_network_settings
from outpost.runner.supervisor import outbound_settings
from outpost.wire import ApprovalDecision

pytestmark = pytest.mark.timeout(30)


def test_the_engine_reaches_the_control_plane_through_the_runners_proxy_and_trusts_its_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\ncorp\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", ".corp")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    settings = outbound_settings()  # in the runner: the file's contents travel, not its path
    for name in ("HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE"):
        monkeypatch.delenv(name)
    folder = tmp_path / "pod" / "build"
    folder.mkdir(parents=True)

    take_network_settings(settings, folder)  # in the engine pod

    assert os.environ["HTTPS_PROXY"] == "http://proxy.corp:3128"
    assert os.environ["NO_PROXY"] == ".corp"
    assert Path(os.environ["SSL_CERT_FILE"]).read_text() == bundle.read_text()
    assert Path(os.environ["SSL_CERT_FILE"]).parent == folder


class Job:
    def __init__(self) -> None:
        self.cancelling = False
        self.reasons: list[str] = []
        self.approvals: list[ApprovalDecision] = []

    def cancel(self, reason: str) -> None:
        self.cancelling = True
        self.reasons.append(reason)

    def approve(self, approval: ApprovalDecision) -> None:
        self.approvals.append(approval)


async def test_a_cancel_and_approvals_posted_by_the_runner_reach_the_engine_once_each(tmp_path: Path) -> None:
    job = Job()
    delivering = asyncio.create_task(enginemail.deliver(tmp_path, job))
    try:
        enginemail.post_approval(tmp_path, ApprovalDecision(step="deploy", decision="approved", by="ana"))
        enginemail.post_cancel(tmp_path, "cancelled by ana")
        enginemail.post_approval(tmp_path, ApprovalDecision(step="prod", decision="denied", by="bo"))
        for _ in range(100):
            if job.reasons and len(job.approvals) == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(3 * enginemail.POLL)  # a few more looks: nothing is handed over twice
    finally:
        delivering.cancel()
    assert job.reasons == ["cancelled by ana"]
    assert [(a.step, a.decision, a.by) for a in job.approvals] == [
        ("deploy", "approved", "ana"),
        ("prod", "denied", "bo"),
    ]

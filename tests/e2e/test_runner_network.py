"""The runner's outgoing connection as companies run it: TLS with their own CA, through their proxy."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

from tests.e2e.processes import ControlPlane, Process, eventually, launch_runner
from tests.e2e.proxy import ConnectProxy, CuttableProxy
from tests.e2e.test_chaos import pipeline, run
from tests.e2e.tls import make_certificates


def tls_front(cp: ControlPlane, tmp_path: Path) -> tuple[CuttableProxy, Path]:
    """TLS terminated in front of the control plane with a certificate of a private CA."""
    ca, cert, key = make_certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return CuttableProxy(cp.port, tls=context), ca


def test_a_runner_trusts_a_private_ca_through_ssl_cert_file_and_uses_the_company_proxy(
    tmp_path: Path, control_plane: ControlPlane, processes: list[Process]
) -> None:
    front, ca = tls_front(control_plane, tmp_path)
    proxy = ConnectProxy()
    try:
        launch_runner(
            processes,
            tmp_path,
            front.url,
            control_plane.install_token(),
            SSL_CERT_FILE=str(ca),
            HTTPS_PROXY=proxy.url,
        )
        pipeline(control_plane, "tls", ["echo over tls"])
        build = control_plane.wait_for(run(control_plane, "tls"), {"success", "failure", "error"}, timeout=60)
        assert build["status"] == "success"
        assert proxy.tunnels, "the runner should have gone through the proxy"
        assert set(proxy.tunnels) == {f"127.0.0.1:{front.port}"}
    finally:
        proxy.stop()
        front.stop()


def test_no_proxy_lets_the_runner_go_direct(
    tmp_path: Path, control_plane: ControlPlane, processes: list[Process]
) -> None:
    front, ca = tls_front(control_plane, tmp_path)
    proxy = ConnectProxy()
    try:
        env = {"SSL_CERT_FILE": str(ca), "HTTPS_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"}
        launch_runner(processes, tmp_path, front.url, control_plane.install_token(), **env)
        pipeline(control_plane, "direct", ["echo direct"])
        build = control_plane.wait_for(run(control_plane, "direct"), {"success", "failure", "error"}, timeout=60)
        assert build["status"] == "success"
        assert proxy.tunnels == []
    finally:
        proxy.stop()
        front.stop()


def test_a_runner_refuses_a_control_plane_it_cannot_verify(
    tmp_path: Path, control_plane: ControlPlane, processes: list[Process]
) -> None:
    front, _ca = tls_front(control_plane, tmp_path)
    try:
        runner = launch_runner(processes, tmp_path, front.url, control_plane.install_token())
        # Registration retries while it cannot connect; the log says why, and nothing registered.
        eventually(lambda: "CERTIFICATE_VERIFY_FAILED" in runner.output(), timeout=30, what="a TLS refusal")
        runtimes = json.loads(control_plane.cli("runtime", "list", "--json").stdout)
        assert all(rt["runners"] == [] for rt in runtimes)
    finally:
        front.stop()

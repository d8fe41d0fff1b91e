"""What `outpost up` and `outpost server` run: the control plane, the embedded runner, the example.

Imported only by those commands, so that `outpost runner start` never loads server code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import click
import uvicorn

from outpost import logformat
from outpost.cli import config as cli_config
from outpost.cli.agent import preflight, runner_options
from outpost.cli.api import Api, ApiError
from outpost.cli.following import describe, follow
from outpost.errors import OutpostError
from outpost.runner.agent import Runner, RunnerIdentity, identify
from outpost.runner.client import ProtocolClient
from outpost.server.app import create_app
from outpost.server.bootstrap import Installation, bootstrap, local_install_token, runner_token_is_live
from outpost.server.services import Services
from outpost.settings import ServerSettings

log = logging.getLogger("outpost.up")
EXAMPLE = "hello"
UP_DRAIN = 10.0  # seconds running builds get when `outpost up` is stopped


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # we install our own handlers: one Ctrl-C stops the server and the runner together


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for such sockets, and
    # without it every response written as headers-then-body waits ~40 ms on the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OutpostError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _start_server(
    settings: ServerSettings, host: str, port: int, data_dir: Path, *, local_runtime: bool
) -> tuple[_Uvicorn, asyncio.Task[None], str, Services, Installation]:
    """Binds, bootstraps the installation, then listens: the admin token is on disk before anyone gets an answer."""
    sock = _bind(host, port)
    url = settings.public_url or _url(sock, host)
    installed: list[Installation] = []

    async def install(services: Services) -> None:
        installed.append(await bootstrap(services, data_dir, local_runtime=local_runtime, ui_admin=True))

    app = create_app(settings, public_url=url, on_start=install)
    server = _Uvicorn(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise OutpostError("the control plane did not start")
        await asyncio.sleep(0.01)
    services: Services = app.state.services
    return server, task, url, services, installed[0]


def _example_file() -> Path | None:
    candidates = [Path.cwd() / "examples" / EXAMPLE / "codefresh.yml"]
    with contextlib.suppress(ModuleNotFoundError, FileNotFoundError):
        candidates.append(Path(str(resources.files("outpost") / "examples" / EXAMPLE / "codefresh.yml")))
    candidates.append(Path(__file__).resolve().parents[3] / "examples" / EXAMPLE / "codefresh.yml")
    return next((c for c in candidates if c.is_file()), None)


def _run_example(api: Api, done: threading.Event) -> None:
    """In a thread: create the example pipeline if needed, run it and show its log live."""
    try:
        path = _example_file()
        if path is None:
            click.secho("the example pipeline was not found; skipping it", fg="yellow", err=True)
            return
        try:
            api.post("/pipelines", json={"name": EXAMPLE, "yaml": path.read_text(), "yaml_file": path.name})
        except ApiError as exc:
            if exc.status != 409:
                raise
        build = api.post(f"/pipelines/{EXAMPLE}/builds", json={"variables": {"NAME": "newcomer"}})
        click.echo(f"running the example pipeline {EXAMPLE!r} ({path}): build {build['id']}\n", err=True)
        final = follow(api, build["id"], sys.stdout.buffer, stop=done)
        click.echo(describe(final), err=True)
    except OutpostError as exc:
        click.secho(f"the example failed to run: {exc}", fg="red", err=True)


@dataclass
class RunnerChoice:
    """How `outpost up` runs its embedded runner."""

    executor: str = "local"
    concurrency: int = 1
    docker_host: str | None = None
    builder: str = "docker"


async def _start_runner(
    services: Services, installation: Installation, url: str, data_dir: Path, choice: RunnerChoice
) -> tuple[Runner, asyncio.Task[None], ProtocolClient]:
    runner_dir = data_dir / "runner"
    saved = RunnerIdentity.load(runner_dir)
    if saved is not None and saved.url == url and await runner_token_is_live(services, saved.token):
        token = saved.token
    else:
        (runner_dir / "runner.json").unlink(missing_ok=True)
        token = await local_install_token(services, installation)
    options = runner_options(
        url,
        runner_dir,
        name="local",
        executor=choice.executor,
        concurrency=choice.concurrency,
        docker_host=choice.docker_host,
        builder=choice.builder,
    )
    options.drain_timeout = UP_DRAIN
    await preflight(options)
    client = ProtocolClient(url)
    identity = await identify(client, options, token)
    runner = Runner(client, identity, options)
    # The runner's lines name it; the control plane's, in the same process, do not.
    about = logformat.context(runner_id=identity.runner_id or None, account=identity.account or None)
    return runner, asyncio.create_task(runner.run(), context=about), client


async def up(host: str, port: int, data_dir: Path, example: bool, choice: RunnerChoice) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    settings = ServerSettings.from_env(data_dir=data_dir)
    server, server_task, url, services, installation = await _start_server(
        settings, host, port, data_dir, local_runtime=True
    )
    cli_config.write(data_dir / cli_config.CONFIG_NAME, url, installation.admin_token)
    runner, runner_task, client = await _start_runner(services, installation, url, data_dir, choice)
    _announce(url, data_dir, installation)
    done = threading.Event()
    if example:
        api = Api(cli_config.CliConfig(url, installation.admin_token, "outpost up"))
        threading.Thread(target=_run_example, args=(api, done), daemon=True).start()
    await stop.wait()
    done.set()
    click.echo("\nstopping: runner first, then the control plane…", err=True)
    runner.stop()
    await runner_task
    await client.aclose()
    services.wakeups.close()
    server.should_exit = True
    await server_task
    click.echo("stopped.", err=True)


def _announce(url: str, data_dir: Path, installation: Installation) -> None:
    config_path = data_dir / cli_config.CONFIG_NAME
    lines = [
        f"Outpost is up: API {url}/api/v1 (docs at {url}/docs)",
        f"  web UI {url}/ — log in as admin, password {installation.password} (in {installation.password_file})",
        f"  account {installation.account}; admin API token in {installation.token_file}",
        f"  a local runner is connected; data and logs in {data_dir}/",
    ]
    if data_dir.resolve() != (Path.cwd() / ".outpost").resolve():
        lines.append(f"  CLI: export OUTPOST_CONFIG={config_path.resolve()}")
    else:
        lines.append("  CLI: `outpost build list`, `outpost run hello` … work from this folder")
    lines.append("  Press Ctrl-C to stop.")
    click.secho("\n".join(lines) + "\n", fg="green", err=True)


async def serve(host: str, port: int, data_dir: Path) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    settings = ServerSettings.from_env(data_dir=data_dir)
    server, server_task, url, services, installation = await _start_server(
        settings, host, port, data_dir, local_runtime=False
    )
    elsewhere = "the data dir of the replica that set up this installation"
    click.echo(f"Outpost control plane on {url}; admin API token in {installation.token_file or elsewhere}", err=True)
    click.echo(f"Web UI on {url}/ — user admin, password in {installation.password_file or elsewhere}", err=True)
    await stop.wait()
    services.wakeups.close()  # long polls answer now, so the server need not wait for them
    server.should_exit = True
    await server_task

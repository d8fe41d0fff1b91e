"""`outpost runner start`: the agent that runs inside the private network. Imports no server code."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from outpost import logformat
from outpost.cli import main
from outpost.cli.admin import runners_drain, runners_undrain
from outpost.errors import OutpostError
from outpost.executors import EXECUTORS, executor_class
from outpost.runner.agent import Runner, RunnerOptions, identify
from outpost.runner.client import ProtocolClient
from outpost.runner.job import MAX_FREEZE
from outpost.runner.secrets import ENV_VARIABLE as SECRETS_ENV
from outpost.runner.secrets import load_runner_secrets
from outpost.runner.volumes import POLICIES


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Runs the command's event loop: uvloop where it is installed (faster I/O), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def private_folder(path: Path) -> None:
    """Creates a data folder readable by its owner only: it holds the database, keys and tokens."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)


def configure_logging(file: Path | None, log_format: str = "text", level: int = logging.INFO) -> None:
    """Logs to a file when given (the terminal shows build logs then), else to stderr; as text or JSON lines."""
    logformat.configure(file, log_format=log_format, level=level)


def log_format_option(command: Callable[..., None]) -> Callable[..., None]:
    """--log-format text|json (OUTPOST_LOG_FORMAT): how this process writes its own log lines."""
    return click.option(
        "--log-format",
        type=click.Choice(logformat.FORMATS),
        default="text",
        show_default=True,
        envvar=logformat.ENV_VARIABLE,
        help="json: one object per line with time, level, logger, message, and build_id, runner_id, account "
        "where known.",
    )(command)


def default_runner_dir() -> Path:
    explicit = os.environ.get("OUTPOST_RUNNER_DIR")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "outpost-runner"


def runner_options(
    url: str,
    data_dir: Path,
    *,
    name: str,
    executor: str,
    concurrency: int,
    docker_host: str | None = None,
    builder: str = "docker",
    volume_reuse: str = "pipeline",
) -> RunnerOptions:
    options = RunnerOptions(url=url, data_dir=data_dir, name=name, executor=executor, concurrency=concurrency)
    options.volume_reuse = volume_reuse
    if executor == "docker":
        options.executor_options = {"builder": builder, "buildah_root": str(data_dir / "buildah")}
        if docker_host:
            options.executor_options["docker_host"] = docker_host
    return options


async def preflight(options: RunnerOptions) -> None:
    """The executor's own check before any build is taken: a missing Docker engine is said at once."""
    said = await executor_class(options.executor).preflight(options.executor_options)
    if said:
        logging.getLogger("outpost.runner").info("executor %s: %s", options.executor, said)


def container_options(command: Callable[..., None]) -> Callable[..., None]:
    """--docker-host and --builder, for the Docker executor."""
    command = click.option(
        "--builder",
        default="docker",
        show_default=True,
        envvar="OUTPOST_BUILDER",
        type=click.Choice(["docker", "buildah"]),
        help="What builds images in `build` steps (Docker executor): the engine, or daemonless buildah.",
    )(command)
    return click.option(
        "--docker-host",
        envvar="DOCKER_HOST",
        default=None,
        help="The Docker engine of the Docker executor (default: unix:///var/run/docker.sock).",
    )(command)


def kubernetes_options(command: Callable[..., None]) -> Callable[..., None]:
    """--namespace, --kubeconfig and where the runner's folder is in the cluster, for the Kubernetes executor."""
    for name, envvar, help_text in reversed(
        [
            (
                "--namespace",
                "OUTPOST_NAMESPACE",
                "The namespace of step pods (default: the kubeconfig's, else outpost).",
            ),
            (
                "--kubeconfig",
                "KUBECONFIG",
                "A kubeconfig file (default: in-cluster, then $KUBECONFIG, ~/.kube/config).",
            ),
            ("--work-claim", "OUTPOST_WORK_CLAIM", "The PersistentVolumeClaim that holds the runner's data folder."),
            ("--work-claim-path", "OUTPOST_WORK_CLAIM_PATH", "Where that claim is mounted here (default: --data-dir)."),
            (
                "--node-name",
                "OUTPOST_NODE_NAME",
                "Pin step pods to this node (the runner pod's, for a ReadWriteOnce claim).",
            ),
            (
                "--step-pods",
                "OUTPOST_STEP_PODS",
                "Step pods' nodeSelector, tolerations, affinity and resources, as JSON (the chart's stepPods).",
            ),
            ("--builder-image", "OUTPOST_BUILDER_IMAGE", "An image with buildah: build and push steps run in it."),
            (
                "--scratch-registry",
                "OUTPOST_SCRATCH_REGISTRY",
                "HOST[:PORT]/PATH the nodes pull built images from (a registry integration's domain).",
            ),
            (
                "--builder-seccomp",
                "OUTPOST_BUILDER_SECCOMP",
                "Builder pods' seccomp profile: Unconfined (default) or Localhost:PROFILE (allowing user namespaces).",
            ),
            (
                "--engine-image",
                "OUTPOST_ENGINE_IMAGE",
                "Run each build's engine in an engine pod of this image (Outpost in it): builds survive a runner "
                "restart.",
            ),
            (
                "--engine-pods",
                "OUTPOST_ENGINE_PODS",
                "Engine pods' nodeSelector, tolerations, affinity and resources, as JSON (the chart's engine values).",
            ),
            (
                "--engine-service-account",
                "OUTPOST_ENGINE_SERVICE_ACCOUNT",
                "The engine pods' service account (default: outpost-engine).",
            ),
        ]
    ):
        command = click.option(name, envvar=envvar, default=None, help=help_text)(command)
    command = click.option(
        "--volumes-per-pipeline",
        envvar="OUTPOST_VOLUMES_PER_PIPELINE",
        default=5,
        show_default=True,
        type=click.IntRange(1),
        help="With engine pods: at most this many kept volume claims of one pipeline (its branches' with "
        "--volume-reuse branch); the janitor removes the least recently used beyond it.",
    )(command)
    for name, envvar, volume_default, help_text in (
        ("--volume-retention", "OUTPOST_VOLUME_RETENTION", "7d",
         "a kept volume claim no build used for this long is removed (e.g. 7d, 12h, 30m)."),
        ("--volume-storage-class", "OUTPOST_VOLUME_STORAGE_CLASS", None,
         "the storage class of build volume claims (default: the cluster's default)."),
        ("--volume-size", "OUTPOST_VOLUME_SIZE", "10Gi", "the size of each build volume claim."),
    ):  # fmt: skip
        command = click.option(
            name,
            envvar=envvar,
            default=volume_default,
            show_default=volume_default is not None,
            help=f"With engine pods: {help_text}",
        )(command)
    for name, envvar, default, what in (
        ("--pull-timeout", "OUTPOST_PULL_TIMEOUT", 30, "an image that cannot be pulled fails its step or build"),
        ("--pending-timeout", "OUTPOST_PENDING_TIMEOUT", 120, "a pod that does not start fails its step or build"),
        ("--node-lost-timeout", "OUTPOST_NODE_LOST_TIMEOUT", 60, "a pod whose node stopped answering is given up"),
    ):
        command = click.option(
            name,
            envvar=envvar,
            default=default,
            show_default=True,
            type=click.FloatRange(0, min_open=True),
            help=f"Seconds after which {what} (step, builder, service and engine pods).",
        )(command)
    command = click.option(
        "--dind-image",
        envvar="OUTPOST_DIND_IMAGE",
        default=None,
        help="An image with dockerd: the privileged pod of --docker-in-docker.",
    )(command)
    return click.option(
        "--docker-in-docker",
        envvar="OUTPOST_DOCKER_IN_DOCKER",
        is_flag=True,
        default=False,
        help="Opt in to one privileged dockerd pod per build (compatibility): build/push through it, DOCKER_HOST "
        "for steps. Needs --dind-image, --node-name and a namespace whose Pod Security level is privileged.",
    )(command)


def kubernetes_settings(
    data_dir: Path,
    *,
    namespace: str | None,
    kubeconfig: str | None,
    work_claim: str | None,
    work_claim_path: str | None,
    node_name: str | None,
    step_pods: str | None = None,
    builder_image: str | None = None,
    scratch_registry: str | None = None,
    builder_seccomp: str | None = None,
    engine_image: str | None = None,
    engine_pods: str | None = None,
    engine_service_account: str | None = None,
    docker_in_docker: bool = False,
    dind_image: str | None = None,
    pull_timeout: float | None = None,
    pending_timeout: float | None = None,
    node_lost_timeout: float | None = None,
    volume_reuse: str = "pipeline",
    volume_size: str | None = None,
    volume_storage_class: str | None = None,
    volume_retention: str | None = None,
    volumes_per_pipeline: int | None = None,
) -> dict[str, str]:
    given = {
        "namespace": namespace,
        "kubeconfig": kubeconfig,
        "work_claim": work_claim,
        "work_root": work_claim_path or str(data_dir),
        "node": node_name,
        "step_pods": step_pods,
        "builder_image": builder_image,
        "scratch_registry": scratch_registry,
        "builder_seccomp": builder_seccomp,
        "engine_image": engine_image,
        "engine_pods": engine_pods,
        "engine_service_account": engine_service_account,
        "docker_in_docker": "true" if docker_in_docker else None,
        "dind_image": dind_image,
        "runner_folder": str(data_dir),  # marks its pods: its next start removes what a crash left
        "pull_timeout": f"{pull_timeout:g}" if pull_timeout else None,
        "pending_timeout": f"{pending_timeout:g}" if pending_timeout else None,
        "node_lost_timeout": f"{node_lost_timeout:g}" if node_lost_timeout else None,
        "volume_reuse": volume_reuse,
        "volume_size": volume_size,
        "volume_storage_class": volume_storage_class,
        "volume_retention": _retention(volume_retention) if volume_retention else None,
        "volumes_per_pipeline": str(volumes_per_pipeline) if volumes_per_pipeline else None,
    }
    return {key: value for key, value in given.items() if value}


def _retention(text: str) -> str:
    """--volume-retention as seconds; a clear usage error for what is not a duration."""
    try:
        from outpost.executors.kubernetes.janitor import parse_retention
    except ImportError:  # no lightkube: the executor's own check says so
        return text
    try:
        return f"{parse_retention(text):g}"
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--volume-retention") from None


async def _run(options: RunnerOptions, token: str, metrics_listen: str | None = None) -> None:
    await preflight(options)
    observed = None
    if metrics_listen:  # only then: without it the runner opens no listening socket (DESIGN, promise 1)
        from outpost.runner.metrics import RunnerMetrics, parse_listen

        observed, listen = RunnerMetrics(), parse_listen(metrics_listen)
    async with ProtocolClient(options.url, observer=observed) as client:
        identity = await identify(client, options, token)
        logformat.RUNNER_ID.set(identity.runner_id or None)  # on every line of this process from here on
        logformat.ACCOUNT.set(identity.account or None)
        logging.getLogger("outpost.runner").info(
            "runner %s registered in runtime %s of account %s; polling %s",
            identity.runner_id or "(by token)",
            identity.runtime or "?",
            identity.account or "?",
            options.url,
        )
        runner = Runner(client, identity, options)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, runner.stop)
        loop.add_signal_handler(signal.SIGINT, runner.stop)
        if observed is None:
            await runner.run()
            return
        observed.runner = runner
        server = await observed.serve(*listen)
        try:
            await runner.run()
        finally:
            server.close()


@main.group("runner")
def runner_group() -> None:
    """The runner: install it inside your network; it only connects out."""


# Draining is asked of the control plane (`outpost runners ...`); here too, where a person looks for it.
runner_group.add_command(runners_drain, "drain")
runner_group.add_command(runners_undrain, "undrain")


@runner_group.command("start")
@click.option("--url", required=True, envvar="OUTPOST_URL", help="The control plane's address.")
@click.option(
    "--token",
    envvar="OUTPOST_RUNNER_TOKEN",
    default="",
    help="One-time install token from `outpost runtime create` (or a runner token).",
)
@click.option("--name", default="", help="Name shown in the UI (default: the host name).")
@click.option("--executor", default="local", show_default=True, type=click.Choice(sorted(EXECUTORS)))
@container_options
@kubernetes_options
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--volume-reuse",
    default="pipeline",
    show_default=True,
    type=click.Choice(POLICIES),
    help="Keep a pipeline's build volume for its next build (as /codefresh/volume is cached), one per pipeline "
    "and branch, or start empty.",
)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Runner state and build folders.")
@click.option("--drain-timeout", default=600.0, show_default=True, help="Seconds builds get after SIGTERM.")
@click.option(
    "--max-freeze",
    default=MAX_FREEZE,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds a build's steps stay frozen past its lease deadline, waiting for the control plane to answer, "
    "before the build is stopped (0: stopped at the deadline).",
)
@click.option(
    "--secrets-file",
    envvar=SECRETS_ENV,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Secrets kept only on this runner (JSON or NAME=VALUE lines, mode 0600), used by integrations by name.",
)
@click.option(
    "--metrics-listen",
    envvar="OUTPOST_METRICS_LISTEN",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (a bare PORT: on 127.0.0.1). Off by default: "
    "the runner opens no port unless asked.",
)
@log_format_option
def runner_start(
    url: str,
    token: str,
    name: str,
    executor: str,
    builder: str,
    docker_host: str | None,
    namespace: str | None,
    kubeconfig: str | None,
    work_claim: str | None,
    work_claim_path: str | None,
    node_name: str | None,
    step_pods: str | None,
    builder_image: str | None,
    scratch_registry: str | None,
    builder_seccomp: str | None,
    engine_image: str | None,
    engine_pods: str | None,
    engine_service_account: str | None,
    docker_in_docker: bool,
    dind_image: str | None,
    pull_timeout: float,
    pending_timeout: float,
    node_lost_timeout: float,
    volume_size: str,
    volume_storage_class: str | None,
    volume_retention: str,
    volumes_per_pipeline: int,
    concurrency: int,
    volume_reuse: str,
    data_dir: Path | None,
    drain_timeout: float,
    max_freeze: float,
    secrets_file: Path | None,
    metrics_listen: str | None,
    log_format: str,
) -> None:
    """Register (first time) and run builds until SIGTERM."""
    configure_logging(None, log_format)
    options = runner_options(
        url,
        data_dir or default_runner_dir(),
        name=name,
        executor=executor,
        concurrency=concurrency,
        docker_host=docker_host,
        builder=builder,
        volume_reuse=volume_reuse,
    )
    options.drain_timeout = drain_timeout
    options.max_freeze = max_freeze
    if executor == "kubernetes":
        options.executor_options = kubernetes_settings(
            options.data_dir,
            namespace=namespace,
            kubeconfig=kubeconfig,
            work_claim=work_claim,
            work_claim_path=work_claim_path,
            node_name=node_name,
            step_pods=step_pods,
            builder_image=builder_image,
            scratch_registry=scratch_registry,
            builder_seccomp=builder_seccomp,
            engine_image=engine_image,
            engine_pods=engine_pods,
            engine_service_account=engine_service_account,
            docker_in_docker=docker_in_docker,
            dind_image=dind_image,
            pull_timeout=pull_timeout,
            pending_timeout=pending_timeout,
            node_lost_timeout=node_lost_timeout,
            volume_reuse=volume_reuse,
            volume_size=volume_size,
            volume_storage_class=volume_storage_class,
            volume_retention=volume_retention,
            volumes_per_pipeline=volumes_per_pipeline,
        )
    elif engine_image:
        raise click.UsageError("--engine-image is for --executor kubernetes")
    if secrets_file is not None:
        try:
            options.runner_secrets = load_runner_secrets(secrets_file)
        except OutpostError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        logging.getLogger("outpost.runner").info(
            "%d runner secret(s) read from %s", len(options.runner_secrets), secrets_file
        )
    private_folder(options.data_dir)
    if not token and not (options.data_dir / "runner.json").exists():
        raise click.UsageError("--token is required the first time (from `outpost runtime create NAME`)")
    try:
        run_async(_run(options, token, metrics_listen))
    except OutpostError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)

"""`outpost up` (control plane + local runner + example) and `outpost server` (control plane only)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outpost.cli import main
from outpost.cli.agent import configure_logging, container_options, log_format_option, private_folder, run_async
from outpost.errors import OutpostError
from outpost.executors import EXECUTORS


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--data-dir", default=".outpost", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-example", is_flag=True, help="Do not create and run the example pipeline.")
@click.option(
    "--executor",
    default="local",
    show_default=True,
    type=click.Choice(sorted(EXECUTORS)),
    help="Executor of the embedded runner: steps as processes on this host (local) or in containers (docker).",
)
@container_options
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64))
@log_format_option
def up(
    host: str,
    port: int,
    data_dir: Path,
    no_example: bool,
    executor: str,
    builder: str,
    docker_host: str | None,
    concurrency: int,
    log_format: str,
) -> None:
    """Control plane and a local runner on SQLite, with the example pipeline running."""
    private_folder(data_dir)
    configure_logging(data_dir / "outpost.log", log_format)
    try:
        from outpost.cli import stack

        runner = stack.RunnerChoice(executor, concurrency, docker_host, builder)
        run_async(stack.up(host, port, data_dir.resolve(), not no_example, runner))
    except OutpostError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--data-dir", default=".outpost", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@log_format_option
def server(host: str, port: int, data_dir: Path, log_format: str) -> None:
    """The control plane alone (runners connect to it from their own networks)."""
    private_folder(data_dir)
    configure_logging(None, log_format)
    try:
        from outpost.cli import stack

        run_async(stack.serve(host, port, data_dir.resolve()))
    except OutpostError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)

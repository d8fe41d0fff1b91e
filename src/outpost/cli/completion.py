"""`outpost completion bash|zsh|fish`: the shell completion script, from click's own completion."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from outpost.cli import emit_json, main

SHELLS = ("bash", "zsh", "fish")
VARIABLE = "_OUTPOST_COMPLETE"  # click's convention for a program named `outpost`


@main.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.option("--json", "as_json", is_flag=True, help="Print {shell, script} instead of the bare script.")
def completion(shell: str, as_json: bool) -> None:
    """Print the completion script for SHELL, to load from the shell's start-up file:

    \b
      bash (~/.bashrc):  eval "$(outpost completion bash)"
      zsh (~/.zshrc):    eval "$(outpost completion zsh)"
      fish:              outpost completion fish | source
    """
    kind = get_completion_class(shell)
    assert kind is not None  # every name in SHELLS has one
    script = kind(main, {}, "outpost", VARIABLE).source()
    emit_json({"shell": shell, "script": script}) if as_json else click.echo(script)

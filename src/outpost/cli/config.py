"""Where the CLI finds the control plane and its token: flags, then OUTPOST_URL/OUTPOST_TOKEN, then a file.

The file is $OUTPOST_CONFIG, else the nearest .outpost/cli.json from the current folder upwards
(written by `outpost up`), else ~/.config/outpost/cli.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import OutpostError

CONFIG_NAME = "cli.json"


@dataclass(frozen=True)
class CliConfig:
    url: str
    token: str
    source: str


def config_file() -> Path | None:
    explicit = os.environ.get("OUTPOST_CONFIG")
    if explicit:
        return Path(explicit)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".outpost" / CONFIG_NAME
        if candidate.is_file():
            return candidate
    home = Path.home() / ".config" / "outpost" / CONFIG_NAME
    return home if home.is_file() else None


def resolve(url: str | None = None, token: str | None = None) -> CliConfig:
    url = url or os.environ.get("OUTPOST_URL") or None
    token = token or os.environ.get("OUTPOST_TOKEN") or None
    source = "flags and environment"
    if not (url and token):
        path = config_file()
        if path is not None:
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise OutpostError(f"cannot read {path}: {exc}") from None
            url = url or saved.get("url")
            token = token or saved.get("token")
            source = str(path)
    if not url or not token:
        raise OutpostError(
            "no control plane configured: run `outpost up` in this folder, or set OUTPOST_URL and OUTPOST_TOKEN"
        )
    return CliConfig(url.rstrip("/"), token, source)


def write(path: Path, url: str, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f, indent=2)
        f.write("\n")

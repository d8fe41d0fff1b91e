"""Runner-side secrets: credentials kept only on the runner, in a file given by `--secrets-file` (or
OUTPOST_RUNNER_SECRETS_FILE). An integration refers to one by name, so the control plane never holds it.

The file is a JSON object of names to strings, or `NAME=VALUE` lines (`#` comments and blank lines allowed,
no quoting: the value is everything after the first `=`). A file other users can read is refused.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from outpost.errors import OutpostError

ENV_VARIABLE = "OUTPOST_RUNNER_SECRETS_FILE"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,254}$")


def load_runner_secrets(path: Path) -> dict[str, str]:
    """The secrets in the file; raises OutpostError saying what is wrong (never with a value in it)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise OutpostError(f"cannot read the runner secrets file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise OutpostError(f"the runner secrets file {path} is not a regular file")
    if mode & stat.S_IROTH:
        raise OutpostError(
            f"the runner secrets file {path} is readable by every user (mode {stat.S_IMODE(mode):04o}): "
            f"run `chmod 600 {path}` first"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OutpostError(f"cannot read the runner secrets file {path}: {exc}") from None
    secrets = _parse_json(path, text) if text.lstrip().startswith("{") else _parse_lines(path, text)
    for name in secrets:
        if not _NAME.match(name):
            raise OutpostError(f"{path}: secret name {name!r} must be letters, digits, '_', '.' or '-'")
    return secrets


def _parse_json(path: Path, text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise OutpostError(f"{path} is not valid JSON: line {getattr(exc, 'lineno', '?')}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise OutpostError(f"{path}: the JSON must be an object of names to strings")
    return {str(k): v for k, v in data.items()}


def _parse_lines(path: Path, text: str) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals:
            raise OutpostError(f"{path}:{number}: expected NAME=VALUE")
        secrets[name.strip()] = value.rstrip("\r\n")
    return secrets

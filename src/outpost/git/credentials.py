"""How credentials reach git: only through a GIT_ASKPASS script that reads them from git's environment — never
argv (readable by anyone in /proc), never `.git/config`, never a message (masked there). Also the rest of the
environment every git command here runs in: no prompt, English messages, batch ssh, proxies only when asked."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from outpost.masking import Masker

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$OUTPOST_GIT_USERNAME" ;;
  *) printf '%s\\n' "$OUTPOST_GIT_PASSWORD" ;;
esac
"""


def environment(
    base: Mapping[str, str], private: Path, username: str | None, password: str | None, *, use_proxy: bool
) -> dict[str, str]:
    """git's environment from `base` (PATH, HOME, proxies...); the askpass script is written into `private`, a
    folder only this process can read, when there is a credential."""
    env = {k: v for k, v in base.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    if not use_proxy:
        for name in PROXY_VARIABLES:
            env.pop(name, None)
    env["GIT_TERMINAL_PROMPT"] = "0"  # a wrong password fails at once instead of waiting for a terminal
    env["LC_ALL"] = "C"  # git's messages in English: failures are recognised by their text
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    env["GIT_ASKPASS"] = ""  # empty: no helper asked, no prompt
    if username or password:
        askpass = private / "askpass.sh"
        askpass.write_text(ASKPASS)
        askpass.chmod(0o700)
        env.update(GIT_ASKPASS=str(askpass), OUTPOST_GIT_USERNAME=username or "", OUTPOST_GIT_PASSWORD=password or "")
    return env


def secret_forms(username: str | None, password: str | None) -> list[str]:
    """The values to mask in git's output: the credential as given and URL-encoded (as git echoes a URL)."""
    values = [s for s in (username, password) if s]
    return values + [urllib.parse.quote(s, safe="") for s in values]


def mask(text: str, secrets: list[str]) -> str:
    masker = Masker(secrets)
    return (masker.feed(text.encode()) + masker.flush()).decode(errors="replace")

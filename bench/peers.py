"""The peers' own virtualenvs under bench/.peers/, installed with pip on first use and reused after."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from processes import child_env

PEERS_DIR = Path(__file__).resolve().with_name(".peers")
INSTALL_TIMEOUT = 900.0


class Skipped(Exception):
    """A peer could not be installed or started; the report says which and why."""


def ensure_venv(name: str, requirements: list[str]) -> Path:
    """The venv's bin folder, with `requirements` installed (once: a marker file remembers them)."""
    venv = PEERS_DIR / name
    marker = venv / "bench-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if marker.is_file() and marker.read_text() == wanted and (venv / "bin" / "python").exists():
        return venv / "bin"
    print(f"installing {name} into {venv} (pip install {' '.join(requirements)}) …", file=sys.stderr, flush=True)
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"creating the {name} venv")
    _run([str(venv / "bin" / "pip"), "install", "-q", *requirements], f"pip install {' '.join(requirements)}")
    marker.write_text(wanted)
    return venv / "bin"


def installed_version(bin_dir: Path, distribution: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    out = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or "?"


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Skipped(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if not ln.startswith("WARNING")]
        raise Skipped(f"{what} failed (exit {done.returncode}): {_clip(' / '.join(lines[-2:]))}")


def run_tool(argv: list[str], what: str, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """A peer's command-line tool, run to completion (bounded); its output, or Skipped."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=child_env(env), cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Skipped(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise Skipped(f"{what} failed (exit {done.returncode}): {_clip((done.stderr or done.stdout).strip())}")
    return done.stdout


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit // 2] + " … " + text[-limit // 2 :]

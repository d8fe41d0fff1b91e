"""The `cf_export` command a step finds on its PATH, written into each build's private bin folder."""

from __future__ import annotations

from pathlib import Path

from outpost.pipelines.variables import EXPORT_FILE

MASK_FILE = "env_vars_to_mask"  # names whose values later logs must mask (cf_export --mask)

# Appends KEY=VALUE lines to the export file; a bare NAME exports the current value of $NAME.
SCRIPT = f"""#!/bin/sh
# cf_export KEY=VALUE [NAME ...] [--mask]: hand variables to the steps that follow.
out="${{CF_VOLUME_PATH:?CF_VOLUME_PATH is not set}}/{EXPORT_FILE}"
masks="$CF_VOLUME_PATH/{MASK_FILE}"
mask=
for arg in "$@"; do [ "$arg" = --mask ] && mask=1; done
for arg in "$@"; do
  case "$arg" in
    --mask) continue ;;
    [A-Za-z_]*=*) name="${{arg%%=*}}"; printf '%s\\n' "$arg" >> "$out" ;;
    *[!A-Za-z0-9_]*|[0-9]*|'') echo "cf_export: not a variable name: $arg" >&2; exit 2 ;;
    *) name="$arg"; eval "value=\\${{$arg-}}"; printf '%s=%s\\n' "$arg" "$value" >> "$out" ;;
  esac
  [ -n "$mask" ] && printf '%s\\n' "$name" >> "$masks"
  echo "Exporting $name"
done
"""


def install(bin_dir: Path, *, fresh: bool = False) -> Path:
    """Writes `cf_export` into `bin_dir`, unless it is there (a spare build folder holds it: runner/spares.py).
    `fresh`: written even so (a recycled folder's, which the last build's steps could have changed)."""
    path = bin_dir / "cf_export"
    try:
        there = path.stat()
    except FileNotFoundError:
        there = None
    if fresh or there is None or there.st_size != len(SCRIPT.encode()) or not there.st_mode & 0o100:
        bin_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(SCRIPT)
        path.chmod(0o755)
    return path

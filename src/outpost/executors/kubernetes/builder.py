"""What a builder pod runs for `build` and `push` steps: buildah, daemonless, in a pod without privileges (see
`objects.builder_security`), with its image storage on the build volume so that the push step's pod finds what the
build step's pod made. Pure: scripts and configuration text, no I/O.

Nodes cannot see an image that lives only in a builder pod's storage, so a build step also pushes its image to a
scratch repository (the runner's `--scratch-registry`), and `${{build_step}}` names that reference: later steps'
pods pull it like any image, with a pull secret made from the registry integration of that domain.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Sequence

from outpost.containers import images
from outpost.containers.auth import RegistryAuth
from outpost.errors import ExecutorError
from outpost.executors.base import ImageBuildJob

# In the build volume, beside the step pods' folders: buildah's image storage (vfs), shared by the build's builder
# pods and removed with the build (a kept volume would otherwise grow by every image of every build).
STORAGE = ".outpost-steps/buildah"
AUTH_ENV = "OUTPOST_REGISTRY_AUTH"  # the auth file's text, from the pod's Secret
CONF_ENV = "OUTPOST_REGISTRIES_CONF"

# Every buildah command: its own storage and configuration, never the image's or the node's. `$d` is the pod's
# folder on the build volume (where its script is), `$w` a private folder in the pod.
_PRELUDE = f"""set -e
d=$(dirname "$0")
w=$(mktemp -d)
umask 077
printf '%s' "${AUTH_ENV}" >"$w/auth.json"
printf '%s' "${CONF_ENV}" >"$w/registries.conf"
export REGISTRY_AUTH_FILE="$w/auth.json" CONTAINERS_REGISTRIES_CONF="$w/registries.conf" HOME="$w" TMPDIR="$w"
export BUILDAH_ISOLATION=chroot
umask 022
"""


def scratch_reference(scratch: str, tag: str, build_id: str, serial: int) -> str:
    """Where a build step's image goes for the nodes to pull it: <scratch>/<image path>:<build>-<n>."""
    if not scratch:
        raise ExecutorError(
            "build steps on Kubernetes need --scratch-registry (HOST[:PORT]/PATH, a repository prefix the cluster's "
            "nodes can pull from): the image a build step makes must reach the nodes that run the next steps"
        )
    try:
        path = images.ImageRef.parse(tag).path.lower()
    except ValueError as exc:
        raise ExecutorError(f"cannot name the scratch image of {tag!r}: {exc}") from None
    short = "".join(c for c in build_id.lower() if c.isalnum())[:16] or "build"
    return f"{scratch.rstrip('/')}/{path}:{short}-{serial}"


def build_script(
    job: ImageBuildJob, *, context: str, dockerfile: str, volume: str, scratch: str, insecure: bool
) -> str:
    """Builds `context` (paths as the pod sees them) and pushes the result to `scratch`; writes the image id to
    `$d/iid` and the scratch digest to `$d/digest` (`$d`: the pod's folder on the build volume)."""
    args = ["build", "--isolation", "chroot", "--network", "host", "--force-rm", "--iidfile", "$d/iid"]
    args += ["-f", dockerfile, "-t", scratch]
    args += [x for key, value in job.build_args.items() for x in ("--build-arg", f"{key}={value}")]
    args += ["--target", job.target] if job.target else []
    args += ["--no-cache"] if job.no_cache else ["--layers"]
    push = ["push", "--digestfile", "$d/digest", *_tls(insecure), scratch, f"docker://{scratch}"]
    return _PRELUDE + f"{_buildah(volume, [*args, context])}\n{_buildah(volume, push)}\n"


def push_script(image: str, targets: Sequence[str], *, volume: str, insecure: bool) -> str:
    """Pushes a local image (a build step's) to every target; the last digest is written to `$d/digest`."""
    pushes = [["push", "--digestfile", "$d/digest", *_tls(insecure), image, f"docker://{t}"] for t in targets]
    return _PRELUDE + "".join(_buildah(volume, args) + "\n" for args in pushes)


def _buildah(volume: str, args: Sequence[str]) -> str:
    storage = f"{volume}/{STORAGE}"
    fixed = ["buildah", "--root", f"{storage}/storage", "--runroot", "$w/run", "--storage-driver", "vfs"]
    # `$d` and `$w` are the pod's folders: left for the shell to expand, everything else quoted.
    return " ".join(f'"{a}"' if a.startswith(("$d/", "$w/")) else shlex.quote(a) for a in [*fixed, *args])


def _tls(insecure: bool) -> list[str]:
    return ["--tls-verify=false"] if insecure else []


def auth_file(auths: Sequence[RegistryAuth]) -> str:
    """The containers-auth.json text for these registries (the ones with a user)."""
    entries = {
        auth.domain: {"auth": base64.b64encode(f"{auth.username}:{auth.password or ''}".encode()).decode()}
        for auth in auths
        if auth.username
    }
    return json.dumps({"auths": entries})


def registries_conf(auths: Sequence[RegistryAuth]) -> str:
    """No search registries; the insecure ones over plain HTTP."""
    text = 'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n'
    for auth in auths:
        if auth.insecure:
            text += f"\n[[registry]]\nlocation = {json.dumps(auth.domain)}\ninsecure = true\n"
    return text


def for_domain(auths: Sequence[RegistryAuth], reference: str) -> RegistryAuth | None:
    """The registry integration whose domain the reference names."""
    domain = images.domain_of(reference)
    return next((a for a in auths if images.canonical_host(a.domain) == domain), None)

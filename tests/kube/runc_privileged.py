"""runc for the tests' Docker engine's privileged containers (run as a program, standard library only).

A privileged container asks for every capability the engine knows. On a machine that is itself a container with a
smaller bounding set (this one lacks CAP_SYS_RESOURCE), runc then fails with "unable to apply caps: operation not
permitted", and the engine (20.10) ignores `CapDrop` on privileged containers. A real cluster's runtime (containerd's
CRI) gives a privileged container the capabilities its own process has, not every one there is; this wrapper does
the same: it cuts the container's capability sets to this process's bounding set, then runs runc as it was called.
The engine knows it as the runtime `outpost-privileged` (`tests.containers.Dockerd`); the fake kubelet uses it for
pods whose container asks for `securityContext.privileged`.
"""

from __future__ import annotations

import json
import os
import sys

# Linux capability numbers, from 0 (see capabilities(7)).
NAMES = (  # noqa: SIM905 (a list of 41 quoted names reads worse)
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE NET_BIND_SERVICE "
    "NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN "
    "SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
    "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE"
).split()
RUNC = "/usr/sbin/runc"


def bounding_set() -> set[str]:
    with open("/proc/self/status") as status:
        mask = int(next(line for line in status if line.startswith("CapBnd:")).split()[1], 16)
    return {f"CAP_{name}" for bit, name in enumerate(NAMES) if mask >> bit & 1}


def bundle_of(args: list[str]) -> str:
    for i, arg in enumerate(args):
        if arg in ("--bundle", "-b") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--bundle="):
            return arg.split("=", 1)[1]
    return os.getcwd()


def cut_capabilities(config_path: str, allowed: set[str]) -> None:
    with open(config_path) as f:
        config = json.load(f)
    sets = config.get("process", {}).get("capabilities") or {}
    for key in sets:
        sets[key] = [c for c in sets[key] if c in allowed]
    with open(config_path, "w") as f:
        json.dump(config, f)


def main() -> None:
    args = sys.argv[1:]
    if "create" in args or "run" in args:
        cut_capabilities(os.path.join(bundle_of(args), "config.json"), bounding_set())
    runc = os.environ.get("OUTPOST_TEST_RUNC") or RUNC
    os.execv(runc, [runc, *args])


if __name__ == "__main__":
    main()

"""Containers benchmark: what Outpost's Docker executor adds over the container tools themselves, side by side in
one run, on a Docker engine of its own (`dockerd` on a temporary data root, started as tests/containers.py starts
it) and buildah with storage of its own.

- step: one freestyle step `echo hello` in localhost/busybox:1 through `BuildEngine` + `DockerExecutor` (from
  `engine.run()` to its return: the build's network, the image check, the container, its log, the clean-up),
  against `docker run --rm --network host` and the Engine API by hand (create, start, wait, remove), once on the
  host network and once on a bridge network made and removed around it, as the executor does per build.
- build: a small context (COPY and RUN, no cache) through Outpost's `build` step on the engine's classic builder
  against `DOCKER_BUILDKIT=0 docker build`; and through Outpost's `Buildah` against the buildah CLI.

Tools alternate within each repetition, so that none always goes first.

    .venv/bin/python bench/containers.py --write docs/benchmarks.md
    .venv/bin/python bench/containers.py --runs 40 --build-runs 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

import machine
from mdsection import write_section
from outpost import __version__
from outpost.containers.buildah import Buildah
from outpost.containers.dockerapi import ContainerSpec, Docker
from outpost.engine import BuildContext, BuildEngine
from outpost.executors.docker import LABEL, DockerExecutor
from outpost.wire import BuildStarted, StepUpdate
from processes import Background, Processes, child_env, stop_on_signals
from samples import Summary, summarize

BUSYBOX = "localhost/busybox:1"
COMMAND_TIMEOUT = 120.0  # seconds any one measured command or build may take
DOCKERFILE = f"FROM {BUSYBOX}\nCOPY payload.txt /payload.txt\nRUN wc -c /payload.txt > /size.txt\n"
BUILDAH_DOCKERFILE = (
    "FROM scratch\n"
    "COPY busybox /bin/busybox\n"
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    "COPY payload.txt /payload.txt\n"
    "RUN wc -c /payload.txt > /size.txt\n"
)
STEP_YAML = f"version: '1.0'\nsteps:\n  hello:\n    image: {BUSYBOX}\n    commands:\n      - echo hello\n"
BUILD_YAML = """version: '1.0'
steps:
  build_it:
    type: build
    image_name: bench/outpost
    tag: latest
    working_directory: ./app
    no_cache: true
    disable_push: true
"""

Tool = Callable[[], Awaitable[float]]  # one repetition: its seconds


# --- the Docker engine ------------------------------------------------------------------------------------------


@dataclass
class Engine:
    """Our own dockerd: its folder and the environment for the docker CLI that talks to it."""

    folder: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.folder / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["docker", *args], env=env or self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout


def start_dockerd(processes: Processes, folder: Path) -> tuple[Engine, Background]:
    """dockerd as tests/containers.py runs it: its own socket, data and exec roots, no default bridge, no
    iptables (user-defined bridge networks still work)."""
    binary = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.access(binary, os.X_OK) or shutil.which("docker") is None:
        sys.exit("dockerd and the docker CLI are needed (apt-get install docker.io)")
    if os.geteuid() != 0:
        sys.exit("dockerd needs root")
    for sub in ("root", "exec", "cli-config"):
        (folder / sub).mkdir(parents=True)
    # The CLI reads no configuration of the machine's own (DOCKER_CONFIG: an empty folder).
    engine = Engine(folder)
    engine.env = child_env({"DOCKER_HOST": engine.host, "DOCKER_CONFIG": str(folder / "cli-config")})
    argv = [
        binary,
        "--data-root", str(folder / "root"),
        "--exec-root", str(folder / "exec"),
        "--pidfile", str(folder / "dockerd.pid"),
        "-H", engine.host,
        "--iptables=false", "--ip-masq=false", "--bridge=none",
        "--storage-driver=overlay2",
    ]  # fmt: skip
    process = processes.start("dockerd", argv)

    def ready() -> bool | None:
        if not engine.socket.exists():
            return None
        transport = httpx.HTTPTransport(uds=str(engine.socket))
        with httpx.Client(transport=transport, base_url="http://docker", timeout=5) as client:
            return True if client.get("/_ping").status_code == 200 else None

    process.wait_for(ready, "dockerd to answer /_ping", timeout=30)
    return engine, process


def unmount_under(folder: Path) -> None:
    """dockerd leaves mounts under its roots (the default netns, overlay layers): gone before the folder goes."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(folder))), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def busybox_context(folder: Path, dockerfile: str) -> Path:
    """A build context with Debian's static busybox (mode 0755), a 64 KiB payload and `dockerfile`."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.access(busybox, os.X_OK):
        sys.exit("busybox is needed (apt-get install busybox-static)")
    folder.mkdir(parents=True)
    shutil.copyfile(busybox, folder / "busybox")
    (folder / "busybox").chmod(0o755)
    (folder / "payload.txt").write_text("".join(f"line {i:05d} of the payload\n" for i in range(2_600))[:65_536])
    (folder / "Dockerfile").write_text(dockerfile)
    return folder


def make_busybox_image(engine: Engine, folder: Path) -> None:
    """localhost/busybox:1 as the tests make it: FROM scratch, busybox, its applets linked into /bin."""
    context = busybox_context(folder, "")
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "ENV PATH=/usr/local/bin:/usr/bin:/bin\n"
        'CMD ["/bin/sh"]\n'
    )
    engine.cli(
        "build", "-q", "--network", "host", "-t", BUSYBOX, str(context), env={**engine.env, "DOCKER_BUILDKIT": "0"}
    )


# --- Outpost's engine -------------------------------------------------------------------------------------------


@dataclass
class Collected:
    """A Reporter that keeps each stream's log and each step's last status: enough to check what a build did."""

    logs: dict[str, bytearray] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)

    async def started(self, message: BuildStarted) -> None:
        pass

    async def step(self, name: str, update: StepUpdate) -> None:
        self.statuses[name] = update.status

    async def log(self, stream: str, data: bytes) -> None:
        self.logs.setdefault(stream, bytearray()).extend(data)

    def text(self, stream: str) -> str:
        return bytes(self.logs.get(stream, b"")).decode(errors="replace")


async def outpost_build(engine: Engine, yaml: str, volume: Path, scratch: Path, step: str) -> tuple[float, str]:
    """One build through BuildEngine + DockerExecutor: seconds from `run()` to its return, and the step's log."""
    build_id = f"bench{uuid.uuid4().hex[:10]}"
    context = BuildContext(
        build_id=build_id, account="bench", pipeline="bench", yaml=yaml, volume=volume, scratch=scratch
    )
    options = {"docker_host": engine.host, "builder": "docker"}
    executor = DockerExecutor(volume, scratch, build_id=build_id, options=options)
    reporter = Collected()
    build = BuildEngine(context, executor, reporter)
    start = time.perf_counter()
    outcome = await asyncio.wait_for(build.run(), COMMAND_TIMEOUT)
    seconds = time.perf_counter() - start
    if outcome.status != "success" or reporter.statuses.get(step) != "success":
        raise RuntimeError(f"the Outpost build failed ({outcome.message}):\n{reporter.text(step)}")
    return seconds, reporter.text(step)


async def _discard(_chunk: bytes) -> None:
    pass


# --- the cases --------------------------------------------------------------------------------------------------


def timed_run(argv: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    """Seconds a command took (it must succeed), and its stdout."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def step_tools(engine: Engine, docker: Docker, folder: Path) -> dict[str, Tool]:
    serial = iter(range(1_000_000))

    async def outpost() -> float:
        run = folder / f"step-{next(serial)}"
        seconds, log = await outpost_build(engine, STEP_YAML, run / "volume", run / "scratch", "hello")
        if "hello\n" not in log:
            raise RuntimeError(f"the Outpost step did not say hello:\n{log}")
        return seconds

    async def cli() -> float:
        seconds, out = timed_run(["docker", "run", "--rm", "--network", "host", BUSYBOX, "echo", "hello"], engine.env)
        if out != "hello\n":
            raise RuntimeError(f"docker run said {out!r}")
        return seconds

    async def by_hand(network: str | None) -> float:
        start = time.perf_counter()
        if network:
            await docker.create_network(network)
        spec = ContainerSpec(image=BUSYBOX, cmd=["echo", "hello"], network=network or "host")
        container = await docker.create_container(spec)
        await docker.start(container)
        code = await docker.wait(container)
        await docker.remove(container)
        if network:
            await docker.remove_network(network)
        seconds = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"the container exited with {code}")
        return seconds

    async def api_host() -> float:
        return await by_hand(None)

    async def api_bridge() -> float:
        return await by_hand(f"bench-{uuid.uuid4().hex[:12]}")

    return {"outpost": outpost, "cli": cli, "api": api_host, "api-bridge": api_bridge}


def build_tools(engine: Engine, docker: Docker, folder: Path) -> dict[str, Tool]:
    serial = iter(range(1_000_000))
    volume = folder / "build-volume"
    docker_context = busybox_context(volume / "app", DOCKERFILE)
    buildah_context = busybox_context(folder / "buildah-context", BUILDAH_DOCKERFILE)
    outpost_buildah = Buildah(folder / "buildah-outpost")
    cli_root = folder / "buildah-cli"
    buildah_env = child_env({"HOME": str(cli_root / "home"), "TMPDIR": str(cli_root / "tmp")})
    for sub in ("home", "tmp"):
        (cli_root / sub).mkdir(parents=True)

    async def outpost_docker() -> float:
        seconds, log = await outpost_build(engine, BUILD_YAML, volume, folder / f"build-{next(serial)}", "build_it")
        if "Successfully built" not in log:
            raise RuntimeError(f"the Outpost build step did not build:\n{log}")
        return seconds

    async def api_docker(labels: dict[str, str]) -> float:
        start = time.perf_counter()
        await docker.build(docker_context, tags=["bench/api:latest"], no_cache=True, labels=labels)
        return time.perf_counter() - start

    async def api_docker_plain() -> float:
        return await api_docker({})

    async def api_docker_labelled() -> float:
        return await api_docker({LABEL: f"bench{next(serial)}"})

    async def cli_docker() -> float:
        argv = ["docker", "build", "--no-cache", "--network", "host", "-t", "bench/cli:latest", str(docker_context)]
        seconds, out = timed_run(argv, {**engine.env, "DOCKER_BUILDKIT": "0"})
        if "Successfully built" not in out:
            raise RuntimeError(f"docker build said:\n{out}")
        return seconds

    async def outpost_buildah_build() -> float:
        start = time.perf_counter()
        image = await asyncio.wait_for(
            outpost_buildah.build(
                buildah_context, tags=["localhost/bench/outpost:latest"], no_cache=True, output=_discard
            ),
            COMMAND_TIMEOUT,
        )
        seconds = time.perf_counter() - start
        if not image.startswith("sha256:"):
            raise RuntimeError(f"buildah built {image!r}")
        return seconds

    async def cli_buildah(*flags: str) -> float:
        argv = [
            "buildah", "--root", str(cli_root / "storage"), "--runroot", str(cli_root / "run"),
            "--storage-driver", "vfs", "bud", "--isolation", "chroot", "--network", "host", "--no-cache", *flags,
            "-t", "localhost/bench/cli:latest", str(buildah_context),
        ]  # fmt: skip
        seconds, _ = timed_run(argv, buildah_env)
        return seconds

    async def cli_buildah_plain() -> float:
        return await cli_buildah()

    async def cli_buildah_layers() -> float:
        return await cli_buildah("--layers", "--force-rm")

    return {
        "outpost-docker": outpost_docker,
        "api-docker": api_docker_plain,
        "api-docker-label": api_docker_labelled,
        "cli-docker": cli_docker,
        "outpost-buildah": outpost_buildah_build,
        "cli-buildah": cli_buildah_plain,
        "cli-buildah-layers": cli_buildah_layers,
    }


async def measure(tools: dict[str, Tool], runs: int, warmups: int) -> dict[str, list[float]]:
    """Seconds of each measured repetition, by tool; each repetition runs every tool once, in an order rotated by
    one each time, so that none always goes first."""
    times: dict[str, list[float]] = {name: [] for name in tools}
    names = list(tools)
    for rep in range(warmups + runs):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = await tools[name]()
            if rep >= warmups:
                times[name].append(seconds)
    return times


async def calls(engine: Engine, docker: Docker, runs: int) -> dict[str, list[float]]:
    """Seconds of the single engine calls the executor makes around a step's container (not timed inside Outpost:
    the same calls through the same client, one at a time, for where the time goes)."""
    times: dict[str, list[float]] = {name: [] for name in CALLS}
    for _ in range(runs):
        start = time.perf_counter()
        client = Docker(engine.host)  # the executor makes one per build
        times["client"].append(time.perf_counter() - start)
        await client.aclose()
        network = f"bench-{uuid.uuid4().hex[:12]}"
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("version", docker.version),
            ("network-create", partial(docker.create_network, network, {LABEL: network})),
            ("inspect", partial(docker.inspect_image, BUSYBOX)),
            ("list", partial(docker.containers, f"{LABEL}={network}")),
            ("network-remove", partial(docker.remove_network, network)),
        ]
        for name, call in steps:
            start = time.perf_counter()
            await call()
            times[name].append(time.perf_counter() - start)
    return times


# --- the report -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Versions:
    dockerd: str
    docker_cli: str
    buildah: str


def versions(engine: Engine) -> Versions:
    server = engine.cli("version", "--format", "{{.Server.Version}}").strip()
    client = engine.cli("version", "--format", "{{.Client.Version}}").strip()
    buildah = subprocess.run(["buildah", "--version"], capture_output=True, text=True, check=False).stdout.split()
    return Versions(server, client, buildah[2] if len(buildah) > 2 else "unknown")


ROWS = [
    ("step", "outpost", "Outpost: `BuildEngine` + `DockerExecutor`, a build of one freestyle step"),
    ("step", "cli", "`docker run --rm --network host` (CLI)"),
    ("step", "api", "Engine API by hand: create, start, wait, remove (host network)"),
    ("step", "api-bridge", "the same on a bridge network, made before and removed after"),
    ("build", "outpost-docker", "Outpost: a build of one `build` step, docker builder"),
    ("build", "api-docker", "Outpost's `Docker.build` alone"),
    ("build", "api-docker-label", "Outpost's `Docker.build` alone, with a label (the executor gave one until now)"),
    ("build", "cli-docker", "`DOCKER_BUILDKIT=0 docker build --no-cache --network host` (CLI)"),
    ("build", "outpost-buildah", "Outpost: `Buildah.build`, `no_cache` (so `--force-rm` without `--layers`)"),
    ("build", "cli-buildah", "`buildah --storage-driver vfs bud --isolation chroot --no-cache` (CLI)"),
    ("build", "cli-buildah-layers", "the same CLI with `--layers --force-rm`"),
]
CALLS = {
    "client": "`Docker(host)`: a new client (httpx transport; no request)",
    "version": "`GET /version`",
    "network-create": "`POST /networks/create` (bridge)",
    "inspect": "`GET /images/{name}/json` (the pull check)",
    "list": "`GET /containers/json` by label (the clean-up's search)",
    "network-remove": "`DELETE /networks/{name}`",
}


def render(
    command: str, args: argparse.Namespace, times: dict[str, list[float]], found: Versions, load: tuple[float, float]
) -> str:
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in machine.describe())
    s = {key: summary for key, values in times.items() if (summary := summarize([t * 1000 for t in values]))}
    rows = "\n".join(
        f"| {case} | {label} | {s[key].n} | {s[key].p50:.0f} | {s[key].p90:.0f} |" for case, key, label in ROWS
    )
    call_rows = "\n".join(
        f"| {label} | {s[key].n} | {s[key].p50:.1f} | {s[key].p90:.1f} |" for key, label in CALLS.items()
    )
    return f"""## Containers: a step and a build through the Docker executor vs the engine alone

- **Command**: `{command}`: its own `dockerd` {found.dockerd} (overlay2, `--bridge=none --iptables=false`, a
  temporary data root, as tests/containers.py starts it), docker CLI {found.docker_cli}, buildah {found.buildah};
  Outpost {__version__} in-process. This engine has no default bridge, hence `--network host` for the CLI and
  the bare API row (on an engine with one, `docker run` would join that bridge by default). Steps: {args.runs}
  measured repetitions after {args.warmups} warm-ups; builds: {args.build_runs} after {args.build_warmups}. Each
  repetition runs every tool of its case once, the order rotated.
- **Step**: `echo hello` in `{BUSYBOX}` (FROM scratch, Debian's static busybox). Outpost's time runs from
  `engine.run()` to its return, with a reporter that keeps the log in memory: a new engine client, the build's
  bridge network, the image check, the container on that network with the build volume and
  cf_export's folder mounted, its log followed to the end, the wait, its removal, the search for containers
  left behind and the network's removal. The by-hand rows use one client kept open and read no output.
- **Build**: a context of busybox and a 64 KiB file, built with no cache. Docker: `FROM {BUSYBOX}` + `COPY` +
  `RUN`; Outpost's row is a whole build of one `build` step (`no_cache`, `disable_push`). buildah has its own
  storage (vfs), so its Dockerfile starts `FROM scratch` + `COPY busybox` + `RUN busybox --install`, then the same
  `COPY` + `RUN`; Outpost's row is `outpost.containers.buildah.Buildah.build` alone (in a build, the executor then
  also copies the image into the engine: not measured here).

| Machine | |
|---|---|
{machine_rows}
| Load average (1 min) | {load[0]:.2f} before, {load[1]:.2f} after |

| Case | Tool | n | median (ms) | p90 (ms) |
|---|---|--:|--:|--:|
{rows}

The engine calls the executor makes around a step's container, one at a time through Outpost's client:

| Call | n | median (ms) | p90 (ms) |
|---|--:|--:|--:|
{call_rows}

{interpret(s)}
"""


def interpret(s: dict[str, Summary]) -> str:
    def p50(key: str) -> float:
        return s[key].p50

    network_calls = p50("network-create") + p50("network-remove")
    joining = p50("api-bridge") - p50("api") - network_calls
    other_calls = p50("client") + p50("inspect") + p50("list")
    rest = p50("outpost") - p50("api-bridge") - other_calls
    remaining = (
        f"and following the log, the mounts and the engine's own Python the remaining {rest:.0f} ms"
        if rest >= 5
        else "which leaves nothing measurable for following the log, the mounts and the engine's own Python"
    )
    label = p50("api-docker-label") - p50("api-docker")
    layers = p50("cli-buildah-layers") - p50("cli-buildah")
    return " ".join(
        [
            f"A one-step build costs Outpost {p50('outpost'):.0f} ms against {p50('cli'):.0f} ms for `docker run` "
            f"and {p50('api'):.0f} ms for the bare container through the API (medians), so the CLI itself adds "
            f"{p50('cli') - p50('api'):.0f} ms.",
            f"Most of Outpost's extra is the bridge network it makes for every build: creating and removing it takes "
            f"{network_calls:.0f} ms, and a container joining it rather than the host's network {joining:.0f} ms more "
            f"(the two by-hand rows); a new engine client ({p50('client'):.1f} ms: no TLS context for the unix "
            f"socket, which cost 55 ms a build before this benchmark found it), the image check and the clean-up "
            f"search add {other_calls:.0f} ms, {remaining}. (A build no longer asks the engine's version, "
            f"{p50('version'):.0f} ms: the runner checks the engine once when it starts.)",
            f"For image builds the builder dominates: Outpost's `Docker.build` alone takes {p50('api-docker'):.0f} ms "
            f"against {p50('cli-docker'):.0f} ms for `docker build`; a label (one more instruction, `LABEL`, which "
            f"the classic builder commits like the others) would add {label:.0f} ms, which is why the executor no "
            f"longer labels the images it builds; a whole build step (client, network) takes "
            f"{p50('outpost-docker'):.0f} ms.",
            f"Outpost's buildah build takes {p50('outpost-buildah'):.0f} ms against {p50('cli-buildah'):.0f} ms for "
            f"plain `buildah bud`; with `--layers --force-rm` the CLI takes {p50('cli-buildah-layers'):.0f} ms "
            f"({layers:+.0f} ms: an image committed after every instruction, which pays off only when a later build "
            "reuses the layers), so Outpost passes `--layers` only when the cache may be used.",
        ]
    )


# --- main -------------------------------------------------------------------------------------------------------


async def run_all(engine: Engine, folder: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    async with Docker(engine.host) as docker:
        times = await measure(step_tools(engine, docker, folder), args.runs, args.warmups)
        times |= await calls(engine, docker, args.runs)
        times |= await measure(build_tools(engine, docker, folder), args.build_runs, args.build_warmups)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="measured repetitions of the step case")
    parser.add_argument("--warmups", type=int, default=3)
    parser.add_argument("--build-runs", type=int, default=5, help="measured repetitions of the build case")
    parser.add_argument("--build-warmups", type=int, default=1)
    parser.add_argument("--write", type=Path, help="Put the results into this Markdown file.")
    args = parser.parse_args()
    if shutil.which("buildah") is None:
        sys.exit("buildah is needed (apt-get install buildah)")
    command = " ".join([".venv/bin/python", "bench/containers.py", *sys.argv[1:]])
    stop_on_signals()
    # Not a TemporaryDirectory: dockerd's mounts must be gone before anything removes the folder.
    root = Path(tempfile.mkdtemp(prefix="outpost-bench-containers-"))
    try:
        with Processes(root / "logs", grace=20.0) as processes:
            engine, _ = start_dockerd(processes, root / "dockerd")
            make_busybox_image(engine, root / "busybox")
            found = versions(engine)
            before = machine.load_average()
            times = asyncio.run(run_all(engine, root / "runs", args))
            load = (before, machine.load_average())
    finally:
        unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
    section = render(command, args, times, found, load)
    print(section)
    if args.write:
        write_section(args.write, section, "bench/containers.py")


if __name__ == "__main__":
    main()

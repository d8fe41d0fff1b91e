"""Clone benchmark: Outpost's git-clone step (`outpost.git.clone.clone`) and plain `git`, side by side,
on a generated repository with a few thousand files and some history, served by a real `git daemon` on loopback.

Two cases, each repeated a fixed number of times:
- cold: an empty volume; Outpost clones and checks out the revision, plain git does `git clone` + `checkout`.
- reused volume: the checkout of the previous build is there and upstream gained one commit; Outpost resets,
  cleans, fetches and checks out; plain git does the same four commands by hand.

    .venv/bin/python bench/clone.py --write docs/benchmarks.md
    .venv/bin/python bench/clone.py --files 3000 --commits 60 --repetitions 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import machine
from mdsection import write_section
from outpost import __version__
from outpost.git.clone import CloneRequest, clone

GIT_ENV = {
    "PATH": os.environ.get("PATH", os.defpath),
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "LC_ALL": "C",
}


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


def generate(root: Path, files: int, commits: int) -> tuple[Path, Path]:
    """A bare repository (served) and its working clone (pushes new commits): `files` files in nested folders,
    `commits` commits that each change a slice of them."""
    bare, work = root / "srv" / "bench" / "repo.git", root / "work"
    bare.parent.mkdir(parents=True)
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("init", "-q", "-b", "main", str(work))
    for i in range(files):
        path = work / f"src/pkg{i % 40:02d}/mod{i % 7}/file{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# file {i}\n" + "".join(f"VALUE_{j} = {i * j}\n" for j in range(30)))
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "initial", cwd=work)
    for c in range(1, commits):
        for i in range(c * 37 % files, files, max(files // 25, 1)):
            path = work / f"src/pkg{i % 40:02d}/mod{i % 7}/file{i:05d}.py"
            path.write_text(path.read_text() + f"CHANGE_{c} = {c}\n")
        git("commit", "-q", "-am", f"change {c}", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    return bare, work


def new_upstream_commit(work: Path, n: int) -> None:
    (work / f"NEWS-{n}.md").write_text(f"release {n}\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", f"release {n}", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)


class Daemon:
    """`git daemon` on a free loopback port, serving every repository under `root`."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={self.port}", f"--base-path={root}",
             "--export-all", str(root)],
            env=GIT_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("git daemon did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


async def _discard(_chunk: bytes) -> None:
    pass


def outpost_clone(url: str, target: Path, home: Path) -> None:
    request = CloneRequest(repo=url, target=target, revision="main", env={**GIT_ENV, "HOME": str(home)})
    result = asyncio.run(clone(request, _discard))
    if result.status != "success":
        raise RuntimeError(f"outpost clone failed: {result.message}")


def plain_cold(url: str, target: Path, _home: Path) -> None:
    git("clone", "-q", "--no-checkout", url, str(target))
    git("checkout", "-q", "--force", "-B", "main", "--track", "origin/main", cwd=target)


def plain_reused(url: str, target: Path, _home: Path) -> None:
    git("reset", "--hard", "--quiet", cwd=target)
    git("clean", "-df", "-q", cwd=target)
    git("fetch", "-q", "--prune", "--force", "--tags", "origin", cwd=target)
    git("checkout", "-q", "--force", "-B", "main", "--track", "origin/main", cwd=target)


Clone = Callable[[str, Path, Path], None]


def measure(url: str, work: Path, folder: Path, repetitions: int) -> dict[str, list[float]]:
    """Seconds of each repetition, by case and tool. Tools alternate so that neither always goes first."""
    tools: dict[str, tuple[Clone, Clone]] = {
        "outpost": (outpost_clone, outpost_clone),
        "git": (plain_cold, plain_reused),
    }
    times: dict[str, list[float]] = {f"{case}/{tool}": [] for case in ("cold", "reused") for tool in tools}
    home = folder / "home"
    home.mkdir()
    order = list(tools)
    for rep in range(repetitions):
        for name in order if rep % 2 == 0 else reversed(order):
            cold, _ = tools[name]
            target = folder / f"{name}-cold-{rep}" / "repo"
            start = time.perf_counter()
            cold(url, target, home)
            times[f"cold/{name}"].append(time.perf_counter() - start)
            shutil.rmtree(target.parent)
    volumes = {name: folder / f"{name}-volume" / "repo" for name in tools}
    for name, target in volumes.items():
        tools[name][0](url, target, home)  # the previous build's checkout
    for rep in range(repetitions):
        new_upstream_commit(work, rep)
        for name in order if rep % 2 == 0 else reversed(order):
            _, reused = tools[name]
            (volumes[name] / "build-output.o").write_text("left by the previous build\n")
            start = time.perf_counter()
            reused(url, volumes[name], home)
            times[f"reused/{name}"].append(time.perf_counter() - start)
    return times


def render(
    command: str, files: int, commits: int, pack_mib: float, times: dict[str, list[float]], load: tuple[float, float]
) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in machine.describe())

    def cells(key: str) -> str:
        ms = [t * 1000 for t in times[key]]
        return f"{statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f}"

    reps = len(next(iter(times.values())))

    def extra(case: str) -> float:
        return (statistics.median(times[f"{case}/outpost"]) - statistics.median(times[f"{case}/git"])) * 1000

    return f"""## Git clone: Outpost's git-clone step vs plain git

- **Command**: `{command}`: a generated repository of {files} files and {commits} commits ({pack_mib:.1f} MiB
  packed), served by `git daemon` on loopback; {reps} repetitions of each case, the two tools alternating.
- **Outpost** is `outpost.git.clone.clone` ({__version__}), as a `git-clone` step runs it (askpass
  environment, retries armed, revision checked out as a tracking branch, CF_* variables read).
- **cold**: empty volume (`git clone --no-checkout` + `checkout`). **reused**: the previous build's checkout is
  kept, has an untracked build output, and upstream gained one commit (`reset --hard`, `clean -df`, `fetch`,
  `checkout`).

| Machine | |
|---|---|
{rows}
| Load average (1 min) | {load[0]:.2f} before, {load[1]:.2f} after |

| Case | Tool | median (ms) | min (ms) | max (ms) |
|---|---|--:|--:|--:|
| cold | Outpost | {cells("cold/outpost")} |
| cold | plain git | {cells("cold/git")} |
| reused volume | Outpost | {cells("reused/outpost")} |
| reused volume | plain git | {cells("reused/git")} |

Outpost minus plain git, medians: cold {extra("cold"):+.0f} ms, reused volume {extra("reused"):+.0f} ms. What Outpost
adds are a few short git processes (is the kept folder a checkout of this repository, which kind of ref is the
revision, the commit's author and message for the CF_* variables) and a temporary askpass folder; the
transfer and the checkout are git's own. Cold clones are dominated by writing {files} files to disk, so
their spread on a shared machine is wide.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--commits", type=int, default=60)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--write", type=Path, help="Put the results into this Markdown file.")
    args = parser.parse_args()
    command = " ".join([".venv/bin/python", "bench/clone.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="outpost-bench-clone-") as tmp:
        root = Path(tmp)
        bare, work = generate(root, args.files, args.commits)
        git("gc", "-q", cwd=bare)
        pack_mib = sum(p.stat().st_size for p in (bare / "objects" / "pack").glob("*.pack")) / 1024 / 1024
        daemon = Daemon(root / "srv")
        try:
            runs = root / "runs"
            runs.mkdir()
            before = machine.load_average()
            times = measure(f"git://127.0.0.1:{daemon.port}/bench/repo.git", work, runs, args.repetitions)
            load = (before, machine.load_average())
        finally:
            daemon.stop()
    section = render(command, args.files, args.commits, pack_mib, times, load)
    print(section)
    if args.write:
        write_section(args.write, section, "bench/clone.py")


if __name__ == "__main__":
    main()

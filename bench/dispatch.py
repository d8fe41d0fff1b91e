"""Dispatch-latency benchmark: Outpost (in each layout) and its peers, side by side. Run by `make bench`.

Starts every system as real processes on loopback in a temporary folder, triggers trivial one-step
builds one at a time, and reports p50/p90/p99/max of: request → first command runs (dispatch),
request → first log bytes visible through the API, request → final status seen by the client.
Each system runs alone; a system that cannot be installed or started is reported as skipped.

    .venv/bin/python bench/dispatch.py --write docs/benchmarks.md
    .venv/bin/python bench/dispatch.py --builds 10 --warmup 2 --systems embedded,buildbot
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx

import machine
import report
from buildbot_peer import Buildbot
from outpost_layouts import LAYOUTS, STAGES, Outpost
from peers import Skipped
from prefect_peer import Prefect
from processes import Processes, stop_on_signals
from samples import Result, Timed, median
from waiting import BenchError

SYSTEMS = (*LAYOUTS, "buildbot", "prefect")


class System(Protocol):
    """Something that runs builds: `start()` brings it up inside the Processes it was given (which stop
    it), `timed_build()` triggers one build and waits for its end, `close()` frees client resources."""

    label: str
    version: str

    def start(self) -> None: ...

    def timed_build(self) -> Timed: ...

    def notes(self) -> list[str]: ...

    def close(self) -> None: ...


def make_system(key: str, procs: Processes, workdir: Path) -> System:
    if key in LAYOUTS:
        return Outpost(procs, workdir, key)
    if key == "buildbot":
        return Buildbot(procs, workdir)
    return Prefect(procs, workdir)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--builds", type=int, default=50, help="measured builds per system (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured builds first (default 5)")
    p.add_argument("--prefect-builds", type=int, default=20, help="measured Prefect flow runs (default 20: ~8 s each)")
    p.add_argument("--prefect-warmup", type=int, default=2)
    p.add_argument("--gap", type=float, default=0.2, help="seconds between builds (default 0.2)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {','.join(SYSTEMS)}")
    p.add_argument("--write", type=Path, help="replace the benchmark's section of this Markdown file")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temporary folder (logs, databases)")
    args = p.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    return args


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def repeat(system: System, result: Result, builds: int, warmup: int, gap: float) -> None:
    for i in range(warmup + builds):
        timed = system.timed_build()
        if i >= warmup:
            result.record(timed)
        time.sleep(gap)
    result.load = machine.load_average()
    s = result.summary("dispatch")
    if s:
        log(f"{result.label}: {s.n} builds, dispatch p50 {s.p50:.1f} ms, p90 {s.p90:.1f} ms")


def measure(key: str, workdir: Path, counts: tuple[int, int], gap: float) -> Result:
    folder = workdir / key
    folder.mkdir(parents=True)
    procs = Processes(folder / "logs")
    with procs:
        result = _measure_in(key, procs, folder, counts, gap)
        log(f"stopping {result.label}")
    result.notes += procs.remarks
    return result


def _measure_in(key: str, procs: Processes, folder: Path, counts: tuple[int, int], gap: float) -> Result:
    system = make_system(key, procs, folder)
    result = Result(key, system.label)
    try:
        log(f"starting {system.label}")
        system.start()
        log(f"{system.label} is up; {counts[1]} warm-up and {counts[0]} measured builds")
        repeat(system, result, counts[0], counts[1], gap)
    except (BenchError, Skipped, httpx.HTTPError, OSError) as exc:
        result = Result(key, system.label, skipped=_reason(exc))
        log(f"{system.label} skipped: {result.skipped}")
    finally:
        system.close()
    result.version, result.notes = system.version, system.notes()
    return result


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " / ")
    return text if isinstance(exc, BenchError | Skipped) else f"{type(exc).__name__}: {text}"


def spawn_floor(n: int = 50) -> float | None:
    """Median milliseconds from Python spawning `bash -c 'echo $EPOCHREALTIME'` to bash reading the clock."""
    samples = []
    for _ in range(n):
        before = time.time()
        out = subprocess.run(["bash", "-c", "echo $EPOCHREALTIME"], capture_output=True, text=True, timeout=10)
        samples.append((float(out.stdout) - before) * 1000.0)
    return median(samples)


def command_line(argv: list[str]) -> str:
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return " ".join(shlex.quote(a) for a in [str(python), "bench/dispatch.py", *argv])


def run(args: argparse.Namespace, workdir: Path) -> list[Result]:
    counts: Callable[[str], tuple[int, int]] = lambda key: (  # noqa: E731
        (args.prefect_builds, args.prefect_warmup) if key == "prefect" else (args.builds, args.warmup)
    )
    return [measure(key, workdir, counts(key), args.gap) for key in args.systems]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="outpost-bench-"))
    load_before = machine.load_average()
    try:
        results = run(args, workdir)
        floor = spawn_floor()
        load_after = machine.load_average()
    finally:
        if args.keep_workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    meta = report.Run(
        command=command_line(sys.argv[1:] if argv is None else argv),
        builds=args.builds,
        warmup=args.warmup,
        prefect_builds=args.prefect_builds if "prefect" in args.systems else 0,
        prefect_warmup=args.prefect_warmup,
        gap=args.gap,
        machine=machine.describe(),
        spawn_floor_ms=floor,
        load=(load_before, load_after),
        stages=STAGES,
    )
    section = report.render(meta, results)
    if args.write:
        report.write_section(args.write, section)
        log(f"wrote {args.write}")
    else:
        print(section)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: every process the benchmark started is stopped; nothing was written")
        sys.exit(130)

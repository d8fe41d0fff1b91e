"""The control plane's own dispatch path, in process: a build request → the build claimed by a waiting poll.

The real app over ASGI (tests/stack.py: no sockets, no HTTP parsing, no other process), SQLite in a temporary
folder, one registered runner per build. For each build one poll is held (`wait` 30 s) until it is idle, then
the build is requested; printed are the p50 of the request alone, of request → the poll's answer, the CPU of
the whole process (every thread: aiosqlite's too) over that span, and the SQL statements sent in it. What it
leaves out, against bench/idle_runners.py and bench/dispatch.py, is the network and uvicorn.

    .venv/bin/python bench/dispatch_in_process.py [--builds 100] [--root DIR]

`--root DIR` runs DIR/src and DIR/tests instead (an older revision: `git archive REV src tests`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"
WARMUP = 5


async def measure(builds: int) -> dict[str, Any]:
    from sqlalchemy import event
    from tests.server.test_dispatch import many_runners
    from tests.stack import running_stack, settings_for

    from outpost.wire import PREFIX, PollRequest

    request_ms: list[float] = []
    dispatch_ms: list[float] = []
    cpu_ms: list[float] = []
    statements: list[int] = []
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/outpost.db"
        settings = settings_for(url, Path(folder) / "data", poll_timeout=30.0, lease_ttl=300.0)
        async with running_stack(settings) as stack:
            await stack.pipeline("hello", HELLO)
            tokens = await many_runners(stack, builds + WARMUP)
            sent: list[str] = []
            event.listen(stack.services.engine.sync_engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
            body = PollRequest(wait=30.0).model_dump(exclude_none=True)
            async with stack.client() as api, stack.raw() as raw:
                for i, token in enumerate(tokens):
                    headers = {"Authorization": f"Bearer {token}"}
                    held = asyncio.create_task(raw.post(PREFIX + "/poll", json=body, headers=headers, timeout=60))
                    async with asyncio.timeout(30):
                        while stack.services.wakeups.idle_polls < 1:
                            await asyncio.sleep(0.002)
                    await asyncio.sleep(0.02)  # the presence flush and the like out of the way
                    sent.clear()
                    cpu, t0 = time.process_time(), time.perf_counter()
                    r = await api.post("/api/v1/pipelines/hello/builds", json={})
                    t1 = time.perf_counter()
                    answer = await held
                    t2, cpu2 = time.perf_counter(), time.process_time()
                    if r.status_code != 201 or answer.status_code != 200:
                        raise SystemExit(f"build request {r.status_code}, poll {answer.status_code}: {answer.text}")
                    if i >= WARMUP:
                        request_ms.append((t1 - t0) * 1000)
                        dispatch_ms.append((t2 - t0) * 1000)
                        cpu_ms.append((cpu2 - cpu) * 1000)
                        statements.append(len(sent))
    return {
        "builds": builds,
        "request_p50_ms": round(statistics.median(request_ms), 2),
        "dispatch_p50_ms": round(statistics.median(dispatch_ms), 2),
        "dispatch_p90_ms": round(statistics.quantiles(dispatch_ms, n=10)[-1], 2),
        "cpu_p50_ms": round(statistics.median(cpu_ms), 2),
        "statements": statistics.median(statements),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--builds", type=int, default=100)
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = p.parse_args()
    sys.path[:0] = [str(args.root / "src"), str(args.root)]
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    print(json.dumps({**asyncio.run(measure(args.builds)), "load": load}))


if __name__ == "__main__":
    main()

"""A what-if control plane for the benchmark: `outpost server`, but its listening socket says it is TCP.

`outpost server` binds `socket.socket(AF_INET, SOCK_STREAM)`, whose `proto` is 0; asyncio only sets
TCP_NODELAY on accepted sockets whose `proto` is IPPROTO_TCP, so every response (headers and body are
two writes) meets Nagle's algorithm and the client's delayed ACK. This launcher differs in that one
argument, so the benchmark can show what the fix is worth. Not a product: run by bench/dispatch.py only.

Usage: python bench/nodelay_server.py DATA_DIR PORT   (listens on 127.0.0.1:PORT, like `outpost server`)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from outpost.server.app import create_app
from outpost.server.bootstrap import bootstrap
from outpost.server.services import Services
from outpost.settings import ServerSettings, sqlite_url


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # our own handlers stop the server, as `outpost server` does


def _bind_tcp(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # the one difference
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def _serve(data_dir: Path, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sock = _bind_tcp(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = ServerSettings.from_env(data_dir=data_dir, database_url=sqlite_url(data_dir))
    app = create_app(settings, public_url=url)
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise SystemExit("the control plane did not start")
        await asyncio.sleep(0.01)
    services: Services = app.state.services
    installation = await bootstrap(services, data_dir, local_runtime=False)
    print(f"Outpost control plane on {url}; admin API token in {installation.token_file}", file=sys.stderr, flush=True)
    await stop.wait()
    server.should_exit = True
    await task


def main() -> None:
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        raise SystemExit(__doc__)
    data_dir = Path(sys.argv[1]).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(data_dir, int(sys.argv[2])))


if __name__ == "__main__":
    main()

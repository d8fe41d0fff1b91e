"""What-if control planes for the benchmark: `outpost server` with one or two faults taken out.

Nothing here is a product: bench/dispatch.py runs it to show what fixing each fault would be worth.

`--nodelay`: `outpost server` binds `socket.socket(AF_INET, SOCK_STREAM)`, whose `proto` is 0; asyncio
only sets TCP_NODELAY on accepted sockets whose `proto` is IPPROTO_TCP, so every response (headers
and body are two writes) meets Nagle's algorithm and the client's delayed ACK. Here the listening
socket is created with IPPROTO_TCP, the only difference.

`--drop-orphan-polls`: when a runner drops a poll (it does so whenever a build ends and a slot frees),
the poll's handler keeps waiting until its deadline, waking up and running a transaction on every
new build of the runtime and every 2 s. Here a middleware cancels a poll's handler as soon as its
client hangs up, which is what the handler would do if it watched for the disconnect itself.

Usage: python bench/whatif_server.py DATA_DIR PORT [--nodelay] [--drop-orphan-polls]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outpost.server.app import create_app
from outpost.server.bootstrap import bootstrap
from outpost.server.services import Services
from outpost.settings import ServerSettings, sqlite_url


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # our own handlers stop the server, as `outpost server` does


class DropOrphanPolls:
    """Cancels a runner poll's handler when its client hangs up (other requests pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/poll"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        hung_up = asyncio.Event()
        answered = False

        async def replay() -> Message:
            if body:
                return body.pop(0)
            await hung_up.wait()
            return {"type": "http.disconnect"}

        async def tracked(message: Message) -> None:
            nonlocal answered
            await send(message)
            answered = answered or (message["type"] == "http.response.body" and not message.get("more_body"))

        handler: asyncio.Future[object] = asyncio.ensure_future(self.app(scope, replay, tracked))
        watcher: asyncio.Future[object] = asyncio.ensure_future(receive())  # http.disconnect when the client leaves
        await asyncio.wait([handler, watcher], return_when=asyncio.FIRST_COMPLETED)
        if not handler.done() and not answered:
            hung_up.set()
            handler.cancel()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handler


async def _read_body(receive: Receive) -> list[Message] | None:
    messages = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        messages.append(message)
        if not message.get("more_body"):
            return messages


def _bind(port: int, *, tcp: bool) -> socket.socket:
    proto = socket.IPPROTO_TCP if tcp else 0  # 0 is what `outpost server` passes (implicitly)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = _bind(args.port, tcp=args.nodelay)
    url = f"http://127.0.0.1:{args.port}"
    app = create_app(ServerSettings.from_env(data_dir=data_dir, database_url=sqlite_url(data_dir)), public_url=url)
    if args.drop_orphan_polls:
        app.add_middleware(DropOrphanPolls)
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise SystemExit("the control plane did not start")
        await asyncio.sleep(0.01)
    services: Services = app.state.services
    installation = await bootstrap(services, data_dir, local_runtime=False)
    print(f"what-if control plane on {url}; admin API token in {installation.token_file}", file=sys.stderr, flush=True)
    await stop.wait()
    server.should_exit = True
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--nodelay", action="store_true", help="create the listening socket with IPPROTO_TCP")
    parser.add_argument("--drop-orphan-polls", action="store_true", help="end polls whose runner hung up")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()

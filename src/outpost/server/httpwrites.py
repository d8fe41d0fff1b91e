"""One send per response: uvicorn writes a response's head (status line and headers) and its body in two calls to the
transport, so every answer of the control plane cost two `send` system calls here and, on loopback with TCP_NODELAY,
two segments for the client to read and wake up for. Most answers (a poll's task, a report's acknowledgement, a
build's 201) are one small body right behind the head: `OneWriteProtocol` holds the head back until the body's first
write and sends the two together.

A held head never waits for more than the rest of the current turn of the event loop: a streamed response whose
body comes later (a log follow, server-sent events) gets its head at the end of the turn, as it would have a moment
before. Closing, a write of EOF and the write buffer's size all see the held bytes first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_START = b"HTTP/1.1 "
HEAD_END = b"\r\n\r\n"


class _HeadWithBody:
    """A connection's transport, as uvicorn's protocol and its request cycles use it (anything not written here is
    the transport's own)."""

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            data, self._held = self._held + bytes(data), None
        elif isinstance(data, bytes) and data.startswith(HEAD_START) and data.endswith(HEAD_END):
            self._held = data  # a response's head: its body's first write comes in this turn, or the head goes alone
            self._loop.call_soon(self.flush)
            return
        self._inner.write(data)

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if not self._inner.is_closing():
                self._inner.write(held)

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def write_eof(self) -> None:
        self.flush()
        self._inner.write_eof()

    def close(self) -> None:
        self.flush()
        self._inner.close()

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing a response's head and body in one call (module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport, self.loop))  # type: ignore[arg-type]

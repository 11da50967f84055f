"""The service's listening socket makes every accepted connection TCP_NODELAY, as asyncio does for
sockets that say they are TCP. Before, `_bind` made it with proto 0: asyncio left Nagle on, a
response's body waited for the client's ACK of its headers, and every request on a keep-alive
connection took ~40 ms (the client's delayed ACK) instead of 1-4 ms."""

from __future__ import annotations

import asyncio
import socket

from app.serve import _bind


def test_accepted_connections_have_nodelay():
    sock = _bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        accepted = asyncio.Event()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            accepted.set()

        server = await asyncio.start_server(on_connect, sock=sock)  # as uvicorn serves `sockets=[sock]`
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(accepted.wait(), 10)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0

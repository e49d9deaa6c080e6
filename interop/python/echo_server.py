"""Echo server on Python `websockets`, a peer of sockeye's interop tests.

    python echo_server.py [--compress]

Binds 127.0.0.1:0 and prints "listening on PORT". Echoes text as text and
binary as binary (messages up to 32 MiB); the text "close:CODE:REASON" makes it
close with that code and reason. permessage-deflate only with --compress.
"""

import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

MAX_SIZE = 32 * 1024 * 1024


async def echo(ws):
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("close:"):
                _, code, reason = message.split(":", 2)
                await ws.close(int(code), reason)
                return
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main():
    compress = "--compress" in sys.argv[1:]
    async with serve(
        echo,
        "127.0.0.1",
        0,
        compression="deflate" if compress else None,
        max_size=MAX_SIZE,
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

"""Client on Python `websockets`, a peer of sockeye's interop tests.

    python client.py ws://HOST:PORT/

Against an echo server (interop/*/echo_server*): sends a text and a binary
message and checks their echoes, then sends "close:4001:bye" and checks that
the server closes with 4001 "bye". Exits 0 on success; otherwise prints what
failed and exits 1.
"""

import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

TEXT = "hello from python websockets \u00e9\u2603"
BINARY = bytes(range(256)) * 1024  # 256 KiB


async def run(url):
    async with connect(url, proxy=None, max_size=32 * 1024 * 1024, ping_interval=None) as ws:
        await ws.send(TEXT)
        reply = await ws.recv()
        if reply != TEXT:
            return f"text echo: expected {TEXT!r}, got {reply!r:.80}"
        await ws.send(BINARY)
        reply = await ws.recv()
        if not isinstance(reply, bytes):
            return f"binary echo: expected bytes, got {type(reply).__name__}"
        if reply != BINARY:
            return f"binary echo: {len(reply)} bytes differ from the {len(BINARY)} sent"
        await ws.send("close:4001:bye")
        try:
            extra = await ws.recv()
            return f"close: expected the server to close, got a message {extra!r:.80}"
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
        if rcvd is None:
            return "close: no close frame received"
        if (rcvd.code, rcvd.reason) != (4001, "bye"):
            return f"close: expected 4001 'bye', got {rcvd.code} {rcvd.reason!r}"
    return None


def main():
    if len(sys.argv) != 2:
        print("usage: client.py URL", file=sys.stderr)
        sys.exit(2)
    try:
        error = asyncio.run(asyncio.wait_for(run(sys.argv[1]), 30))
    except Exception as e:  # noqa: BLE001 - report whatever failed
        error = f"{type(e).__name__}: {e}"
    if error:
        print(f"FAIL: {error}")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()

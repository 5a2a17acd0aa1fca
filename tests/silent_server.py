"""A server that accepts connections and never says anything, run as its own process:
``python -m tests.silent_server PORT``. It stands for an object store that hangs: connecting succeeds, and a
request waits for an answer that never comes. It reads what it is sent (so a sender never blocks on a full
buffer) and keeps every connection open until the client gives up."""

from __future__ import annotations

import asyncio
import sys


async def main(port: int) -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(1 << 16):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", port, reuse_address=True)
    print(f"silent on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

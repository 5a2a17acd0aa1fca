"""Callback receivers that misbehave, each a process of its own on loopback.

    python -m tests.hostile_receiver MODE PORT

``endless``: 200, then a chunked body that never ends, as fast as the peer reads it. It stops after
``CAP`` bytes a connection, so that a client reading it all fails its test instead of filling the
machine. ``endless-headers``: a status line, then header lines without end (up to ``CAP`` too).
``drip``: the whole answer (status line first) one byte a second. ``drip-body``: status and
headers at once, then the body one byte a second.

It prints ``listening`` once it accepts connections, ``request <webhook-id> open=<n>`` as each
request has been read (n: requests being answered at that moment, this one included) and
``closed <webhook-id> sent=<bytes>`` when the answer ends or the peer hangs up.
"""

from __future__ import annotations

import asyncio
import sys

CAP = 64 << 20
CHUNK = 64 << 10
DRIP_SECONDS = 1.0


class Receiver:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(line.split(":", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ":" in line)
            headers = {name.strip().lower(): value.strip() for name, value in headers.items()}
            await reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            writer.close()
            return
        webhook_id = headers.get("webhook-id", "-")
        self.open += 1
        print(f"request {webhook_id} open={self.open}", flush=True)
        # Completes when the peer hangs up: the request has been read, nothing more is expected from it.
        hung_up = asyncio.ensure_future(reader.read(1))
        sent = 0
        try:
            sent = await getattr(self, self.mode.replace("-", "_"))(writer, hung_up)
        finally:
            self.open -= 1
            hung_up.cancel()
            print(f"closed {webhook_id} sent={sent}", flush=True)
            writer.close()

    async def endless(self, writer: asyncio.StreamWriter, hung_up: asyncio.Future) -> int:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
        sent = 0
        try:
            while sent < CAP and not hung_up.done():
                writer.write(chunk)
                await writer.drain()
                sent += CHUNK
        except ConnectionError:
            pass  # the peer hung up
        return sent

    async def endless_headers(self, writer: asyncio.StreamWriter, hung_up: asyncio.Future) -> int:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        line = b"x-filler: " + b"x" * 1000 + b"\r\n"
        sent = 0
        try:
            while sent < CAP and not hung_up.done():
                writer.write(line * 64)
                await writer.drain()
                sent += len(line) * 64
        except ConnectionError:
            pass  # the peer hung up
        return sent

    async def drip(self, writer: asyncio.StreamWriter, hung_up: asyncio.Future) -> int:
        return await self._drip(writer, hung_up, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async def drip_body(self, writer: asyncio.StreamWriter, hung_up: asyncio.Future) -> int:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 64\r\n\r\n")
        return await self._drip(writer, hung_up, b"x" * 64)

    async def _drip(self, writer: asyncio.StreamWriter, hung_up: asyncio.Future, data: bytes) -> int:
        for sent in range(len(data)):
            try:
                writer.write(data[sent : sent + 1])
                await writer.drain()
            except ConnectionError:
                return sent
            await asyncio.wait({hung_up}, timeout=DRIP_SECONDS)
            if hung_up.done():
                return sent + 1
        return len(data)


async def main(mode: str, port: int) -> None:
    receiver = Receiver(mode)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("endless", "endless-headers", "drip", "drip-body"):
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))

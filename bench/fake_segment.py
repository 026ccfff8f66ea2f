"""A fast loopback fake of Segment's ``POST /v1/batch`` for the benchmark.

tests/fakes.py's FakeSegment parses and keeps every batch, which is right for tests and too
slow to stay out of the way of a delivery benchmark. This one answers 200 at once, pulls the
messageIds out of the body with a regular expression (Segment's library writes them with
``json.dumps``), appends them to a file and keeps only counters, so a 1,000,000-message
drain costs it little CPU and memory.

``GET /stats`` answers the counters as JSON (messages, batches, first/last batch times,
batch sizes). Run: ``python fake_segment.py PORT_FILE IDS_FILE``; it binds 127.0.0.1 on a
free port, writes the port to PORT_FILE, and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time

MESSAGE_ID = re.compile(rb'"messageId":\s*"([^"]+)"')
OK = b'{"success": true}'


class Counters:
    def __init__(self, ids_file: str) -> None:
        self.messages = 0
        self.batches = 0
        self.batch_messages: list[int] = []
        self.batch_bytes: list[int] = []
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.ids = open(ids_file, "wb", buffering=1 << 20)  # noqa: SIM115 (lives with the server)

    def record(self, body: bytes) -> None:
        ids = MESSAGE_ID.findall(body)
        now = time.time()
        self.first_at = self.first_at or now
        self.last_at = now
        self.messages += len(ids)
        self.batches += 1
        self.batch_messages.append(len(ids))
        self.batch_bytes.append(len(body))
        self.ids.write(b"\n".join(ids) + b"\n")

    def stats(self) -> bytes:
        self.ids.flush()
        return json.dumps({
            "messages": self.messages, "batches": self.batches, "first_at": self.first_at,
            "last_at": self.last_at, "batch_messages": self.batch_messages,
            "batch_bytes": self.batch_bytes,
        }).encode()


async def serve(port_file: str, ids_file: str) -> None:
    counters = Counters(ids_file)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, header_block = head.partition(b"\r\n")
                length = 0
                for line in header_block.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                method, path = request_line.split(b" ")[:2]
                if method == b"POST" and path == b"/v1/batch":
                    counters.record(body)
                    answer, status = OK, b"200 OK"
                elif method == b"GET" and path == b"/stats":
                    answer, status = counters.stats(), b"200 OK"
                else:
                    answer, status = b'{"code": "not_found"}', b"404 Not Found"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n"
                             + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 24)
    port = server.sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w") as out:
        out.write(str(port))
    os.replace(port_file + ".tmp", port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()
    counters.ids.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
